"""Accuracy kept through the CLI, on real data the code was not tuned on: AlexNet(10) at 64x64 trained on
scikit-learn's digits and on Fashion-MNIST, then compressed with the paper's recipe (per-layer rates pruning
~95.6% of the weights, 8/5 bits) by the `alexcompress` commands exactly as a user runs them, and evaluated
on a held-out test split with `alexcompress eval`.

Only the starting model is trained by library code (there is no `train` command: the tool compresses
trained models); it reads the same ImageFolder export with the same preprocessing the CLI uses.

    .venv/bin/python benchmarks/bench_training.py [--dataset digits|fashion-mnist|both] [--train-size 12000]
    .venv/bin/python benchmarks/bench_training.py --throughput   # 1 vs 2 processes (torchrun), hook overhead

Fashion-MNIST comes from Debian's `dataset-fashion-mnist` (installed here if missing; the tests never
need it). Prints one table per dataset plus the chosen epochs, wall time per epoch and images/s.
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PY = sys.executable
FASHION = Path("/usr/share/datasets/fashion-mnist")
#: The paper keeps more of the conv layers than of fc6/fc7; these prune 95.6% of AlexNet(10)'s weights.
RATES = "conv1=0.85,conv2=0.35,conv3=0.35,conv4=0.35,conv5=0.35,fc6=0.03,fc7=0.03,fc8=0.25"
IMAGES = ["--image-size", "64", "--resize", "64", "--mean", "0.5", "--std", "0.5", "--device", "cpu"]


def export(root: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """An ImageFolder tree of grayscale PNGs: root/<class>/<index>.png."""
    from PIL import Image

    for label in np.unique(labels):
        (root / f"{int(label)}").mkdir(parents=True, exist_ok=True)
    for i, (pixels, label) in enumerate(zip(images, labels)):
        Image.fromarray(pixels, mode="L").save(root / f"{int(label)}" / f"{i:05d}.png")


def stratified(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """`size` indices with every class equally represented, chosen by `seed`."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per = size // classes.size
    return np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per] for c in classes]))


def load_digits_split(seed: int) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    pixels = (bunch.images / 16.0 * 255).round().astype(np.uint8)
    train, test = train_test_split(np.arange(len(pixels)), test_size=0.25, random_state=seed, stratify=bunch.target)
    return (pixels[train], bunch.target[train]), (pixels[test], bunch.target[test])


def _idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_fashion_split(train_size: int, test_size: int, seed: int):
    if not FASHION.exists():
        subprocess.run(["apt-get", "install", "-y", "-qq", "dataset-fashion-mnist"], check=True)
    images, labels = _idx(FASHION / "train-images-idx3-ubyte.gz"), _idx(FASHION / "train-labels-idx1-ubyte.gz")
    test_images, test_labels = _idx(FASHION / "t10k-images-idx3-ubyte.gz"), _idx(FASHION / "t10k-labels-idx1-ubyte.gz")
    train = stratified(labels, train_size, seed)
    test = stratified(test_labels, test_size, seed)
    return (images[train], labels[train]), (test_images[test], test_labels[test])


def train_base(train_dir: Path, out: Path, epochs: int, seed: int) -> None:
    """The uncompressed model: AlexNet(10) from scratch (Adam, 1e-4), on the exported folder as the CLI reads it."""
    import torch

    from alexcompress.models.state import build_model, random_model, save_state_dict
    from alexcompress.train.config import TrainConfig
    from alexcompress.train.data import Preprocessing, image_folder
    from tests.reference import train_from_scratch

    torch.set_num_threads(os.cpu_count() or 1)
    dataset = image_folder(str(train_dir), Preprocessing(64, 64, (0.5,), (0.5,)))
    model = build_model(random_model("alexnet", num_classes=10, seed=seed), "alexnet")
    train_from_scratch(model, dataset, TrainConfig(epochs=epochs, lr=1e-4, optimizer="adam", batch_size=64, seed=seed, device="cpu"))
    with open(out, "wb") as handle:
        save_state_dict(model.state_dict(), handle, "alexnet")


def cli(*args: object) -> tuple[str, str, float]:
    start = time.perf_counter()
    done = subprocess.run([PY, "-m", "alexcompress", *map(str, args)], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"alexcompress {' '.join(map(str, args))} failed:\n{done.stderr[-2000:]}")
    return done.stdout, done.stderr, seconds


def top1(model: Path, test_dir: Path) -> float:
    out, _, _ = cli("eval", model, "--data", test_dir, "--batch-size", "256", *IMAGES)
    return float(re.search(r"top-1 ([\d.]+)%", out).group(1))


def ratio(dcz: Path) -> float:
    from alexcompress.codec.accounting import original_bytes
    from alexcompress.codec.container import parse_header

    return original_bytes(parse_header(dcz.read_bytes())) / dcz.stat().st_size


def paper_recipe(base: Path, pruned: Path, quantized: Path, train_opts: list, args: argparse.Namespace) -> tuple[str, str, float, float]:
    """The paper's recipe through the CLI: `prune --rates RATES` in --rounds rounds of --retrain-epochs masked
    retraining (Adam 1e-4), then `quantize` 8/5 bits with --finetune-epochs of centroid fine-tuning (1e-5).
    Returns (prune's log, quantize's log, prune's seconds, quantize's seconds)."""
    _, prune_log, t_prune = cli(
        "prune",
        base,
        "-o",
        pruned,
        "--rates",
        RATES,
        "--iterations",
        args.rounds,
        "--epochs",
        args.retrain_epochs,
        "--lr",
        "1e-4",
        *train_opts,
    )
    _, quant_log, t_quant = cli("quantize", pruned, "-o", quantized, "--epochs", args.finetune_epochs, "--lr", "1e-5", *train_opts)
    return prune_log, quant_log, t_prune, t_quant


def epochs_of(log: str) -> tuple[list[str], float, float]:
    """The 'keeping ...' lines, and the median seconds and images/s per epoch, from a plain training log."""
    kept = [line for line in log.splitlines() if ": keeping " in line]
    rows = re.findall(r" done: .*? ([\d.]+) img/s  (\d+)m(\d+)s", log)
    rates = [float(r[0]) for r in rows]
    seconds = [int(r[1]) * 60 + int(r[2]) for r in rows]
    return kept, float(np.median(seconds)) if seconds else 0.0, float(np.median(rates)) if rates else 0.0


def run(name: str, train, test, args: argparse.Namespace) -> None:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train_dir, test_dir = tmp / "train", tmp / "test"
        export(train_dir, *train)
        export(test_dir, *test)
        base = tmp / "base.pt"
        train_base(train_dir, base, args.epochs, args.seed)
        t_base = time.perf_counter() - started
        uncompressed = top1(base, test_dir)
        # without retraining: prune | quantize | encode
        cli("prune", base, "-o", tmp / "p.pt", "--rates", RATES, "-q")
        cli("quantize", tmp / "p.pt", "-o", tmp / "pq.pt", "-q")
        cli("encode", tmp / "pq.pt", "-o", tmp / "pq.dcz", "-q")
        acc_p, acc_pq, ratio_pq = top1(tmp / "p.pt", test_dir), top1(tmp / "pq.dcz", test_dir), ratio(tmp / "pq.dcz")
        # the paper's recipe with retraining: iterative pruning with masked retraining, then trained centroids
        train_opts = ["--data", train_dir, "--val-fraction", "0.1", "--optimizer", "adam", "--seed", str(args.seed), *IMAGES]
        prune_log, quant_log, t_prune, t_quant = paper_recipe(base, tmp / "r.pt", tmp / "rq.pt", train_opts, args)
        acc_r = top1(tmp / "r.pt", test_dir)
        cli("encode", tmp / "rq.pt", "-o", tmp / "final.dcz", "-q")
        acc_final, ratio_final = top1(tmp / "final.dcz", test_dir), ratio(tmp / "final.dcz")
        size = (tmp / "final.dcz").stat().st_size
    kept_p, sec_p, ips_p = epochs_of(prune_log)
    kept_q, sec_q, ips_q = epochs_of(quant_log)
    n_train, n_test = len(train[1]), len(test[1])
    print(f"\n## {name}: {n_train} training images (10% of them held out for validation), {n_test} test images, 64x64")
    print(f"uncompressed AlexNet(10), trained {args.epochs} epochs: test top-1 {uncompressed:.2f}% ({t_base:.0f} s)\n")
    print("| stage (all through the CLI) | test top-1 | vs uncompressed | .dcz ratio |")
    print("|---|---:|---:|---:|")
    print(f"| pruned ({RATES.count('=')} per-layer rates, 95.6%), no retraining | {acc_p:.2f}% | {acc_p - uncompressed:+.2f} pp | |")
    print(f"| + quantized 8/5 bits, no retraining | {acc_pq:.2f}% | {acc_pq - uncompressed:+.2f} pp | {ratio_pq:.1f}x |")
    print(
        f"| pruned with {args.rounds} x {args.retrain_epochs} epochs of masked retraining | {acc_r:.2f}% | {acc_r - uncompressed:+.2f} pp | |"
    )
    print(
        f"| + quantized, {args.finetune_epochs} epochs of centroid fine-tuning, encoded | **{acc_final:.2f}%** | **{acc_final - uncompressed:+.2f} pp** | **{ratio_final:.1f}x** ({size:,} B) |"
    )
    print(f"\nprune --data: {t_prune:.0f} s; per epoch median {sec_p:.0f} s at {ips_p:.0f} img/s; chosen: {'; '.join(kept_p) or '-'}")
    print(f"quantize --data: {t_quant:.0f} s; per epoch median {sec_q:.0f} s at {ips_q:.0f} img/s; chosen: {'; '.join(kept_q) or '-'}")
    print(f"({name} total {time.perf_counter() - started:.0f} s; one test image = {100 / n_test:.2f} pp)", flush=True)


def _plain_epochs(model, dataset, epochs: int, batch_size: int) -> list[float]:
    """images/s of each epoch of the plainest loop: forward, loss, backward, SGD step."""
    import torch
    from torch.nn.functional import cross_entropy

    from alexcompress.train.data import loader

    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    model.train()
    torch.manual_seed(0)
    rates = []
    for epoch in range(epochs):
        start, seen = time.perf_counter(), 0
        for images, labels in loader(dataset, batch_size=batch_size, shuffle=True, epoch=epoch):
            optimizer.zero_grad(set_to_none=True)
            cross_entropy(model(images), labels).backward()
            optimizer.step()
            seen += labels.numel()
        rates.append(seen / (time.perf_counter() - start))
    return rates


def throughput(args: argparse.Namespace) -> None:
    """images/s of masked retraining and centroid fine-tuning through the CLI with 1 and 2 processes
    (torchrun, gloo, one thread each against one process with both threads), and the cost of the hooks
    against a plain training loop of the same model on the same batches."""
    import torch

    from alexcompress.compression.pruning import prune_by_rates
    from alexcompress.compression.quantization import quantize
    from alexcompress.models.state import build_model, compressible_keys, random_model, save_state_dict
    from alexcompress.train.config import TrainConfig
    from alexcompress.train.data import Preprocessing, image_folder
    from alexcompress.train.hooks import CentroidFinetuning, MaskedRetraining
    from alexcompress.train.log import SilentLog
    from alexcompress.train.trainer import _train

    (train, _), epochs, batch = load_digits_split(args.seed), 2, 64
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        export(tmp / "train", *train)
        rates = {k: float(v) for k, v in (r.split("=") for r in RATES.split(","))}
        pruned = prune_by_rates(random_model("alexnet", num_classes=10, seed=0), rates, arch="alexnet").state
        quantized = quantize(pruned, conv_bits=8, fc_bits=5).state
        for name, state in (("p.pt", pruned), ("q.pt", quantized)):
            with open(tmp / name, "wb") as handle:
                save_state_dict(state, handle, "alexnet")
        common = ["--data", tmp / "train", "--epochs", epochs, "--batch-size", batch, "--lr", "1e-4", "--log-every", "1000", *IMAGES]
        rows = []
        for stage, command in (
            ("masked retraining (prune --data)", ["prune", tmp / "p.pt", "--rates", RATES]),
            ("centroid fine-tuning (quantize --data)", ["quantize", tmp / "q.pt"]),
        ):
            rates = {}
            for n in (1, 2):
                launcher = (
                    [PY, "-m", "alexcompress"]
                    if n == 1
                    else [PY, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "alexcompress"]
                )
                env = {**os.environ, "OMP_NUM_THREADS": "2" if n == 1 else "1"}
                done = subprocess.run(
                    [*launcher, *map(str, command), *map(str, common), "-o", tmp / f"out{n}.pt", "--force"],
                    capture_output=True,
                    text=True,
                    env=env,
                )
                if done.returncode:
                    raise SystemExit(done.stderr[-3000:])
                rates[n] = epochs_of(done.stderr)[2]
            rows.append((stage, rates[1], rates[2]))
        torch.set_num_threads(2)
        dataset = image_folder(str(tmp / "train"), Preprocessing(64, 64, (0.5,), (0.5,)))

        class Rates(SilentLog):
            def __init__(self):
                self.rates = []

            def epoch(self, stage, summary):
                self.rates.append(summary.images_per_second)

        # interleaved epochs, so that a disturbance hits every kind alike
        measured: dict[str, list[float]] = {"plain": [], "masked": [], "centroids": []}
        config = TrainConfig(epochs=1, lr=1e-4, batch_size=batch, device="cpu")
        for _ in range(3):
            measured["plain"] += _plain_epochs(build_model(pruned, "alexnet"), dataset, 1, batch)
            for stage, hooks_of, state in (("masked", MaskedRetraining, pruned), ("centroids", CentroidFinetuning, quantized)):
                model = build_model(state, "alexnet")
                log = Rates()
                _train(model, hooks_of(model, set(compressible_keys(state, "alexnet"))), dataset, config, stage=stage, log=log)
                measured[stage] += log.rates
        plain = measured["plain"]
        overhead = [(stage, float(np.median(measured[stage]))) for stage in ("masked", "centroids")]
    print(
        f"\n## Throughput: AlexNet(10) at 64x64 on digits ({len(train[1])} images), global batch {batch}, {epochs} epochs, median epoch\n"
    )
    print("| stage, through the CLI | 1 process (2 threads) img/s | torchrun 2 processes (1 thread each) img/s | 2 / 1 |")
    print("|---|---:|---:|---:|")
    for stage, one, two in rows:
        print(f"| {stage} | {one:.0f} | {two:.0f} | {two / one:.2f} |")
    base = float(np.median(plain))
    print(f"\nplain loop (forward, loss, backward, SGD step): {base:.0f} img/s (library; median of 3 interleaved epochs)")
    for stage, rate in overhead:
        print(f"{stage}: {rate:.0f} img/s, overhead {base / rate - 1:+.1%} against the plain loop")


def add_run_arguments(parser: argparse.ArgumentParser, train_size: int, test_size: int) -> None:
    """The dataset and recipe options this benchmark and bench_ratio share."""
    parser.add_argument("--dataset", choices=("digits", "fashion-mnist", "both"), default="both")
    parser.add_argument("--train-size", type=int, default=train_size, help="Fashion-MNIST training images (stratified subset)")
    parser.add_argument("--test-size", type=int, default=test_size, help="Fashion-MNIST test images (of t10k)")
    parser.add_argument("--epochs", type=int, default=12, help="training the uncompressed model")
    parser.add_argument("--rounds", type=int, default=3, help="iterative pruning rounds")
    parser.add_argument("--retrain-epochs", type=int, default=2, help="masked retraining per round")
    parser.add_argument("--finetune-epochs", type=int, default=2, help="centroid fine-tuning")
    parser.add_argument("--seed", type=int, default=0)


def run_datasets(run_one: Callable[..., None], args: argparse.Namespace) -> None:
    """`run_one(name, train, test, args)` for each dataset `--dataset` names."""
    if args.dataset in ("digits", "both"):
        run_one("digits (scikit-learn)", *load_digits_split(args.seed), args)
    if args.dataset in ("fashion-mnist", "both"):
        run_one("Fashion-MNIST", *load_fashion_split(args.train_size, args.test_size, args.seed), args)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--throughput", action="store_true", help="only the 1-vs-2-process and hook-overhead figures")
    add_run_arguments(parser, train_size=12000, test_size=3000)
    args = parser.parse_args()
    if args.throughput:
        return throughput(args)
    run_datasets(run, args)


if __name__ == "__main__":
    main()
