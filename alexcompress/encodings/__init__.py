"""Tensor encodings of the `.dcz` format, one module each, listed in one registry.

The container (`alexcompress.container`) frames the file and asks the encoding named in each tensor-table
row to check its fields, decode it, and summarise its size. To add a coder: write a module with a class
implementing `base.TensorEncoding` and add one line to `ENCODINGS` below (and, for a way of coding quantized
weights, to `CODED`, and to the choice in `encode_coded`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import DczError
from . import dense_huffman, raw, sparse_huffman
from .base import DTYPES, EncodedTensor, LayerSummary, Section, SectionReader, TensorEncoding, TensorEntry

ENCODINGS: dict[str, TensorEncoding] = {
    raw.ENCODING.name: raw.ENCODING,
    sparse_huffman.ENCODING.name: sparse_huffman.ENCODING,
    dense_huffman.ENCODING.name: dense_huffman.ENCODING,
}

#: how tensors that are not coded are stored
STORED = raw.ENCODING.name
#: the encodings a coded tensor (conv and linear weights) may take; the first is the default, and every one
#: yields `nonzeros()` (positions, codebook indices, codebook), which the sparse runtime builds from
CODED = (sparse_huffman.ENCODING.name, dense_huffman.ENCODING.name)
#: below this share of nonzeros a large tensor is not tried as `dense_huffman`: the two streams carry the
#: same information, but Huffman codes the frequent zero symbol in no less than one bit, so dense loses well
#: before this; small tensors (where the tables matter) are always tried
DENSE_FROM, SMALL = 0.25, 4096


def encode_coded(name: str, array: np.ndarray, index_bits: int | None = None, **options: Any) -> EncodedTensor:
    """A quantized weight in whichever coded encoding has the fewer section bytes. A forced `index_bits` forces
    `sparse_huffman`; ties go to it too.

    >>> whole = np.tile(np.float32([-1, 1, 2, 3]), 64)
    >>> encode_coded("w", whole).entry.encoding, encode_coded("w", whole, index_bits=4).entry.encoding
    ('dense_huffman', 'sparse_huffman')
    """
    best = sparse_huffman.ENCODING.encode(name, array, index_bits=index_bits, **options)
    nnz = best.entry.params["nnz"]
    if index_bits is None and array.size and (nnz >= DENSE_FROM * array.size or array.size <= SMALL):
        dense = dense_huffman.ENCODING.encode(name, array, **options)
        if sum(map(len, dense.payloads)) < sum(map(len, best.payloads)):
            best = dense
    return best


def get_encoding(name: str) -> TensorEncoding:
    try:
        return ENCODINGS[name]
    except (KeyError, TypeError):
        raise DczError(f"unknown encoding {name!r}; this reader knows {', '.join(ENCODINGS)}") from None


__all__ = [
    "CODED",
    "DTYPES",
    "ENCODINGS",
    "STORED",
    "EncodedTensor",
    "LayerSummary",
    "Section",
    "SectionReader",
    "TensorEncoding",
    "TensorEntry",
    "encode_coded",
    "get_encoding",
]
