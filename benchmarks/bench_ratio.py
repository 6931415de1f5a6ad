"""Issue 22's figures: the smallest file within an accuracy budget from one command, against the paper's
recipe, all through the CLI, on AlexNet(10) trained on scikit-learn's digits and on Fashion-MNIST.

Per dataset: the training images are split into train (90%) and validation (10%, stratified); the test
split is held out and never used to choose anything. The uncompressed model is trained on train (library
code: there is no `train` command), keeping the epoch of the best validation top-1; its learning curve is
printed. Then, as a user runs it:

  (a) the paper's recipe: `prune --rates` (95.6% pruned) `--iterations 3 --epochs 2` with masked
      retraining, `quantize` 8/5 bits `--epochs 2` (centroid fine-tuning), `encode`;
  (b) `compress MODEL --data TRAIN --val VAL --max-drop 0.3` with its default settings;
  (c) the same with `--max-drop 1.0`.

Reported: held-out test top-1 (`alexcompress eval`), the real `.dcz` ratio against the float32 model, and
wall time (a) of its retraining commands, (b)/(c) of the whole command (sensitivity, every rung's
retraining, every candidate, fine-tuning). Goals (issue 22): (b) within 0.3 pp of the uncompressed model
on the test set and >= 1.6x (a)'s ratio, in <= 2x (a)'s time.

    .venv/bin/python benchmarks/bench_ratio.py [--dataset digits|fashion-mnist|both] [--epochs 12] [--keep DIR] [--drops 0.3,1.0]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_training import IMAGES, add_run_arguments, cli, export, paper_recipe, ratio, run_datasets, top1  # noqa: E402


def split(images: np.ndarray, labels: np.ndarray, fraction: float, seed: int):
    rng = np.random.default_rng(seed)
    held = np.concatenate(
        [rng.permutation(np.flatnonzero(labels == c))[: max(1, round(fraction * (labels == c).sum()))] for c in np.unique(labels)]
    )
    keep = np.setdiff1d(np.arange(labels.size), held)
    return (images[keep], labels[keep]), (images[np.sort(held)], labels[np.sort(held)])


def train_base(train_dir: Path, val_dir: Path, out: Path, epochs: int, seed: int) -> list[tuple[int, float, float, float]]:
    """AlexNet(10) from scratch (Adam, 1e-4, batch 64), the epoch of the best validation top-1 kept; returns
    the learning curve: (epoch, training loss, training top-1, validation top-1)."""
    import os

    import torch

    from alexcompress.models.state import build_model, random_model, save_state_dict
    from alexcompress.train.config import TrainConfig
    from alexcompress.train.data import Preprocessing, image_folder
    from alexcompress.train.hooks import Hooks
    from alexcompress.train.log import SilentLog
    from alexcompress.train.trainer import _train

    class All(Hooks):
        def parameters(self, model):
            return list(model.parameters())

    class Curve(SilentLog):
        rows: list = []

        def epoch(self, stage, s):
            self.rows.append((s.epoch, s.loss, s.accuracy, s.val_top1))

    torch.set_num_threads(os.cpu_count() or 1)
    prep = Preprocessing(64, 64, (0.5,), (0.5,))
    model = build_model(random_model("alexnet", num_classes=10, seed=seed), "alexnet")
    log = Curve()
    config = TrainConfig(epochs=epochs, lr=1e-4, optimizer="adam", batch_size=64, seed=seed, device="cpu")
    _train(model, All(), image_folder(str(train_dir), prep), config, stage="train", validation=image_folder(str(val_dir), prep), log=log)
    with open(out, "wb") as handle:
        save_state_dict(model.state_dict(), handle, "alexnet")
    return log.rows


def run(name: str, train, test, args: argparse.Namespace) -> None:
    started = time.perf_counter()
    train, val = split(*train, 0.1, args.seed)
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(args.keep or scratch) / name.split()[0]
        tmp.mkdir(parents=True, exist_ok=True)
        dirs = {k: tmp / k for k in ("train", "val", "test")}
        for key, (x, y) in (("train", train), ("val", val), ("test", test)):
            if not dirs[key].exists():
                export(dirs[key], x, y)
        base, curve = tmp / "base.pt", None
        if not base.exists():  # --keep DIR of an earlier run: the same base model, not trained again
            curve = train_base(dirs["train"], dirs["val"], base, args.epochs, args.seed)
        uncompressed = top1(base, dirs["test"])
        data = ["--data", dirs["train"], "--val", dirs["val"], *IMAGES, "--log-every", "100000"]
        rows = []
        t0 = time.perf_counter()
        training = ["--optimizer", "adam", "--seed", args.seed, "--force"]
        paper_recipe(base, tmp / "a.p.pt", tmp / "a.q.pt", [*training, *data], args)
        paper_seconds = time.perf_counter() - t0
        cli("encode", tmp / "a.q.pt", "-o", tmp / "a.dcz", "-q", "--force")
        rows.append(("(a) paper recipe: fixed rates (95.6% pruned), 8/5 bits, k-means, 3x2 + 2 epochs", tmp / "a.dcz", paper_seconds, ""))
        for drop in args.drops:
            out = tmp / f"search-{drop:g}.dcz"
            shutil.rmtree(tmp / f"{out.name}.search", ignore_errors=True)  # an earlier run's, interrupted
            _, log, seconds = cli("compress", base, "-o", out, *data, "--max-drop", drop, "--force", "--plot", out.with_suffix(".png"))
            chosen = next(line for line in log.splitlines() if line.startswith("chosen: "))
            rows.append((f"`compress --max-drop {drop:g}` (defaults)", out, seconds, chosen[:160]))
            (tmp / f"search-{drop:g}.log").write_text(log)
        print(f"\n## {name}: {len(train[1])} training, {len(val[1])} validation, {len(test[1])} test images (64x64)")
        if curve:
            print("\nuncompressed AlexNet(10), Adam 1e-4, batch 64; the learning curve (best validation epoch kept):\n")
            print("| epoch | training loss | training top-1 | validation top-1 |\n|---:|---:|---:|---:|")
            for epoch, loss, acc, val_top1 in curve:
                print(f"| {epoch} | {loss:.4f} | {acc:.2%} | {val_top1:.2%} |")
        print(f"\nuncompressed: test top-1 {uncompressed:.2f}% (one test image = {100 / len(test[1]):.2f} pp)\n")
        print("| through the CLI | test top-1 | vs uncompressed | .dcz ratio | vs (a) | wall time | vs (a) |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        paper_ratio = ratio(rows[0][1])
        for label, dcz, seconds, _ in rows:
            acc, r = top1(dcz, dirs["test"]), ratio(dcz)
            print(
                f"| {label} | {acc:.2f}% | {acc - uncompressed:+.2f} pp | {r:.1f}x | {r / paper_ratio:.2f}x | {seconds:.0f} s | {seconds / paper_seconds:.2f}x |"
            )
        for label, _, _, chosen in rows[1:]:
            print(f"\n{label}: {chosen}")
    print(f"({name} total {time.perf_counter() - started:.0f} s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser, train_size=3000, test_size=1000)
    parser.add_argument("--drops", type=lambda t: [float(x) for x in t.split(",")], default="0.3,1.0", help="--max-drop values")
    parser.add_argument("--keep", default=None, help="work in this folder and leave the models there (default: a temporary one)")
    run_datasets(run, parser.parse_args())


if __name__ == "__main__":
    main()
