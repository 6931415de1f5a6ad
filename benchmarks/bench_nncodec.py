"""Issue 23's figures: our `.dcz` coder against MPEG-7 NNR's reference coder (NNCodec's DeepCABAC), on
exactly the same quantized symbols, per layer, on trained models compressed through the CLI.

Models (every one through `alexcompress` commands, as a user runs them):

  - digits (scikit-learn) and, with --dataset both, Fashion-MNIST: AlexNet(10) trained here (library code:
    there is no `train` command), then
      paper: `prune --rates` (95.6% pruned) with masked retraining, `quantize` 8/5 bits with centroid
             fine-tuning;
      auto:  `sensitivity` on validation images, `prune --target-ratio` (1.5x the paper recipe's ratio)
             with retraining, `quantize --layer-bits <its widths> --quantizer ecsq` with fine-tuning;
  - random-init AlexNet-1000 (`compress random:0:1000`'s stages: paper preset, 8/5 bits).

Per coded layer, both coders get the same symbols: NNCodec's levels are centroid ranks with level 0 = pruned
(negative centroids negative, positive positive), coded by its `deepCABAC` encoder on int32 levels with no
quantization of its own, the best of several `cabac_unary_length` and row-skip settings per layer; every
stream is decoded and checked. Ours: the layer's sections in the `.dcz` that `encode` writes (default coder,
and `--coder huffman` for the paper's), codebook excluded on both sides (both store the same k floats).
Positions: our gap sections (gaps and their tables; none for a layer stored dense) and what the filler
entries cost in the weight-symbol stream (their ideal code lengths: fillers carry position, not value);
NNCodec's, the same layer coded with every nonzero level set to 1 (its significance map). Values = total -
positions.

NNCodec 2.1.3 is built from PyPI into its own venv (`--nncodec-venv`, made on first use): only its C++
DeepCABAC extension is used, so it is installed with `--no-deps` beside `numpy<2` (its pin); its other
dependencies (torch, opencv, ...) serve its own training front end, not the coder.

    .venv/bin/python benchmarks/bench_nncodec.py [--dataset digits|fashion-mnist|both] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_ratio import split  # noqa: E402
from bench_training import IMAGES, PY, RATES, ROOT, add_run_arguments, cli, export, ratio, run_datasets, top1, train_base  # noqa: E402

NNCODEC = "nncodec==2.1.3"


def nncodec_python(venv: Path) -> Path:
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", NNCODEC, "numpy<2"], check=True)
    return python


def levels_of(weight: np.ndarray) -> np.ndarray:
    """NNCodec's levels for a quantized weight: 2-D (output units x the rest), 0 where pruned, else the
    centroid's rank counted away from zero (-1 the negative centroid nearest zero, +1 the positive one)."""
    matrix = np.asarray(weight, dtype=np.float32).reshape(weight.shape[0], -1)
    codebook = np.unique(matrix[matrix != 0])
    zero = np.searchsorted(codebook, 0.0)
    rank = np.searchsorted(codebook, matrix)
    return np.where(matrix == 0, 0, np.where(matrix < 0, rank - zero, rank - zero + 1)).astype(np.int32)


def ours(dcz: Path) -> tuple[dict, float]:
    """Per coded layer (bytes of all sections but the codebook, of its gap sections, encoding), and the
    median seconds of decoding the file (a library call, the same for both coders)."""
    from alexcompress.codec.container import parse_header
    from alexcompress.codec.encodings import CODED_ENCODINGS
    from alexcompress.models.dcz import decode_arrays

    data = dcz.read_bytes()
    header = parse_header(data)
    out = {}
    for entry in header.tensors:
        if entry.encoding not in CODED_ENCODINGS:
            continue
        roles = CODED_ENCODINGS[entry.encoding].section_roles
        sizes = {s.kind: s.length for s in entry.sections}
        total = sum(v for k, v in sizes.items() if roles[k] != "codebook")
        positions = sum(v for k, v in sizes.items() if k.startswith("gap")) + filler_bytes(header, data, entry)
        out[entry.name] = {"bytes": total, "positions_bytes": positions, "encoding": entry.encoding}
    times = []
    for _ in range(3):
        start = time.perf_counter()
        decode_arrays(data)
        times.append(time.perf_counter() - start)
    return out, float(np.median(times))


def filler_bytes(header, data: bytes, entry) -> float:
    """What a sparse layout's filler entries cost in its weight-symbol stream: position information, charged
    to positions (their ideal code lengths under the file's own model or Huffman table)."""
    from alexcompress.codec import rans
    from alexcompress.codec.container import section_reader, streams_of

    if entry.encoding not in ("sparse_ctx", "sparse_huffman"):
        return 0.0
    codes = np.asarray(streams_of(header, data, entry).codes, dtype=np.int64)
    filler = codes == entry.codebook_size
    if entry.encoding == "sparse_huffman":
        lengths = np.frombuffer(section_reader(header, data, entry)("code_lengths"), dtype=np.uint8)
        return float(lengths[entry.codebook_size]) * int(filler.sum()) / 8
    section = section_reader(header, data, entry)
    model = rans.Model.from_bytes(section("value_model"), entry.value_classes, entry.codebook_size + 1, "values")
    previous = np.empty_like(codes)
    previous[1:] = codes[:-1]
    previous[:: entry.chunk] = 0
    freq = model.freqs[model.class_of()[previous], codes]
    return float((rans.PRECISION - np.log2(freq[filler])).sum()) / 8


def encode_seconds(quantized: Path, coder: str) -> float:
    from alexcompress.models.dcz import encode
    from alexcompress.models.state import load_arrays

    state, arch, _ = load_arrays(quantized.read_bytes(), name=str(quantized))
    times = []
    for _ in range(3):
        start = time.perf_counter()
        encode(state, arch=arch, coder=coder)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def compare(label: str, quantized: Path, work: Path, python: Path, rows: list) -> None:
    """Codes `quantized` (a .pt through `encode`, both coders) and its levels through NNCodec; prints the
    per-layer table and adds the model's totals to `rows`."""
    from alexcompress.models.archs import get_arch, layer_keys
    from alexcompress.models.state import load_arrays

    files = {}
    for coder in ("auto", "huffman"):
        files[coder] = work / f"{quantized.stem}.{coder}.dcz"
        cli("encode", quantized, "-o", files[coder], "--coder", coder, "-q", "--force")
    state, arch, _ = load_arrays(quantized.read_bytes(), name=str(quantized))
    keys = layer_keys(get_arch(arch), state)
    npz = work / f"{quantized.stem}.levels.npz"
    np.savez(npz, **{key: levels_of(np.asarray(state[key])) for key in keys})
    result = work / f"{quantized.stem}.nncodec.json"
    subprocess.run([str(python), str(ROOT / "benchmarks" / "nncodec_worker.py"), str(npz), str(result)], check=True, capture_output=True)
    theirs = json.loads(result.read_text())
    mine, decode_s = ours(files["auto"])
    paper, paper_decode_s = ours(files["huffman"])
    print(f"\n### {label}: {ratio(files['auto']):.1f}x (`--coder huffman`: {ratio(files['huffman']):.1f}x)\n")
    print(
        "| layer | encoding | ours (B) | huffman (B) | NNCodec (B) | ours/NNCodec | positions | values | huffman/NNCodec | NNCodec setting |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    totals = dict.fromkeys(("ours", "huffman", "nncodec", "ours_pos", "nncodec_pos", "ours_fc_values", "nncodec_fc_values"), 0)
    for key in keys:
        a, h, n = mine[key], paper[key], theirs[key]
        a_values, n_values = a["bytes"] - a["positions_bytes"], n["bytes"] - n["positions_bytes"]
        positions = a["positions_bytes"] / n["positions_bytes"] if a["positions_bytes"] else float("nan")
        print(
            f"| {key} | {a['encoding']} | {a['bytes']:,} | {h['bytes']:,} | {n['bytes']:,} | {a['bytes'] / n['bytes']:.3f} | "
            f"{positions:.3f} | {a_values / n_values if a['positions_bytes'] else float('nan'):.3f} | {h['bytes'] / n['bytes']:.3f} | "
            f"unary {n['unary']}, row skip {n['row_skip']} |"
        )
        totals["ours"] += a["bytes"]
        totals["huffman"] += h["bytes"]
        totals["nncodec"] += n["bytes"]
        if a["positions_bytes"]:
            totals["ours_pos"] += a["positions_bytes"]
            totals["nncodec_pos"] += n["positions_bytes"]
        if np.asarray(state[key]).ndim == 2:  # fully-connected layers
            totals["ours_fc_values"] += a_values if a["positions_bytes"] else a["bytes"]
            totals["nncodec_fc_values"] += n_values if a["positions_bytes"] else n["bytes"]
    enc = {coder: encode_seconds(quantized, coder) for coder in ("auto", "huffman")}
    nn_enc = sum(theirs[k]["encode_s"] for k in keys)
    nn_dec = sum(theirs[k]["decode_s"] for k in keys)
    print(
        f"\nall coded layers: ours {totals['ours']:,} B, huffman {totals['huffman']:,} B, NNCodec {totals['nncodec']:,} B: "
        f"**ours/NNCodec {totals['ours'] / totals['nncodec']:.3f}**, huffman/NNCodec {totals['huffman'] / totals['nncodec']:.3f}; "
        f"fc values ours/NNCodec {totals['ours_fc_values'] / max(1, totals['nncodec_fc_values']):.3f}"
    )
    print(
        f"seconds (median of 3, library): decode the file: ours {decode_s:.2f}, huffman {paper_decode_s:.2f} "
        f"({decode_s / paper_decode_s:.2f}x); encode: ours {enc['auto']:.2f}, huffman {enc['huffman']:.2f} "
        f"({enc['auto'] / enc['huffman']:.2f}x); NNCodec (its best setting, coded layers only): encode {nn_enc:.2f}, decode {nn_dec:.2f}"
    )
    rows.append((label, totals, decode_s / paper_decode_s, enc["auto"] / enc["huffman"]))


def trained_models(name: str, train, test, args, work: Path) -> list[tuple[str, Path]]:
    """The paper recipe and the automatic allocation of one dataset, through the CLI (reused from --keep)."""
    train, val = split(*train, 0.1, args.seed)
    dirs = {k: work / k for k in ("train", "val", "test")}
    for key, (x, y) in (("train", train), ("val", val), ("test", test)):
        if not dirs[key].exists():
            export(dirs[key], x, y)
    base = work / "base.pt"
    if not base.exists():
        train_base(dirs["train"], base, args.epochs, args.seed)
    data = ["--data", dirs["train"], "--val", dirs["val"], "--optimizer", "adam", "--seed", args.seed, *IMAGES]
    rounds = ["--iterations", args.rounds, "--epochs", args.retrain_epochs, "--lr", "1e-4"]
    finetune = ["--epochs", args.finetune_epochs, "--lr", "1e-5"]
    paper = work / "paper.q.pt"
    if not paper.exists():
        cli("prune", base, "-o", work / "paper.p.pt", "--rates", RATES, *rounds, *data, "--force")
        cli("quantize", work / "paper.p.pt", "-o", paper, *finetune, *data, "--force")
    auto = work / "auto.q.pt"
    if not auto.exists():
        cli("encode", paper, "-o", work / "paper.dcz", "-q", "--force")
        curves = work / "curves.json"
        cli("sensitivity", base, "--data", dirs["val"], "--save", curves, "--batch-size", "256", *IMAGES, "--force")
        target = round(1.5 * ratio(work / "paper.dcz"), 1)
        _, log, _ = cli("prune", base, "-o", work / "auto.p.pt", "--target-ratio", target, "--curves", curves, *rounds, *data, "--force")
        bits = re.search(r"--layer-bits '([^']+)'", log).group(1)
        options = ["--layer-bits", bits, "--quantizer", "ecsq", "--rate-weight", "0.002"]
        cli("quantize", work / "auto.p.pt", "-o", auto, *options, *finetune, *data, "--force")
    for model in (base, paper, auto):
        print(f"{name} {model.name}: held-out top-1 {top1(model, dirs['test']):.2f}%", flush=True)
    return [(f"{name}, paper recipe (8/5 bits, centroids fine-tuned)", paper), (f"{name}, automatic allocation + ECSQ", auto)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_arguments(parser, train_size=12000, test_size=2000)
    parser.set_defaults(dataset="digits", epochs=30, rounds=2)
    parser.add_argument("--keep", type=Path, help="keep (and reuse) models and data here")
    parser.add_argument("--nncodec-venv", type=Path, default=Path(tempfile.gettempdir()) / "alexcompress-nncodec-venv")
    parser.add_argument("--no-random", action="store_true", help="skip the random-init AlexNet-1000")
    args = parser.parse_args()
    python = nncodec_python(args.nncodec_venv)
    rows: list = []
    with tempfile.TemporaryDirectory() as scratch:
        root = args.keep or Path(scratch)
        models: list[tuple[str, Path]] = []

        def one(name: str, train, test, args) -> None:
            work = root / name.split()[0].lower()
            work.mkdir(parents=True, exist_ok=True)
            models.extend(trained_models(name.split()[0], train, test, args, work))

        run_datasets(one, args)
        if not args.no_random:
            work = root / "random"
            work.mkdir(parents=True, exist_ok=True)
            quantized = work / "random1000.q.pt"
            if not quantized.exists():
                cli("prune", "random:0:1000", "-o", work / "random1000.p.pt", "--force", "-q")
                cli("quantize", work / "random1000.p.pt", "-o", quantized, "--force", "-q")
            models.append(("random-init AlexNet-1000, paper preset, 8/5 bits", quantized))
        for label, quantized in models:
            compare(label, quantized, quantized.parent, python, rows)
    print("\n## Summary: all coded layers, ours / NNCodec (goal: <= 0.98 trained, <= 1.0 random-init)\n")
    print("| model | ours/NNCodec | positions | fc values | huffman/NNCodec | decode vs huffman | encode vs huffman |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, t, dec, enc in rows:
        print(
            f"| {label} | {t['ours'] / t['nncodec']:.3f} | {t['ours_pos'] / max(1, t['nncodec_pos']):.3f} | "
            f"{t['ours_fc_values'] / max(1, t['nncodec_fc_values']):.3f} | {t['huffman'] / t['nncodec']:.3f} | {dec:.2f}x | {enc:.2f}x |"
        )
    print(f"\n(python {PY})")


if __name__ == "__main__":
    main()
