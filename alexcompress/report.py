"""Size accounting from a real `.dcz` and the tables users see (the paper's Table 4, the seed's summary).

Every figure comes from the header's section table, so the parts add up to the file's size on disk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from rich.console import Console
from rich.table import Table

from .container import DTYPES, DczHeader, TensorEntry
from .models import PAPER_KEEP_RATES, layer_names


@dataclass(frozen=True)
class LayerRow:
    """One compressed layer, as in the paper's Table 4."""

    name: str
    weights: int
    nnz: int
    entries: int  # nonzeros plus filler entries
    codebook_size: int
    index_bits: int
    weight_bits_fixed: int
    weight_bits_huffman: float
    index_bits_huffman: float
    bytes_fixed: int  # same layer at fixed-width codes and indices (computed, not written)
    bytes_file: int  # this layer's sections in the file

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


def fixed_code_bits(codebook_size: int) -> int:
    return max(1, math.ceil(math.log2(codebook_size))) if codebook_size else 0


def layer_rows(header: DczHeader) -> list[LayerRow]:
    sparse = [t for t in header.tensors if t.encoding == "sparse_huffman"]
    names = layer_names(header.arch, [t.name for t in sparse])
    rows = []
    for t in sparse:
        wbits = fixed_code_bits(t.codebook_size)
        fixed = math.ceil(t.entries * (wbits + t.index_bits) / 8) + 4 * t.codebook_size
        rows.append(
            LayerRow(
                names[t.name], t.numel, t.nnz, t.entries, t.codebook_size, t.index_bits, wbits,
                t.code_bits / t.entries if t.entries else 0.0,
                t.gap_bits / t.entries if t.entries else 0.0,
                fixed, t.nbytes,
            )
        )
    return rows


def breakdown(header: DczHeader) -> Breakdown:
    sums = {"codes": 0, "gaps": 0, "codebook": 0, "code_lengths": 0, "gap_lengths": 0, "data": 0}
    for tensor in header.tensors:
        for section in tensor.sections:
            sums[section.kind] += section.length
    return Breakdown(
        header.header_bytes, sums["codes"], sums["gaps"], sums["codebook"],
        sums["code_lengths"] + sums["gap_lengths"], sums["data"],
    )


def original_bytes(header: DczHeader) -> int:
    """The model's size as dense tensors of their own dtype (float32 for every weight)."""
    return sum(t.numel * np.dtype(DTYPES[t.dtype]).itemsize for t in header.tensors)


@dataclass(frozen=True)
class Ladder:
    """The seed's summary: sizes after each stage. Only `huffman` is a written file; the others are what
    the same streams would take at fixed width, computed from the header."""

    original: int
    pruned: int  # float32 values + fixed-width relative indices (fillers included) + raw tensors
    quantized: int  # fixed-width codes + fixed-width indices + codebooks + raw tensors
    huffman: int  # the file on disk


def ladder(header: DczHeader) -> Ladder:
    rows = layer_rows(header)
    parts = breakdown(header)
    pruned = sum(math.ceil(r.entries * (32 + r.index_bits) / 8) for r in rows) + parts.raw
    quantized = sum(r.bytes_fixed for r in rows) + parts.raw
    return Ladder(original_bytes(header), pruned, quantized, header.file_size)


def _mb(n: int) -> str:
    return f"{n / 1e6:,.3f} MB"


def _ratio(original: int, size: int) -> str:
    return f"{original / size:.2f}x" if size else "-"


def info_table(header: DczHeader, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("layer", "weights", "kept", "w-bits P+Q", "w-bits +H", "idx-bits P+Q",
                   "idx-bits +H", "size P+Q", "size P+Q+H", "ratio"):
        table.add_column(column, justify="left" if column == "layer" else "right")
    rows = layer_rows(header)
    for r in rows:
        table.add_row(
            r.name, f"{r.weights:,}", f"{r.kept:.1%}", str(r.weight_bits_fixed), f"{r.weight_bits_huffman:.2f}",
            str(r.index_bits), f"{r.index_bits_huffman:.2f}", f"{r.size_fixed:.2%}", f"{r.size_file:.2%}",
            _ratio(4 * r.weights, r.bytes_file),
        )
    if rows:
        weights = sum(r.weights for r in rows)
        nnz = sum(r.nnz for r in rows)
        entries = sum(r.entries for r in rows) or 1
        fixed = sum(r.bytes_fixed for r in rows)
        in_file = sum(r.bytes_file for r in rows)
        table.add_row(
            "total", f"{weights:,}", f"{nnz / weights:.1%}",
            f"{sum(r.weight_bits_fixed * r.entries for r in rows) / entries:.2f}",
            f"{sum(r.weight_bits_huffman * r.entries for r in rows) / entries:.2f}",
            f"{sum(r.index_bits * r.entries for r in rows) / entries:.2f}",
            f"{sum(r.index_bits_huffman * r.entries for r in rows) / entries:.2f}",
            f"{fixed / (4 * weights):.2%}", f"{in_file / (4 * weights):.2%}", _ratio(4 * weights, in_file),
            style="bold",
        )
    return table


def bytes_table(header: DczHeader) -> Table:
    parts = breakdown(header)
    table = Table(title="bytes on disk", title_justify="left")
    table.add_column("part")
    table.add_column("bytes", justify="right")
    table.add_column("share", justify="right")
    for label, value in (
        ("weight codes (Huffman)", parts.codes),
        ("index gaps (Huffman)", parts.gaps),
        ("codebooks (float32)", parts.codebooks),
        ("code-length tables", parts.code_tables),
        ("raw tensors (biases, ...)", parts.raw),
        ("preamble + header", parts.header),
    ):
        table.add_row(label, f"{value:,}", f"{value / parts.total:.2%}" if parts.total else "-")
    table.add_row("file size", f"{parts.total:,}", "100.00%", style="bold")
    original = original_bytes(header)
    table.add_row("float32 original", f"{original:,}", _ratio(original, parts.total), style="bold")
    return table


def print_info(console: Console, header: DczHeader, label: str) -> None:
    console.print(
        f"{label}: {header.arch}, {header.num_classes} classes, {len(header.tensors)} tensors, "
        f"written by {header.producer}"
    )
    console.print(info_table(header, "per layer (the paper's Table 4)"))
    console.print(bytes_table(header))
    if header.arch == "alexnet":
        console.print(
            "paper (Table 4, pretrained AlexNet): kept "
            + ", ".join(f"{k} {v:.0%}" for k, v in PAPER_KEEP_RATES.items())
            + "; 35x overall (2.88%)"
        )


def print_codes(console: Console, entry: TensorEntry, name: str, symbols: np.ndarray, lengths: np.ndarray,
                codebook: np.ndarray, top: int = 5) -> None:
    """The seed's view of one layer: the most frequent codes, their values and Huffman code words."""
    from .huffman import canonical_codes

    counts = np.bincount(symbols, minlength=entry.codebook_size + 1)
    codes = canonical_codes(lengths)
    order = np.argsort(-counts, kind="stable")[:top]
    table = Table(title=f"{name}: top {top} of {entry.codebook_size} codes (+ filler)", title_justify="left")
    for column in ("symbol", "value", "count", "share", "Huffman code"):
        table.add_column(column, justify="right")
    for symbol in order.tolist():
        if counts[symbol] == 0:
            continue
        value = "filler" if symbol == entry.codebook_size else f"{codebook[symbol]:+.6f}"
        table.add_row(str(symbol), value, f"{counts[symbol]:,}", f"{counts[symbol] / max(entry.entries, 1):.1%}",
                      codes[symbol].to01() if symbol in codes else "")
    console.print(table)


def print_ladder(console: Console, header: DczHeader) -> None:
    steps = ladder(header)
    table = Table(title="compression summary", title_justify="left")
    table.add_column("stage")
    table.add_column("size", justify="right")
    table.add_column("ratio", justify="right")
    table.add_row("original (float32)", _mb(steps.original), "1.00x")
    table.add_row("after pruning (float32 + fixed-width indices)", _mb(steps.pruned), _ratio(steps.original, steps.pruned))
    table.add_row("after pruning + quantization (fixed width)", _mb(steps.quantized), _ratio(steps.original, steps.quantized))
    table.add_row("after P + Q + Huffman: the file on disk", _mb(steps.huffman), _ratio(steps.original, steps.huffman), style="bold")
    console.print(table)
