"""Size accounting from a real `.dcz`: every figure comes from the header's section table, so the parts add up
to the file's size on disk (the paper's Table 4, the seed's size ladder)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from alexcompress.codec.container import DczHeader
from alexcompress.codec.encodings import DTYPES, LayerSummary, get_encoding


@dataclass(frozen=True)
class LayerRow(LayerSummary):
    """One coded layer, as in the paper's Table 4; `name` is its tensor's key."""

    name: str = ""

    @property
    def kept(self) -> float:
        return self.nnz / self.weights if self.weights else 0.0

    @property
    def size_fixed(self) -> float:
        return self.bytes_fixed / (4 * self.weights) if self.weights else 0.0

    @property
    def size_file(self) -> float:
        return self.bytes_file / (4 * self.weights) if self.weights else 0.0


@dataclass(frozen=True)
class Breakdown:
    """The file's bytes by what they hold; `total` equals the file size."""

    header: int
    codes: int
    gaps: int
    codebooks: int
    code_tables: int
    raw: int

    @property
    def total(self) -> int:
        return self.header + self.codes + self.gaps + self.codebooks + self.code_tables + self.raw


def layer_rows(header: DczHeader) -> list[LayerRow]:
    """The coded layers' Table-4 rows, in the file's order."""
    rows = []
    for t in header.tensors:
        summary = get_encoding(t.encoding).summary(t)
        if summary is not None:
            rows.append(LayerRow(**vars(summary), name=t.name))
    return rows


def breakdown(header: DczHeader) -> Breakdown:
    """The file's bytes by role, from its section table."""
    sums = {"codes": 0, "gaps": 0, "codebook": 0, "tables": 0, "raw": 0}
    for tensor in header.tensors:
        roles = get_encoding(tensor.encoding).section_roles
        for section in tensor.sections:
            sums[roles[section.kind]] += section.length
    return Breakdown(header.header_bytes, sums["codes"], sums["gaps"], sums["codebook"], sums["tables"], sums["raw"])


def original_bytes(header: DczHeader) -> int:
    """The model's size as dense tensors of their own dtype: the bytes the user had (a bfloat16 weight is
    two bytes an element)."""
    return sum(t.numel * DTYPES[t.dtype].itemsize for t in header.tensors)


@dataclass(frozen=True)
class Ladder:
    """The seed's summary: sizes after each stage. Only `huffman` is a written file; the others are what
    the same streams would take at fixed width, computed from the header."""

    original: int
    pruned: int  # values of the weights' dtype + fixed-width relative indices (fillers included) + raw tensors
    quantized: int  # fixed-width codes + fixed-width indices + codebooks + raw tensors
    huffman: int  # the file on disk
    dtype: str = "float32"  # the coded weights' dtype(s), e.g. "bfloat16" or "float16 + float32"


def ladder(header: DczHeader) -> Ladder:
    """The sizes after each stage (see `Ladder`)."""
    rows = layer_rows(header)
    parts = breakdown(header)
    coded = [t for t in header.tensors if get_encoding(t.encoding).summary(t) is not None]
    bits = [8 * DTYPES[t.dtype].itemsize for t in coded]
    pruned = sum(math.ceil(r.entries * (b + r.index_bits) / 8) for r, b in zip(rows, bits, strict=True)) + parts.raw
    quantized = sum(r.bytes_fixed for r in rows) + parts.raw
    floating = [t for t in header.tensors if t.dtype in ("float32", "float64", "float16", "bfloat16")]
    dtypes = " + ".join(sorted({t.dtype for t in coded or floating})) or "float32"
    return Ladder(original_bytes(header), pruned, quantized, header.file_size, dtypes)
