"""One process against two under torchrun, through the CLI, for models with batch norm and dropout (issue 26):
`prune --data` then `quantize --data` on scikit-learn's digits (real handwriting), each model run once by
one process and once by two (gloo, CPU) with the same global batch, then

- the largest relative difference of the parameters and of the running statistics between the two runs
  (per tensor: max |a - b| / max |a|, the worst tensor shown), beside the same figure for two one-process
  runs that differ only in float rounding (1 thread against 2: another summation order). Training a deep
  network amplifies rounding (a 1e-6 change of ResNet-18's weights moves its next gradient by ~10%), so a
  run-long figure is judged against that floor; a single step agrees to ~1e-5 (tests/test_distributed.py),
- held-out top-1 of both quantized models (`alexcompress eval`),
- whether the weights moved (the run trained) and the masks held,
- a two-process prune killed (SIGTERM to torchrun) once its first mid-epoch checkpoint is on disk, then
  resumed: equal bit for bit to the unbroken two-process run?

    .venv/bin/python benchmarks/bench_ddp.py [--archs resnet18,mobilenet_v3_small,alexnet] [--epochs 2]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from bench_training import export, load_digits_split  # noqa: E402

PY = sys.executable
SIZES = {"alexnet": 64}  # AlexNet's pooling needs 63 pixels; the others run at 32


def cli(launcher: list[str], *args: object, threads: int = 1) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run([*launcher, "-m", "alexcompress", *map(str, args)], capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"alexcompress {' '.join(map(str, args))} failed:\n{done.stderr[-3000:]}")
    return done.stdout + done.stderr


def differences(a: dict, b: dict) -> tuple[float, float]:
    """(parameters, running statistics): the worst tensor's max |a - b| / max |a|."""
    worst = [0.0, 0.0]
    for key, x in a.items():
        if not x.is_floating_point():
            continue
        y = b[key]
        rel = float((x - y).abs().max() / x.abs().max().clamp(min=1e-12))
        slot = 1 if key.endswith(("running_mean", "running_var")) else 0
        worst[slot] = max(worst[slot], rel)
    return worst[0], worst[1]


def killed_and_resumed(launcher: list[str], args: list[object], output: Path) -> str:
    """Start a two-process prune, stop the job once its checkpoint exists, resume it; returns what happened."""
    ckpt = Path(f"{output}.ckpt")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    job = subprocess.Popen([*launcher, "-m", "alexcompress", *map(str, args), "-o", output], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    while not ckpt.exists() and job.poll() is None:
        time.sleep(0.01)
    if job.poll() is not None:
        return "finished before a checkpoint"
    os.killpg(job.pid, signal.SIGTERM)
    job.wait()
    if output.exists() or not ckpt.exists():
        return "the job was not stopped in time"
    cli(launcher, *args, "-o", output, "--resume")
    return "resumed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", default="resnet18,mobilenet_v3_small,alexnet")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import torch

    one = [PY]
    two = [PY, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (train, test) = load_digits_split(args.seed)
        # a multiple of the global batch: otherwise two processes pad the epoch's last batch with a repeated
        # image (as DistributedSampler does) and its last step is not one process's
        keep = len(train[1]) // args.batch_size * args.batch_size
        train = (train[0][:keep], train[1][:keep])
        export(tmp / "train", *train)
        export(tmp / "test", *test)
        print(f"digits: {len(train[1])} training, {len(test[1])} held-out images; {args.epochs} epochs, global batch {args.batch_size}")
        print(
            "| model | stage | params: 1 vs 2 procs (1 vs 1, 2 threads) | running stats: same | top-1 1 proc | top-1 2 procs (1 proc, 2 threads) | moved, masks kept | resumed = unbroken |"
        )
        print("|---|---|---:|---:|---:|---:|---|---|")  # held-out top-1 of the floor's run in brackets too
        for arch in args.archs.split(","):
            size = SIZES.get(arch, 32)
            images = ["--image-size", size, "--resize", size, "--mean", "0.5", "--std", "0.5", "--device", "cpu"]
            train_args = ["--data", tmp / "train", "--batch-size", args.batch_size, *images]
            start = tmp / f"{arch}.pt"
            cli(one, "init", "--arch", arch, "--num-classes", "10", "--seed", args.seed, "-o", start, "-q")
            base = torch.load(start, weights_only=True)
            # the stages without --data: what the trained runs must differ from (it trained) and keep (the masks)
            untrained = (tmp / f"{arch}.p0.pt", tmp / f"{arch}.q0.pt")
            cli(one, "prune", start, "--rates", "*=0.5", "-o", untrained[0])
            outputs = {}
            prune_args = ["--rates", "*=0.5", "--epochs", args.epochs, "--lr", "0.01", *train_args]
            for name, launcher, threads in (("1", one, 1), ("1t2", one, 2), ("2", two, 1)):
                pruned, quantized = tmp / f"{arch}.p{name}.pt", tmp / f"{arch}.q{name}.pt"
                cli(launcher, "prune", start, *prune_args, "-o", pruned, threads=threads)
                # every run quantizes the same pruned model (one process's): k-means on inputs that differ by
                # rounding may assign a weight to the neighbouring centroid, which is not what is compared here
                cli(
                    launcher,
                    "quantize",
                    tmp / f"{arch}.p1.pt",
                    "--bits",
                    "4",
                    "--epochs",
                    1,
                    *train_args,
                    "--lr",
                    "1e-3",
                    "-o",
                    quantized,
                    threads=threads,
                )
                outputs[name] = (pruned, quantized)
            cli(one, "quantize", tmp / f"{arch}.p1.pt", "--bits", "4", "-o", untrained[1])  # what centroid fine-tuning starts from
            resumed = tmp / f"{arch}.resumed.pt"
            how = killed_and_resumed(
                two,
                ["prune", start, *prune_args, "--checkpoint-every", "3"],
                resumed,
            )
            for stage, index in (("prune", 0), ("quantize", 1)):
                a = torch.load(outputs["1"][index], weights_only=True)
                b = torch.load(outputs["2"][index], weights_only=True)
                params, stats = differences(a, b)
                floor = differences(a, torch.load(outputs["1t2"][index], weights_only=True))
                ref = torch.load(untrained[index], weights_only=True)
                coded = [k for k in base if k.endswith("weight") and base[k].dim() > 1]
                moved = all(not torch.equal(x[k], ref[k]) for x in (a, b) for k in coded)
                kept = all(torch.equal(x[k] == 0, ref[k] == 0) for x in (a, b) for k in coded)
                top = []
                for name in ("1", "2", "1t2"):
                    out = cli(one, "eval", outputs[name][index], "--data", tmp / "test", "--batch-size", "256", *images)
                    top.append(out.split("top-1 ")[1].split("%")[0] + "%")
                same = "-"
                if stage == "prune":
                    r = torch.load(resumed, weights_only=True) if how == "resumed" else None
                    same = how if r is None else ("yes" if all(torch.equal(r[k], b[k]) for k in b) else "NO")
                figures = f"{params:.1e} ({floor[0]:.1e}) | {stats:.1e} ({floor[1]:.1e})"
                tops = f"{top[0]} | {top[1]} ({top[2]})"
                print(f"| {arch} | {stage} | {figures} | {tops} | {'yes' if moved and kept else 'NO'} | {same} |", flush=True)


if __name__ == "__main__":
    main()
