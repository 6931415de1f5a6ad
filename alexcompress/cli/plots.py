"""Figures for `alexcompress report` (matplotlib, the optional `plot` extra): weight distributions with
their codebooks, the file's bytes by layer and stream, the compression ladder, and code-length histograms.
Every figure is drawn from the same numbers `info` prints: the real file's sections and streams."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

import numpy as np

from alexcompress.cli.tables import display_name
from alexcompress.codec import huffman
from alexcompress.codec.accounting import breakdown, ladder
from alexcompress.codec.container import DczHeader, streams_of
from alexcompress.codec.encodings import get_encoding
from alexcompress.errors import AlexCompressError
from alexcompress.models.state import as_numpy

DPI = 100
SIZE = (10, 6)  # inches: every figure is 1000 x 600 pixels


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise AlexCompressError("report needs matplotlib: pip install 'alexcompress[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    """Render to memory, then write like every output: never through a link or over a non-regular file,
    atomically (a Ctrl-C leaves no truncated PNG)."""
    import io

    from alexcompress.fileio import check_output, write_atomic

    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=DPI, format="png")
    _pyplot().close(fig)
    check_output(str(path), force=True)
    write_atomic(path, buffer.getvalue())
    return path


def _coded(header: DczHeader) -> list[Any]:
    """The coded tensors (those whose encoding summarises them as a layer) and their display names."""
    return [t for t in header.tensors if get_encoding(t.encoding).summary(t) is not None]


def weight_figures(out: Path, header: DczHeader, data: bytes, original: Optional[Mapping[str, Any]]) -> list[Path]:
    """Per layer: the weights before pruning (if known), the survivors, and the codebook's centroids."""
    plt = _pyplot()
    sparse = _coded(header)
    names = {t.name: display_name(header.arch, t.name) for t in sparse}
    paths, stems = [], set()
    for entry in sparse:
        # a file name from a layer name: one path component of safe characters, short, unique ('/' in a
        # name would otherwise make a folder, and a folder planted there could lead outside -o)
        stem = re.sub(r"[^A-Za-z0-9_-]", "_", names[entry.name])[:100]
        stem = stem if stem not in stems else f"{stem}_{len(stems)}"
        stems.add(stem)
        streams = streams_of(header, data, entry)
        codebook, codes = streams.codebook, streams.codes
        real = codes[codes < entry.codebook_size]
        fig, ax = plt.subplots(figsize=SIZE)
        if original is not None and entry.name in original:
            before = as_numpy(original[entry.name]).reshape(-1)
            lo, hi = float(before.min()), float(before.max())
            bins = np.linspace(lo, hi, 201)
            ax.hist(before, bins=bins, color="0.75", label=f"before pruning ({before.size:,} weights)")
        else:
            lo, hi = float(codebook.min(initial=0)), float(codebook.max(initial=0))
            bins = np.linspace(lo, hi, 201) if hi > lo else 50
        if entry.nnz:
            ax.hist(codebook[real], bins=bins, color="tab:blue", alpha=0.8, label=f"after pruning and quantization ({entry.nnz:,} nonzero)")
        else:
            ax.text(0.5, 0.5, "every weight of this layer was pruned", transform=ax.transAxes, ha="center", fontsize=14)
        for i, c in enumerate(codebook):
            ax.axvline(c, color="tab:red", lw=0.6, alpha=0.7, label=f"{entry.codebook_size} centroids" if i == 0 else None)
        ax.set_title(f"{names[entry.name]} ({entry.name}): weight distribution and codebook")
        ax.set_xlabel("weight value")
        ax.set_ylabel("number of weights (log scale)")
        if entry.nnz or original is not None:
            ax.set_yscale("log")
            ax.set_ylim(bottom=0.8)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper right")
        fig.tight_layout()
        paths.append(_save(fig, out / f"weights_{stem}.png"))
    return paths


def bytes_figure(out: Path, header: DczHeader) -> Path:
    plt = _pyplot()
    sparse = _coded(header)
    names = {t.name: display_name(header.arch, t.name) for t in sparse}
    labels = [names[t.name] for t in sparse] + ["raw tensors", "header"]
    kinds = {"codes": "weight codes", "gaps": "index gaps", "codebook": "codebooks", "tables": "code tables"}
    stacks = {label: np.zeros(len(labels)) for label in kinds.values()}
    stacks["raw (biases, buffers)"] = np.zeros(len(labels))
    stacks["preamble + header"] = np.zeros(len(labels))
    for i, t in enumerate(sparse):
        roles = get_encoding(t.encoding).section_roles
        for s in t.sections:
            stacks[kinds[roles[s.kind]]][i] += s.length
    parts = breakdown(header)
    stacks["raw (biases, buffers)"][-2] = parts.raw
    stacks["preamble + header"][-1] = parts.header
    fig, ax = plt.subplots(figsize=SIZE)
    bottom = np.zeros(len(labels))
    for label, values in stacks.items():
        ax.bar(labels, values / 1e3, bottom=bottom / 1e3, label=label)
        bottom += values
    ax.set_title(f"bytes on disk by layer and stream: {header.file_size:,} bytes in all")
    ax.set_ylabel("kilobytes")
    ax.legend()
    plt.setp(ax.get_xticklabels(), rotation=45, ha="right")
    fig.tight_layout()
    return _save(fig, out / "bytes.png")


def ladder_figure(out: Path, header: DczHeader) -> Path:
    plt = _pyplot()
    steps = ladder(header)
    stages = ["original\n(float32)", "pruned\n(float32 + indices)", "pruned +\nquantized", "+ Huffman\n(the file)"]
    sizes = [steps.original, steps.pruned, steps.quantized, steps.huffman]
    fig, ax = plt.subplots(figsize=SIZE)
    bars = ax.bar(stages, [s / 1e6 for s in sizes], color=["0.6", "tab:orange", "tab:green", "tab:blue"])
    for bar, size in zip(bars, sizes):
        ax.annotate(
            f"{size / 1e6:,.2f} MB\n{steps.original / size:.1f}x",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
        )
    ax.set_yscale("log")
    ax.set_ylim(top=steps.original / 1e6 * 2.5)  # room for the labels above the tallest bar
    ax.set_ylabel("size (MB, log scale)")
    ax.set_title(f"compression ladder ({header.arch}, {header.num_classes} classes): {steps.original / steps.huffman:.1f}x on disk")
    fig.tight_layout()
    return _save(fig, out / "ladder.png")


def code_length_figure(out: Path, header: DczHeader, data: bytes) -> Path:
    plt = _pyplot()
    sparse = [t for t in _coded(header) if t.nnz]
    names = {t.name: display_name(header.arch, t.name) for t in sparse}
    fig, (left, right) = plt.subplots(1, 2, figsize=SIZE, sharey=True)
    longest = 1
    for entry in sparse:
        s = streams_of(header, data, entry)
        for ax, lengths, symbols in ((left, s.code_lengths, s.codes), (right, s.gap_lengths, s.gaps)):
            if not symbols.size or not lengths.size:  # no gap stream (dense layouts), no code lengths (rANS)
                continue
            per_symbol = lengths.astype(np.int64)[symbols]
            counts = np.bincount(per_symbol, minlength=huffman.MAX_CODE_LENGTH + 1)
            share = counts / counts.sum()
            longest = max(longest, int(np.flatnonzero(counts).max()))
            ax.plot(np.arange(share.size), share, marker="o", ms=3, label=names[entry.name])
    for ax, title in ((left, "weight-code stream"), (right, "index-gap stream")):
        ax.set_title(title)
        ax.set_xlabel("Huffman code length (bits)")
        ax.set_xlim(0, longest + 1)
    left.set_ylabel("share of the stream's symbols")
    right.legend(fontsize="small", ncol=2)
    fig.suptitle("distribution of code lengths per stream")
    fig.tight_layout()
    return _save(fig, out / "code_lengths.png")


def write_report(out: Path, header: DczHeader, data: bytes, original: Optional[Mapping[str, Any]] = None) -> list[Path]:
    """Write every figure into `out` (created if needed); returns the paths."""
    _pyplot()
    out.mkdir(parents=True, exist_ok=True)
    return [
        *weight_figures(out, header, data, original),
        bytes_figure(out, header),
        ladder_figure(out, header),
        code_length_figure(out, header, data),
    ]


def sensitivity_figure(path: Path, curves: Any) -> Path:
    """Han et al. 2015's Fig. 5 for any model: validation top-1 against each layer's keep rate (left) and
    bit width (right), one layer changed at a time; below, where the curves carry it, how far the
    predictions moved (the KL divergence automatic allocation ranks by)."""
    plt = _pyplot()
    rows = 2 if curves.has_divergence else 1
    fig, axes = plt.subplots(rows, 2, figsize=SIZE, sharex="col", squeeze=False)
    panels = [("top1", "validation top-1 (%)", lambda layer, what: {k: 100 * v for k, v in getattr(layer, what).items()})]
    if rows == 2:
        panels.append(("kl", "KL from the original (nats)", lambda layer, what: getattr(layer, f"{what}_kl")))
    for (kind, label, values), (left, right) in zip(panels, axes):
        for layer in curves.layers:
            keep, bits = sorted(layer.keep), sorted(layer.bits)
            keep_values, bits_values = values(layer, "keep"), values(layer, "bits")
            left.plot([100 * k for k in keep], [keep_values[k] for k in keep], marker="o", ms=3, label=layer.name)
            right.plot(bits, [bits_values[b] for b in bits], marker="o", ms=3, label=layer.name)
        for ax in (left, right):
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            if kind == "top1":
                ax.axhline(100 * curves.baseline, color="grey", lw=0.8, ls="--")
            else:
                ax.set_yscale("symlog", linthresh=1e-3)
    left, right = axes[0]
    left.set_xscale("log")
    left.invert_xaxis()
    right.invert_xaxis()
    axes[-1][0].set_xlabel("weights kept (%), this layer alone")
    axes[-1][1].set_xlabel("bits per weight code, this layer alone")
    left.legend(fontsize=7, ncol=2)
    fig.suptitle(f"Sensitivity of {curves.arch} ({curves.samples:,} validation images, baseline {curves.baseline:.2%})")
    fig.tight_layout()
    return _save(fig, path)


def search_figure(path: Path, result: Any, spec: Any) -> Path:
    """The search's candidates: file ratio against validation top-1, one colour per rung, the chosen file
    (after fine-tuning) and the budget marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for rung in result.rungs:
        if rung.candidates:
            ax.scatter([c.ratio for c in rung.candidates], [100 * c.top1 for c in rung.candidates], s=18, label=f"rung {rung.index}")
    chosen = result.chosen
    ax.scatter([chosen.ratio], [100 * result.top1], marker="*", s=160, color="black", label="chosen, fine-tuned")
    ax.axhline(100 * result.reference[0], color="grey", lw=0.8, ls="--", label="the model as given")
    if spec.max_drop is not None:
        ax.axhline(100 * result.reference[0] - spec.max_drop, color="red", lw=0.8, ls=":", label=f"budget ({spec.max_drop:g} pp)")
    else:
        ax.axvline(spec.target_ratio, color="red", lw=0.8, ls=":", label=f"target {spec.target_ratio:g}x")
    ax.set_xlabel("compression ratio of the .dcz")
    ax.set_ylabel("validation top-1 (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(f"Search over {len(result.candidates)} files ({result.validation_images:,} validation images)")
    fig.tight_layout()
    return _save(fig, path)
