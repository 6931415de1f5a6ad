"""The tables users see (the paper's Table 4, the seed's summary, allocations), from `codec.accounting`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from alexcompress.cli.text import printable
from alexcompress.codec.accounting import breakdown, ladder, layer_rows, original_bytes
from alexcompress.codec.container import DczHeader, streams_of
from alexcompress.compression.sensitivity import nats
from alexcompress.errors import ModelError
from alexcompress.models.alexnet import PAPER_KEEP_RATES
from alexcompress.models.archs import get_arch


def display_name(arch: str, key: str) -> str:
    """A layer's name for tables and plots: the architecture's alias (conv1..fc8) or the key; escaped, since
    a file's tensor names are the file's, not ours (no control characters, no rich markup)."""
    try:
        name = get_arch(arch, discover=False).display_name(key)
    except ModelError:  # a file written for an architecture this torchvision does not know
        name = key[: -len(".weight")] if key.endswith(".weight") else key
    return escape(printable(name))


def _mb(n: int) -> str:
    return f"{n / 1e6:,.3f} MB"


def _ratio(original: int, size: int) -> str:
    return f"{original / size:.2f}x" if size else "-"


def info_table(header: DczHeader, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("layer", "weights", "kept", "w-bits P+Q", "w-bits +H", "idx-bits P+Q", "idx-bits +H", "size P+Q", "size P+Q+H", "ratio"):
        table.add_column(column, justify="left" if column == "layer" else "right")
    rows = layer_rows(header)
    for r in rows:
        table.add_row(
            display_name(header.arch, r.name),
            f"{r.weights:,}",
            f"{r.kept:.1%}",
            str(r.weight_bits_fixed),
            f"{r.weight_bits_coded:.2f}",
            str(r.index_bits),
            f"{r.index_bits_coded:.2f}",
            f"{r.size_fixed:.2%}",
            f"{r.size_file:.2%}",
            _ratio(4 * r.weights, r.bytes_file),
        )
    if rows:
        weights = sum(r.weights for r in rows)
        nnz = sum(r.nnz for r in rows)
        entries = sum(r.entries for r in rows) or 1
        fixed = sum(r.bytes_fixed for r in rows)
        in_file = sum(r.bytes_file for r in rows)
        table.add_row(
            "total",
            f"{weights:,}",
            f"{nnz / max(weights, 1):.1%}",
            f"{sum(r.weight_bits_fixed * r.entries for r in rows) / entries:.2f}",
            f"{sum(r.weight_bits_coded * r.entries for r in rows) / entries:.2f}",
            f"{sum(r.index_bits * r.entries for r in rows) / entries:.2f}",
            f"{sum(r.index_bits_coded * r.entries for r in rows) / entries:.2f}",
            f"{fixed / max(4 * weights, 1):.2%}",
            f"{in_file / max(4 * weights, 1):.2%}",
            _ratio(4 * weights, in_file),
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
        ("weight codes (entropy-coded)", parts.codes),
        ("index gaps (entropy-coded)", parts.gaps),
        ("codebooks (float32)", parts.codebooks),
        ("code tables (Huffman lengths, rANS models)", parts.code_tables),
        ("raw tensors (biases, ...)", parts.raw),
        ("preamble + header", parts.header),
    ):
        table.add_row(label, f"{value:,}", f"{value / parts.total:.2%}" if parts.total else "-")
    table.add_row("file size", f"{parts.total:,}", "100.00%", style="bold")
    original = original_bytes(header)
    table.add_row(f"original ({ladder(header).dtype}, as given)", f"{original:,}", _ratio(original, parts.total), style="bold")
    return table


def print_info(console: Console, header: DczHeader, label: str) -> None:
    classes = f"{header.num_classes} classes" if header.num_classes else "no class count"
    line = f"{label}: {header.arch}, {classes}, {len(header.tensors)} tensors, written by {header.producer}"
    console.print(printable(line), markup=False)
    console.print(info_table(header, "per layer (the paper's Table 4)"))
    console.print(bytes_table(header))
    if header.arch == "alexnet":
        console.print(
            "paper (Table 4, pretrained AlexNet): kept "
            + ", ".join(f"{k} {v:.0%}" for k, v in PAPER_KEEP_RATES.items())
            + "; 35x overall (2.88%)"
        )


def print_codes(console: Console, header: DczHeader, data: bytes, top: int = 5) -> None:
    """The seed's view of every coded layer: the most frequent codes, their values and Huffman code words."""
    for entry in header.tensors:
        streams = streams_of(header, data, entry)
        if streams is not None:
            _print_layer_codes(console, entry, display_name(header.arch, entry.name), streams, top)


def _print_layer_codes(console: Console, entry: Any, name: str, streams: Any, top: int) -> None:
    from alexcompress.codec.huffman import canonical_codes

    counts = np.bincount(streams.codes, minlength=entry.codebook_size + 1)
    codes = canonical_codes(streams.code_lengths)
    order = np.argsort(-counts, kind="stable")[:top]
    extra = streams.extra_symbol
    table = Table(title=f"{name}: top {top} of {entry.codebook_size} codes (+ {extra}), {entry.encoding}", title_justify="left")
    for column in ("symbol", "value", "count", "share", "Huffman code"):
        table.add_column(column, justify="right")
    for symbol in order.tolist():
        if counts[symbol] == 0:
            continue
        value = extra if symbol == entry.codebook_size else f"{streams.codebook[symbol]:+.6f}"
        table.add_row(
            str(symbol),
            value,
            f"{counts[symbol]:,}",
            f"{counts[symbol] / max(streams.codes.size, 1):.1%}",
            codes[symbol].to01() if symbol in codes else "",
        )
    console.print(table)


def print_ladder(console: Console, header: DczHeader) -> None:
    steps = ladder(header)
    table = Table(title="compression summary", title_justify="left")
    table.add_column("stage")
    table.add_column("size", justify="right")
    table.add_column("ratio", justify="right")
    table.add_row(f"original ({steps.dtype})", _mb(steps.original), "1.00x")
    table.add_row(f"after pruning ({steps.dtype} + fixed-width indices)", _mb(steps.pruned), _ratio(steps.original, steps.pruned))
    table.add_row("after pruning + quantization (fixed width)", _mb(steps.quantized), _ratio(steps.original, steps.quantized))
    table.add_row("after P + Q + Huffman: the file on disk", _mb(steps.huffman), _ratio(steps.original, steps.huffman), style="bold")
    console.print(table)


def print_state_dict(console: Console, state: Mapping[str, np.ndarray], arch: str, label: str) -> None:
    """`info` on a `.pt`: per coded layer, weights, nonzeros and distinct values (is it pruned? quantized?)."""
    from alexcompress.models.state import compressible_keys, num_classes_of

    keys = compressible_keys(state, arch)
    classes = num_classes_of(state, arch)
    table = Table(title=f"{label}: {arch} state dict" + (f", {classes} classes" if classes else ""), title_justify="left")
    for column in ("layer", "weights", "nonzeros", "kept", "distinct nonzero values"):
        table.add_column(column, justify="left" if column == "layer" else "right")
    for key in keys:
        flat = np.asarray(state[key]).reshape(-1)
        nonzero = flat[flat != 0]
        table.add_row(
            display_name(arch, key),
            f"{flat.size:,}",
            f"{nonzero.size:,}",
            f"{nonzero.size / max(flat.size, 1):.2%}",
            f"{np.unique(nonzero).size:,}",
        )
    console.print(table)
    console.print(f"dense size: {sum(np.asarray(v).nbytes for v in state.values()):,} bytes")


def print_allocation(console: Console, allocation: Any, arch: str) -> None:
    """The keep rates and widths an automatic allocation chose, beside the paper's (AlexNet)."""
    from alexcompress.compression.sensitivity import coded_bytes

    paper = arch == "alexnet"
    table = Table(title="Automatic allocation (from the sensitivity curves)", title_style="bold")
    for column in ("layer", "weights", "keep", "bits", *(("paper keep", "paper bits") if paper else ()), "predicted bytes"):
        table.add_column(column, justify="left" if column == "layer" else "right")
    for key, keep in allocation.rates.items():
        name, bits, weights = allocation.names[key], allocation.bits[key], allocation.weights[key]
        extra = ()
        if paper:
            extra = (f"{PAPER_KEEP_RATES[name]:.0%}" if name in PAPER_KEEP_RATES else "-", "8" if name.startswith("conv") else "5")
        table.add_row(
            escape(printable(name)), f"{weights:,}", f"{100 * keep:.3g}%", str(bits), *extra, f"{coded_bytes(weights, keep, bits):,}"
        )
    console.print(table)
    divergence = "" if allocation.predicted_kl is None else f", divergence {allocation.predicted_kl:.3f} nats (what it minimises)"
    console.print(
        f"predicted: {allocation.predicted_bytes:,} bytes, {allocation.predicted_ratio:.1f}x, top-1 drop {allocation.predicted_drop:.2f} pp"
        f"{divergence}, before retraining (the layers' figures added)",
        markup=False,
    )
    if allocation.real_ratio is not None:
        console.print(
            f"the file at these rates and widths (k-means, encoded): {allocation.real_ratio:.1f}x; the allocation was moved along "
            "the path until the real file met the target",
            markup=False,
        )
    if allocation.measured is not None:
        before, after, samples = allocation.measured
        console.print(
            f"measured: top-1 {after:.2%} with every layer pruned and quantized together, before retraining "
            f"({before:.2%} as given: {0.0 - allocation.measured_drop:+.2f} pp; {samples:,} validation images)",
            markup=False,
        )


def print_curves(console: Console, curves: Any, keeps: Any, widths: Any) -> None:
    """The sensitivity curves as four tables: top-1 and divergence, per keep rate and per width."""
    for what, grid, label in (("keep", keeps, lambda k: f"{k:.0%}"), ("bits", widths, lambda b: f"{b} bits")):
        changed = "pruned" if what == "keep" else "quantized"
        for suffix, title, cell in (
            ("", f"validation top-1 with one layer {changed} (baseline {curves.baseline:.2%})", lambda v: f"{100 * v:.1f}"),
            ("_kl", f"divergence from the original's predictions (mean KL, nats) with one layer {changed}", nats),
        ):
            table = Table(title=title)
            table.add_column("layer")
            for point in grid:
                table.add_column(label(point), justify="right")
            for layer in curves.layers:
                table.add_row(printable(layer.name), *(cell(getattr(layer, what + suffix)[p]) for p in grid))
            console.print(table)


def print_search(console: Console, result: Any, spec: Any) -> None:
    """Every file the search tried (before fine-tuning), the chosen one marked, then what it became."""
    budget = f"within {spec.max_drop:g} pp" if spec.max_drop is not None else f"at least {spec.target_ratio:g}x"
    table = Table(title=f"Search: the smallest file {budget} on {result.validation_images:,} validation images", title_style="bold")
    for column in ("rung", "pruned to", "quantization", "ratio", "val top-1", "vs model", "val loss", ""):
        table.add_column(column, justify="left" if column in ("quantization", "") else "right")
    predicted = {rung.index: rung.predicted_ratio for rung in result.rungs}
    for c in result.candidates:
        mark = "<- chosen" if c == result.chosen else ""
        table.add_row(
            str(c.rung),
            f"{predicted[c.rung]:.1f}x",
            c.label,
            f"{c.ratio:.1f}x",
            f"{c.top1:.2%}",
            f"{-c.drop:+.2f} pp",
            f"{c.loss:.4f}",
            mark,
        )
    console.print(table)
    c = result.chosen
    console.print(
        f"chosen: rung {c.rung}, {c.label}, widths {', '.join(f'{display_name(result.curves.arch, k)}={b}' for k, b in c.widths.items())}",
        markup=False,
    )
    console.print(
        f"after centroid fine-tuning: validation top-1 {result.top1:.2%} ({-result.drop:+.2f} pp against the model as given, "
        f"{result.reference[0]:.2%}), loss {result.loss:.4f}",
        markup=False,
    )
