"""Issue 5's figures: wall time and peak RSS of the naive seed pipeline against alexcompress, on the full
1000-class torchvision AlexNet (seeded random init), each as a fresh process, medians after a warm-up;
then how compress and decode scale with the number of weights. Prints ratios, not only seconds.

    .venv/bin/python benchmarks/bench_speed.py [--runs 3] [--skip-reference]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PY = sys.executable


def measure(command: list[str], runs: int) -> tuple[float, float]:
    """Median wall seconds and median peak RSS (MB) of `command` over `runs` runs after one warm-up.

    The parent imports neither torch nor numpy before this: a child's ru_maxrss counts the image it was
    forked from, so a fat parent would inflate every figure."""
    walls, peaks = [], []
    for i in range(runs + 1):
        start = time.perf_counter()
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
        stderr = child.stderr.read().decode()
        child.stderr.close()
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"failed: {' '.join(command)}\n{stderr}")
        if i:  # the first run warms the page cache
            walls.append(wall)
            peaks.append(usage.ru_maxrss / 1024)
    return statistics.median(walls), statistics.median(peaks)


def scaled_state(scale: float, seed: int = 0) -> dict:
    """AlexNet's eight weight layers with the output dimension scaled: ~scale x 57M weights."""
    import torch

    shapes = [
        (64, 3, 11, 11),
        (192, 64, 5, 5),
        (384, 192, 3, 3),
        (256, 384, 3, 3),
        (256, 256, 3, 3),
        (4096, 9216),
        (4096, 4096),
        (1000, 4096),
    ]
    g = torch.Generator().manual_seed(seed)
    state = {}
    for i, shape in enumerate(shapes):
        shape = (max(1, int(shape[0] * scale)),) + shape[1:]
        state[f"layer{i}.weight"] = (torch.rand(shape, generator=g) - 0.5) * 0.02
    return state


def scaling(runs: int) -> None:
    from alexcompress.codec.container import read_dcz, write_dcz
    from alexcompress.codec.encodings.sparse_huffman import ENCODING
    from alexcompress.compression.pruning import prune_global
    from alexcompress.compression.quantization import quantize

    print("\nscaling (in-process, medians of", runs, "runs): layers at 1/8 .. 1x AlexNet's size, 90% pruned, 8/5 bits")
    print(f"{'scale':>6} {'weights':>12} {'compress s':>11} {'per M':>8} {'decode s':>9} {'per M':>8}")
    for scale in (0.125, 0.25, 0.5, 1.0):
        base = scaled_state(scale)
        n = sum(v.numel() for v in base.values())
        compress_t, decode_t = [], []
        for _ in range(runs):
            state = {k: v.clone() for k, v in base.items()}
            start = time.perf_counter()
            q = quantize(prune_global(state, 0.9, arch="none", inplace=True).state, arch="none", inplace=True).state
            data = write_dcz([ENCODING.encode(k, v.numpy()) for k, v in q.items()], arch="none", num_classes=0, producer="b", options={})
            compress_t.append(time.perf_counter() - start)
            start = time.perf_counter()
            read_dcz(data)
            decode_t.append(time.perf_counter() - start)
        c, d = statistics.median(compress_t), statistics.median(decode_t)
        print(f"{scale:6.3f} {n:12,} {c:11.2f} {c / n * 1e6:8.3f} {d:9.2f} {d / n * 1e6:8.3f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-reference", action="store_true", help="skip (a), the slow seed pipeline")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "alexnet.pt"
        subprocess.run([PY, "-m", "alexcompress", "init", "-o", str(model), "-q"], check=True)
        out, decoded = Path(tmp) / "alexnet.dcz", Path(tmp) / "decoded.pt"
        cli = [PY, "-m", "alexcompress"]
        rows = {}
        if not args.skip_reference:
            rows["(a) seed reference pipeline"] = measure([PY, str(HERE / "seed_reference.py"), str(model)], args.runs)
        rows["(b) alexcompress compress"] = measure(
            cli + ["compress", str(model), "-o", str(out), "--sparsity", "0.9", "--bits", "5", "-q", "--force"], args.runs
        )
        staged = Path(tmp) / "staged.dcz"
        stages = " | ".join(
            [
                f"{PY} -m alexcompress prune {model} --sparsity 0.9 -o - -q",
                f"{PY} -m alexcompress quantize - --bits 5 -o - -q",
                f"{PY} -m alexcompress encode - -o {staged} -q --force",
            ]
        )
        rows["(f) prune | quantize | encode"] = measure(["bash", "-o", "pipefail", "-c", stages], args.runs)
        rows["(c) alexcompress decode"] = measure(cli + ["decode", str(out), "-o", str(decoded), "-q", "--force"], args.runs)
        rows["(d) torch.load of the .pt"] = measure(
            [PY, "-c", f"import torch, torchvision; torch.load({str(model)!r}, weights_only=True)"], args.runs
        )
        rows["(e) alexcompress info"] = measure(cli + ["info", str(out)], args.runs)
        torch_free = (
            subprocess.run(
                [
                    PY,
                    "-c",
                    f"import sys; from alexcompress.cli.app import app; sys.argv=['x','info',{str(out)!r}]\n"
                    "try: app(prog_name='x')\nexcept SystemExit: pass\nprint('torch' in sys.modules, file=sys.stderr)",
                ],
                capture_output=True,
                text=True,
            )
            .stderr.strip()
            .splitlines()[-1]
        )
        size = out.stat().st_size
    print(
        f"full AlexNet (1000 classes, 61.1M parameters), global 90% / 5 bits; .dcz {size:,} bytes; medians of {args.runs} runs after a warm-up"
    )
    print(f"{'command':34} {'wall s':>8} {'peak RSS MB':>12}")
    for name, (wall, rss) in rows.items():
        print(f"{name:34} {wall:8.2f} {rss:12.0f}")
    floor = measure([PY, "-c", "import torch"], args.runs)
    label = "(floor) import torch alone"
    print(f"{label:34} {floor[0]:8.2f} {floor[1]:12.0f}")
    b, c, d, e = (
        rows[k] for k in ("(b) alexcompress compress", "(c) alexcompress decode", "(d) torch.load of the .pt", "(e) alexcompress info")
    )
    if "(a) seed reference pipeline" in rows:
        a = rows["(a) seed reference pipeline"]
        print(f"compress speed-up over the seed pipeline: {a[0] / b[0]:.1f}x (target >= 4x)")
    print(f"compress peak RSS: {b[1]:.0f} MB (target <= 1200 MB)")
    print(f"decode / torch.load: {c[0] / d[0]:.2f}x (target <= 1.5x)")
    f = rows["(f) prune | quantize | encode"]
    print(f"staged pipeline / compress: {f[0] / b[0]:.2f}x (target <= 1.5x)")
    print(f"info: {e[0]:.2f} s, imports torch: {torch_free} (target: no torch, well under 1 s)")
    scaling(args.runs)


if __name__ == "__main__":
    main()
