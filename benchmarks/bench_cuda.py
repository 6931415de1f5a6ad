"""The GPU check of issue 15, prepared to run as one short script on a lent CUDA machine: a few hundred steps
of masked retraining of AlexNet(10) at 224x224 through the CLI with `--amp`, then the masks checked exact on
the written model, and images/s from the log, for each AMP mode asked for (and 2 processes under torchrun
when the machine has 2 GPUs or more).

    python benchmarks/bench_cuda.py [--device cuda] [--steps 300] [--amp off,bf16,fp16]

It also runs on a CPU (`--device cpu --steps 4 --amp bf16`), which is how it is checked where no GPU is.
Synthetic images (seeded noise with a class signal): the figures are speed and exactness, not accuracy.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

PY = sys.executable
RATES = "conv1=0.84,conv2=0.38,conv3=0.35,conv4=0.37,conv5=0.37,fc6=0.09,fc7=0.09,fc8=0.25"


def images(root: Path, count: int, size: int = 224) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(count):
        label = i % 10
        pixels = (rng.random((size, size, 3)) * 255).astype(np.uint8)
        pixels[: size // 10 * (label + 1), :, label % 3] = 255
        folder = root / f"c{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / f"{i}.png")


def run(*args: object, launcher: list[str]) -> str:
    done = subprocess.run([*launcher, *map(str, args)], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"failed: {' '.join(map(str, args))}\n{done.stderr[-3000:]}")
    return done.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--amp", default="off,bf16,fp16")
    args = parser.parse_args()
    import torch

    gpus = torch.cuda.device_count() if args.device.startswith("cuda") else 0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        count = max(args.batch_size * 4, 64)
        images(tmp / "data", count)
        cli = [PY, "-m", "alexcompress"]
        run("init", "--num-classes", "10", "-o", tmp / "a.pt", "-q", launcher=cli)
        run("prune", tmp / "a.pt", "--rates", RATES, "-o", tmp / "p.pt", "-q", launcher=cli)
        start = torch.load(tmp / "p.pt", weights_only=True)
        epochs = max(1, -(-args.steps * args.batch_size // count))
        launchers = [("1 process", cli)]
        if gpus >= 2:
            launchers.append(("2 processes", [PY, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "alexcompress"]))
        print(
            f"masked retraining, AlexNet(10) 224x224, {epochs} epochs x {count // args.batch_size} steps, batch {args.batch_size}, {args.device}"
        )
        print("| launcher | amp | img/s (median epoch) | masks exact | final loss |")
        print("|---|---|---:|---|---:|")
        for name, launcher in launchers:
            for amp in args.amp.split(","):
                out = tmp / f"r-{amp}.pt"
                log = run(
                    "prune", tmp / "p.pt", "--rates", RATES, "--data", tmp / "data", "--epochs", epochs, "--batch-size", args.batch_size,
                    "--lr", "1e-3", "--device", args.device, "--amp", amp, "--log-every", "1000", "-o", out, "--force",
                    launcher=launcher,
                )  # fmt: skip
                rates = [float(r) for r in re.findall(r" done: .*? ([\d.]+) img/s", log)]
                losses = re.findall(r" done: loss ([\d.]+)", log)
                trained = torch.load(out, weights_only=True)
                exact = all(bool((trained[k][start[k] == 0] == 0).all()) for k in start if k.endswith("weight"))
                changed = any(not torch.equal(trained[k], start[k]) for k in start)
                print(f"| {name} | {amp} | {np.median(rates):.0f} | {'yes' if exact else 'NO'} | {losses[-1] if losses else '-'} |")
                if not exact or not changed:
                    raise SystemExit("masks not exact" if not exact else "nothing trained")


if __name__ == "__main__":
    main()
