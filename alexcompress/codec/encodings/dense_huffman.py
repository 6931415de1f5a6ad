"""The `dense_huffman` encoding: a quantized tensor as its codebook and one Huffman code word per element,
the zeros included as a symbol of their own; no index stream.

Where most weights are kept this is smaller than `sparse_huffman`: a layer kept whole needs no positions at
all (the relative index would spend at least one bit per weight on a gap that is always 1), and at high
density Huffman codes "zero" better as a symbol than as gaps whose lengths cannot go below one bit. The
writer (`encodings.encode_coded`) keeps whichever of the two is smaller per tensor.

Sections, in order: codebook (k float32, strictly increasing, nonzero), code_lengths (k + 1 bytes, the last
for the zero symbol), codes. Fields: nnz, codebook_size, code_bits. Lossless like `sparse_huffman`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from alexcompress.codec import huffman
from alexcompress.codec.encodings.base import (
    CODED_DTYPES,
    EncodedTensor,
    LayerSummary,
    Plan,
    SectionReader,
    TensorEntry,
    field_int,
    numel_of,
)
from alexcompress.codec.encodings.sparse_huffman import (
    MAX_CODEBOOK,
    Coded,
    Quantized,
    Streams,
    codebook_and_lengths,
    fixed_code_bits,
    symbol_dtype,
)
from alexcompress.errors import DczError


class DenseHuffman(Coded):
    name = "dense_huffman"
    dense = True
    section_kinds = ("codebook", "code_lengths", "codes")
    section_roles = {"codebook": "codebook", "code_lengths": "tables", "codes": "codes"}
    fields = ("nnz", "codebook_size", "code_bits")

    def check(self, row: Mapping[str, Any], dtype: str, shape: tuple[int, ...], where: str) -> tuple[dict[str, int], dict[str, int]]:
        if dtype not in CODED_DTYPES or not shape:
            raise DczError(f"{where}: dense_huffman tensors must be float32, float16 or bfloat16 with at least one dimension")
        numel = numel_of(shape)
        nnz = field_int(row, "nnz", 0, numel, where)
        k = field_int(row, "codebook_size", 1 if nnz else 0, min(MAX_CODEBOOK, nnz), where)
        code_bits = field_int(row, "code_bits", numel, numel * huffman.MAX_CODE_LENGTH, where)
        fields = dict(nnz=nnz, codebook_size=k, code_bits=code_bits)
        return fields, {"codebook": 4 * k, "code_lengths": k + 1, "codes": (code_bits + 7) // 8}

    def plan(self, name: str, shape: tuple[int, ...], prepared: Quantized, index_bits: int | None = None) -> Plan:
        """The exact size from the symbol histogram."""
        positions, codebook, codes = prepared.positions, prepared.codebook, prepared.codes
        k = codebook.size
        counts = np.append(np.bincount(codes, minlength=k), prepared.size - positions.size)
        code_lengths = huffman.code_lengths(counts)
        size = 4 * k + (k + 1) + (int((counts * code_lengths.astype(np.int64)).sum()) + 7) // 8

        def write() -> EncodedTensor:
            symbols = np.full(prepared.size, k, dtype=symbol_dtype(k))
            symbols[positions] = codes
            code_bytes, code_bits = huffman.encode(symbols, code_lengths)
            params = dict(nnz=int(positions.size), codebook_size=int(k), code_bits=code_bits)
            entry = TensorEntry(name, "float32", tuple(int(d) for d in shape), self.name, (), params)
            return EncodedTensor(entry, [codebook.astype("<f4").tobytes(), code_lengths.tobytes(), code_bytes])

        return Plan(size, write)

    def streams(self, entry: TensorEntry, section: SectionReader) -> Streams:
        """The code stream decoded (every element's symbol; k is zero); no gap stream."""
        where = f"tensor {entry.name}"
        codebook, code_lengths = codebook_and_lengths(section, where)
        codes = huffman.decode(bytes(section("codes")), entry.code_bits, code_lengths, entry.numel, f"{where} section codes")
        empty = np.zeros(0, dtype=np.uint8)
        return Streams(codebook, code_lengths, empty, codes, empty.astype(codes.dtype), extra_symbol="zero")

    def nonzeros(self, entry: TensorEntry, section: SectionReader) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(flattened positions as int32, codebook index of each, codebook), validated."""
        return symbols_to_nonzeros(entry, self.streams(entry, section))

    def summary(self, entry: TensorEntry) -> LayerSummary:
        return dense_summary(entry, entry.code_bits)


def symbols_to_nonzeros(entry: TensorEntry, streams: Streams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A dense layout's decoded symbols (one per element, k for zero) as (positions, codebook index of each,
    codebook), the count of nonzeros checked."""
    kept = streams.codes != entry.codebook_size
    positions = np.flatnonzero(kept).astype(np.int32 if entry.numel < 1 << 31 else np.int64)
    if positions.size != entry.nnz:
        raise DczError(f"tensor {entry.name}: decoded {positions.size} nonzeros, header declares {entry.nnz}")
    return positions, streams.codes[kept], streams.codebook


def dense_summary(entry: TensorEntry, code_bits: float) -> LayerSummary:
    """Table 4's figures of a dense layout whose stream takes `code_bits` bits."""
    wbits = fixed_code_bits(entry.codebook_size)  # the quantizer's width; at fixed width a zero symbol adds one
    fixed = fixed_code_bits(entry.codebook_size + (entry.nnz < entry.numel))
    return LayerSummary(
        weights=entry.numel,
        nnz=entry.nnz,
        entries=entry.numel,
        codebook_size=entry.codebook_size,
        index_bits=0,
        weight_bits_fixed=wbits,
        weight_bits_coded=code_bits / entry.numel if entry.numel else 0.0,
        index_bits_coded=0.0,
        bytes_fixed=math.ceil(entry.numel * fixed / 8) + 4 * entry.codebook_size,
        bytes_file=entry.nbytes,
    )


ENCODING = DenseHuffman()
