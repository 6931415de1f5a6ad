"""Tensor encodings of the `.dcz` format, one module each, listed in one registry.

The container (`alexcompress.codec.container`) frames the file and asks the encoding named in each tensor-table
row to check its fields, decode it, and summarise its size. To add a coder: write a module with a class
implementing `base.TensorEncoding` (`base.CodedEncoding` for a way of coding quantized weights) and add one
line to `ENCODINGS` below (and, for a coded one, its name to `CODERS`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from alexcompress.codec.encodings import dense_ctx, dense_huffman, float_huffman, raw, sparse_ctx, sparse_huffman
from alexcompress.codec.encodings.base import (
    CODED_DTYPES,
    DTYPES,
    CodedEncoding,
    Deferred,
    EncodedTensor,
    LayerSummary,
    Section,
    SectionReader,
    TensorEncoding,
    TensorEntry,
    dtype_name,
)
from alexcompress.errors import DczError

ENCODINGS: dict[str, TensorEncoding] = {
    raw.ENCODING.name: raw.ENCODING,
    sparse_huffman.ENCODING.name: sparse_huffman.ENCODING,
    dense_huffman.ENCODING.name: dense_huffman.ENCODING,
    sparse_ctx.ENCODING.name: sparse_ctx.ENCODING,
    dense_ctx.ENCODING.name: dense_ctx.ENCODING,
    float_huffman.ENCODING.name: float_huffman.ENCODING,
}

#: how tensors that are not coded are stored
STORED = raw.ENCODING.name


def encode_stored(name: str, array: np.ndarray, lossless: bool = False) -> EncodedTensor:
    """A tensor that is not coded: raw, or with `lossless` a bfloat16/float32 one with its exponents
    Huffman-coded where that is smaller (`float_huffman`)."""
    if lossless and array.size >= 64 and dtype_name(array.dtype) in float_huffman.LAYOUTS:
        if float_huffman.ENCODING.size(array) < array.nbytes:
            return float_huffman.ENCODING.encode(name, array)
    return raw.ENCODING.encode(name, array)


#: the coders a user may choose (`--coder`), each the coded encodings the writer may pick from, smallest
#: wins per tensor: `huffman` is the paper's (static Huffman codes), `context` the context-modelled rANS
#: coder, `auto` every one
CODERS: dict[str, tuple[str, ...]] = {
    "auto": (sparse_huffman.ENCODING.name, dense_huffman.ENCODING.name, sparse_ctx.ENCODING.name, dense_ctx.ENCODING.name),
    "huffman": (sparse_huffman.ENCODING.name, dense_huffman.ENCODING.name),
    "context": (sparse_ctx.ENCODING.name, dense_ctx.ENCODING.name),
}
#: the encodings a coded tensor (conv and linear weights) may take; every one yields `nonzeros()`
#: (positions, codebook indices, codebook), which the sparse runtime builds from
CODED = CODERS["auto"]
#: below this share of nonzeros a large tensor is not tried in a dense layout: the sparse one carries the
#: same information, and a dense stream codes every zero; small tensors (where the tables matter) are
#: always tried
DENSE_FROM, SMALL = 0.25, 4096


def encode_coded(name: str, array: np.ndarray, index_bits: int | None = None, coder: str = "auto", **options: Any) -> EncodedTensor:
    """A quantized weight in whichever of `coder`'s encodings has the fewest section bytes. Each encoding
    first plans (Huffman sizes are exact, rANS sizes estimated); they are written in order of size until the
    next cannot beat the smallest written, so no file is larger than the Huffman encodings alone make it. A
    forced `index_bits` leaves the sparse layouts only.

    A repeating pattern is nearly free to a context model (each value predicts the next):

    >>> whole = np.tile(np.float32([-1, 1, 2, 3]), 64)
    >>> [(e.entry.encoding, sum(map(len, e.payloads))) for e in (encode_coded("w", whole), encode_coded("w", whole, coder="huffman"))]
    [('dense_ctx', 56), ('dense_huffman', 85)]
    >>> encode_coded("w", whole, index_bits=4, coder="huffman").entry.encoding
    'sparse_huffman'
    """
    if coder not in CODERS:
        raise DczError(f"unknown coder {coder!r}; choose one of {', '.join(CODERS)}")
    dtype = dtype_name(array.dtype)
    if dtype not in CODED_DTYPES:
        raise DczError(f"{name} is {array.dtype}; a coded weight is float32, float16 or bfloat16")
    prepared = sparse_huffman.prepare(name, array)  # in float32, which holds every half-precision value
    nnz = prepared.positions.size
    dense_too = index_bits is None and array.size and (nnz >= DENSE_FROM * array.size or array.size <= SMALL)
    plans = []
    for encoding_name in CODERS[coder]:
        encoding = CODED_ENCODINGS[encoding_name]
        if encoding.dense and not dense_too:
            continue
        plans.append(encoding.plan(name, array.shape, prepared, None if encoding.dense else index_bits))
    best: EncodedTensor | None = None
    best_size = 0
    for plan in sorted(plans, key=lambda p: p.size):  # stable: ties keep CODERS' order
        if best is not None and plan.size >= best_size:
            break
        candidate = plan.write()
        size = sum(map(len, candidate.payloads))
        if best is None or size < best_size:
            best, best_size = candidate, size
    assert best is not None
    if dtype != best.entry.dtype:  # the codebook is the tensor's own values: the file decodes to its dtype
        best = EncodedTensor(dataclasses.replace(best.entry, dtype=dtype), best.payloads)
    return best


CODED_ENCODINGS: dict[str, CodedEncoding] = {name: ENCODINGS[name] for name in CODED}  # type: ignore[misc]


def get_encoding(name: str) -> TensorEncoding:
    try:
        return ENCODINGS[name]
    except (KeyError, TypeError):
        raise DczError(f"unknown encoding {name!r}; this reader knows {', '.join(ENCODINGS)}") from None


__all__ = [
    "CODED",
    "CODED_DTYPES",
    "CODERS",
    "CodedEncoding",
    "Deferred",
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
    "encode_stored",
    "dtype_name",
    "get_encoding",
]
