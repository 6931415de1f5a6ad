"""Tensor encodings of the `.dcz` format, one module each, listed in one registry.

The container (`alexcompress.container`) frames the file and asks the encoding named in each tensor-table
row to check its fields, decode it, and summarise its size. To add a coder: write a module with a class
implementing `base.TensorEncoding` and add one line to `ENCODINGS` below.
"""

from __future__ import annotations

from ..errors import DczError
from . import raw, sparse_huffman
from .base import DTYPES, EncodedTensor, LayerSummary, Section, SectionReader, TensorEncoding, TensorEntry

ENCODINGS: dict[str, TensorEncoding] = {
    raw.ENCODING.name: raw.ENCODING,
    sparse_huffman.ENCODING.name: sparse_huffman.ENCODING,
}

#: how tensors that are not coded are stored, and how coded ones (conv and linear weights) are
STORED, CODED = raw.ENCODING.name, sparse_huffman.ENCODING.name


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
    "get_encoding",
]
