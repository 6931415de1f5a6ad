"""Issue 4's real-data benchmark: torchvision's AlexNet (10 classes) trained from scratch on scikit-learn's
digits (real handwriting, upsampled to 64x64, 25% held out), then compressed at several settings with and
without retraining. Prints the real .dcz ratio and top-1 after each stage. CPU, about 10 minutes:

    .venv/bin/python benchmarks/bench_training.py [--epochs 12] [--retrain-epochs 3] [--rounds 3] [--finetune-epochs 2]
"""

from __future__ import annotations

import argparse
import time
from collections import OrderedDict

import torch

import alexcompress
from alexcompress.data import digits, loader
from alexcompress.evaluate import evaluate
from alexcompress.models import build_model, random_model, torch_state
from alexcompress.train import TrainConfig, finetune_centroids, retrain_pruned, train_from_scratch

HIGH_RATES = {"conv1": 0.85, "conv2": 0.35, "conv3": 0.35, "conv4": 0.35, "conv5": 0.35, "fc6": 0.03, "fc7": 0.03, "fc8": 0.25}


def top1(state, test) -> float:
    return evaluate(build_model(state, "alexnet"), loader(test, batch_size=256)).top1


def ratio(state) -> tuple[float, int]:
    data = alexcompress.encode(state)
    original = sum(v.numel() * 4 for v in torch_state(state).values())
    return original / len(data), len(data)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=12, help="training from scratch")
    parser.add_argument("--retrain-epochs", type=int, default=3, help="masked retraining per pruning round")
    parser.add_argument("--rounds", type=int, default=3, help="iterative pruning rounds")
    parser.add_argument("--finetune-epochs", type=int, default=2, help="centroid fine-tuning")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(2)
    start = time.perf_counter()
    train, test = digits(image_size=64, seed=args.seed)
    print(f"digits: {len(train)} train / {len(test)} test images, 64x64, AlexNet with 10 classes")

    model = build_model(random_model("alexnet", num_classes=10, seed=args.seed), "alexnet")
    train_from_scratch(
        model, train, TrainConfig(epochs=args.epochs, lr=1e-4, optimizer="adam", batch_size=64, seed=args.seed, device="cpu")
    )
    reference = OrderedDict((k, v.detach().clone()) for k, v in model.state_dict().items())
    base = top1(reference, test)
    print(f"uncompressed: top-1 {base:.2%} ({time.perf_counter() - start:.0f} s)")

    # (label, pruning, bits): pruning is a global sparsity or per-layer keep rates. The paper keeps more of
    # the conv layers than of fc6/fc7; these rates prune 95.6% overall. Settings with the same pruning share
    # one retrained model (retraining does not depend on the bit width).
    settings = [("global 90%", 0.90, 5), ("layers 95.6%", HIGH_RATES, 5), ("layers 95.6%", HIGH_RATES, 4)]
    retrained_cache: dict[str, tuple] = {}
    rows = []
    for label, pruning, bits in settings:
        t0 = time.perf_counter()

        def prune(state, fraction=1.0, pruning=pruning):
            if isinstance(pruning, float):
                return alexcompress.prune_global(state, 1 - (1 - pruning) ** fraction).state
            return alexcompress.prune_by_rates(state, {k: v**fraction for k, v in pruning.items()}).state

        pruned = prune(reference)
        sparsity = 1 - sum(int(v.count_nonzero()) for k, v in pruned.items() if k.endswith("weight")) / sum(
            v.numel() for k, v in pruned.items() if k.endswith("weight")
        )
        acc_p = top1(pruned, test)
        quantized = alexcompress.quantize(pruned, bits=bits).state
        acc_pq = top1(quantized, test)
        ratio_pq, _ = ratio(quantized)
        if label not in retrained_cache:
            retrain = TrainConfig(epochs=args.retrain_epochs, lr=1e-4, optimizer="adam", batch_size=64, seed=args.seed, device="cpu")
            retrained = retrain_pruned(
                reference, "alexnet", train, retrain, prune_round=lambda state, r: prune(state, r / args.rounds), rounds=args.rounds
            )
            retrained_cache[label] = (retrained, top1(retrained, test))
        retrained, acc_rp = retrained_cache[label]
        requantized = alexcompress.quantize(retrained, bits=bits).state
        tune = TrainConfig(epochs=args.finetune_epochs, lr=1e-5, optimizer="adam", batch_size=64, seed=args.seed, device="cpu")
        tuned = finetune_centroids(requantized, "alexnet", train, tune)
        acc_t = top1(tuned, test)
        ratio_t, size_t = ratio(tuned)
        rows.append((label, sparsity, bits, acc_p, acc_pq, ratio_pq, acc_rp, acc_t, ratio_t, size_t))
        print(f"  {label} ({sparsity:.2%} pruned) / {bits} bits done in {time.perf_counter() - t0:.0f} s")

    print()
    print(f"uncompressed top-1: {base:.2%}; test set {len(test)} images (one image = {1 / len(test):.2%})")
    print(
        f"{'pruning':>26} {'bits':>4} | {'P':>7} {'P+Q':>7} {'ratio':>7} | {'P+retrain':>9} {'+Q+finetune':>11} {'ratio':>7} {'.dcz bytes':>11} | {'vs uncompressed':>15}"
    )
    for label, sparsity, bits, acc_p, acc_pq, ratio_pq, acc_rp, acc_t, ratio_t, size_t in rows:
        print(
            f"{label + f' ({sparsity:.2%})':>26} {bits:>4} | {acc_p:7.2%} {acc_pq:7.2%} {ratio_pq:6.1f}x | {acc_rp:9.2%} {acc_t:11.2%} {ratio_t:6.1f}x {size_t:11,} | {100 * (acc_t - base):+14.2f} pt"
        )
    print(f"wall time: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
