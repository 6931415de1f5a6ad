"""Issue 13's figures: how far past the paper's recipe the ratio goes at the same accuracy, all through the
CLI, on AlexNet(10) trained on scikit-learn's digits and on Fashion-MNIST (the data of bench_training).

Per dataset: the training images are split into train (90%) and validation (10%, stratified); the
uncompressed model is trained on train (library code: there is no `train` command); then, as a user runs it:

  (a) the paper's recipe: prune --rates (bench_training's 95.6%) --iterations 3 with masked retraining,
      quantize 8/5 bits with centroid fine-tuning, encode;
  (b) automatic allocation: `sensitivity` on the validation images, then `prune --target-ratio R --curves`
      with the same retraining, `quantize --layer-bits` (the widths it chose) with fine-tuning, encode;
  (c) (b)'s keep rates, quantized with `--quantizer ecsq` at two more bits per layer than (b)'s widths,
      its rate weight chosen on the validation images.

Every accuracy is `alexcompress eval` on the held-out test set; every ratio is the real `.dcz` against the
float32 model. R defaults to 1.5x what (a) reached.

    .venv/bin/python benchmarks/bench_ratio.py [--dataset digits|fashion-mnist|both] [--train-size 6000]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_training import IMAGES, RATES, add_run_arguments, cli, export, ratio, run_datasets, top1, train_base  # noqa: E402


def split(images: np.ndarray, labels: np.ndarray, fraction: float, seed: int):
    rng = np.random.default_rng(seed)
    held = np.concatenate(
        [rng.permutation(np.flatnonzero(labels == c))[: max(1, round(fraction * (labels == c).sum()))] for c in np.unique(labels)]
    )
    keep = np.setdiff1d(np.arange(labels.size), held)
    return (images[keep], labels[keep]), (images[np.sort(held)], labels[np.sort(held)])


def training(train_dir: Path, val_dir: Path, args) -> list:
    return ["--data", train_dir, "--val", val_dir, "--optimizer", "adam", "--seed", args.seed, *IMAGES]


def pruned(tmp: Path, base: Path, name: str, prune_args: list, train: list, args) -> tuple[Path, str]:
    """Iterative pruning with masked retraining, via the CLI; returns the output and its log."""
    out = tmp / f"{name}.p.pt"
    _, log, _ = cli(
        "prune", base, "-o", out, *prune_args, "--iterations", args.rounds, "--epochs", args.retrain_epochs, "--lr", "1e-4", *train
    )
    return out, log


def quantized(tmp: Path, model: Path, name: str, quant_args: list, train: list, args) -> Path:
    """Quantization with centroid fine-tuning, then encode, via the CLI; returns the .dcz."""
    cli("quantize", model, "-o", tmp / f"{name}.q.pt", *quant_args, "--epochs", args.finetune_epochs, "--lr", "1e-5", *train)
    cli("encode", tmp / f"{name}.q.pt", "-o", tmp / f"{name}.dcz", "-q")
    return tmp / f"{name}.dcz"


def run(name: str, train, test, args: argparse.Namespace) -> None:
    started = time.perf_counter()
    train, val = split(*train, 0.1, args.seed)
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(args.keep or scratch) / name.split()[0]
        tmp.mkdir(parents=True, exist_ok=True)
        dirs = {k: tmp / k for k in ("train", "val", "test")}
        for key, (x, y) in (("train", train), ("val", val), ("test", test)):
            export(dirs[key], x, y)
        base = tmp / "base.pt"
        train_base(dirs["train"], base, args.epochs, args.seed)
        uncompressed = top1(base, dirs["test"])
        rows = []
        train_args = training(dirs["train"], dirs["val"], args)
        paper = quantized(tmp, pruned(tmp, base, "a", ["--rates", RATES], train_args, args)[0], "a", [], train_args, args)
        rows.append(("(a) paper recipe: fixed rates (95.6% pruned), 8/5 bits, k-means", top1(paper, dirs["test"]), ratio(paper)))
        t0 = time.perf_counter()
        curves = tmp / "curves.json"
        out, _, _ = cli("sensitivity", base, "--data", dirs["val"], "--save", curves, "--batch-size", "256", *IMAGES)
        analysis = time.perf_counter() - t0
        target = args.target or round(1.5 * rows[0][2], 1)
        auto, log = pruned(tmp, base, "b", ["--target-ratio", target, "--curves", curves], train_args, args)
        bits = re.search(r"--layer-bits '([^']+)'", log).group(1)
        table = log[log.index("Automatic allocation") : log.index("quantize the result with")]
        dcz = quantized(tmp, auto, "b", ["--layer-bits", bits], train_args, args)
        rows.append((f"(b) automatic allocation, target {target:g}x, k-means at its widths", top1(dcz, dirs["test"]), ratio(dcz)))
        # (c): the same rates, ECSQ given 2 more bits per layer to spend where they pay; its rate weight is
        # chosen on the validation images (the largest that costs at most 0.3 pp there, before fine-tuning)
        wider = ",".join(f"{name}={min(8, int(b) + 2)}" for name, b in (item.split("=") for item in bits.split(",")))
        base_val, chosen = top1(base, dirs["val"]), args.rate_weights[0]
        tried = []
        for weight in args.rate_weights:
            trial = tmp / f"ecsq-{weight:g}.pt"
            cli("quantize", auto, "-o", trial, "--layer-bits", wider, "--quantizer", "ecsq", "--rate-weight", weight, "-q")
            acc = top1(trial, dirs["val"])
            tried.append(f"{weight:g}: {acc:.2f}%")
            if acc >= base_val - 0.3:
                chosen = weight
        dcz = quantized(tmp, auto, "c", ["--layer-bits", wider, "--quantizer", "ecsq", "--rate-weight", chosen], train_args, args)
        rows.append((f"(c) same rates, ECSQ at widths +2, --rate-weight {chosen:g}", top1(dcz, dirs["test"]), ratio(dcz)))
    n_train, n_val, n_test = len(train[1]), len(val[1]), len(test[1])
    print(f"\n## {name}: {n_train} training, {n_val} validation, {n_test} test images (64x64)")
    print(f"uncompressed AlexNet(10), {args.epochs} epochs: test top-1 {uncompressed:.2f}% (one test image = {100 / n_test:.2f} pp)\n")
    print("| through the CLI | test top-1 | vs uncompressed | .dcz ratio | vs (a) |")
    print("|---|---:|---:|---:|---:|")
    for label, acc, r in rows:
        print(f"| {label} | {acc:.2f}% | {acc - uncompressed:+.2f} pp | {r:.1f}x | {r / rows[0][2]:.2f}x |")
    print(f"\nsensitivity analysis: {analysis:.0f} s ({out.strip().splitlines()[-1]})")
    print(f"ECSQ rate weight on validation (uncompressed {base_val:.2f}%, before fine-tuning): {'; '.join(tried)}")
    print(f"allocation chosen (layer-bits {bits}):\n```\n{table.strip()}\n```")
    print(f"({name} total {time.perf_counter() - started:.0f} s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser, train_size=6000, test_size=2000)
    parser.add_argument("--target", type=float, default=None, help="allocation target ratio (default: 1.5x what (a) reaches)")
    parser.add_argument(
        "--rate-weights",
        type=lambda t: sorted(float(x) for x in t.split(",")),
        default="0.001,0.002,0.004,0.008",
        help="ECSQ rate weights to choose from on validation",
    )
    parser.add_argument("--keep", default=None, help="work in this folder and leave the models there (default: a temporary one)")
    run_datasets(run, parser.parse_args())


if __name__ == "__main__":
    main()
