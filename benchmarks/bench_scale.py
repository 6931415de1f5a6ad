"""Issue 24's figures, through the CLI: synthetic transformer-shaped bf16 checkpoints (seeded; sharded
safetensors with an index) compressed with `--arch none` at a global sparsity and 4-bit codes, then decoded
back to safetensors. Each command is a fresh process whose peak RSS (VmHWM) it reports itself as it exits.

    .venv/bin/python benchmarks/bench_scale.py [--sizes 0.1 0.5 1.5] [--jobs-check 0.1] [--coder auto]

Reports, per size: input GB, compress and decode wall time, seconds per GB of input, peak RSS against the
largest tensor, the file's ratio against the original bytes, and whether every raw tensor (norms) came back
bit for bit and every coded one in bf16 with at most 16 values. Then `--jobs 2` against `--jobs 1`.
Random weights are bell-shaped here (normal, not uniform), but untrained: ratios say what the format does
with such weights, not what a trained model gets.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ml_dtypes
import numpy as np

from alexcompress.models import safetensors

PY = sys.executable
SHARD_BYTES = 512 << 20
PEAK = (
    "import runpy, sys\n"
    "sys.argv = ['alexcompress'] + sys.argv[1:]\n"
    "try:\n    runpy.run_module('alexcompress', run_name='__main__')\nexcept SystemExit as e:\n    code = e.code or 0\nelse:\n    code = 0\n"
    "import resource\n"
    "children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024\n"
    "print('PEAK', int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) // 1024, children, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def shapes(params: float) -> dict[str, tuple[int, ...]]:
    """A decoder-only transformer of about `params` billion parameters: width d, 12 d^2 per layer, a
    vocabulary of 8d (a small one: the embedding stays near the size of the MLP weights)."""
    d = {0.1: 768, 0.5: 1280, 1.5: 2048}.get(params) or int(round(np.sqrt(params * 1e9 / (12 * 24)) / 64) * 64)
    layers = max(1, int(round((params * 1e9 - 8 * d * d) / (12 * d * d))))
    out: dict[str, tuple[int, ...]] = {"embed.weight": (8 * d, d)}
    for i in range(layers):
        p = f"layers.{i}."
        out |= {
            p + "attn.qkv.weight": (3 * d, d),
            p + "attn.out.weight": (d, d),
            p + "mlp.up.weight": (4 * d, d),
            p + "mlp.down.weight": (d, 4 * d),
            p + "norm1.weight": (d,),
            p + "norm2.weight": (d,),
        }
    out["norm.weight"] = (d,)
    return out


def generate(folder: Path, params: float, seed: int = 0) -> tuple[Path, int, int, int]:
    """Shards of at most SHARD_BYTES and their index; returns (index, parameters, bytes, largest tensor bytes)."""
    rng = np.random.default_rng(seed)
    table = shapes(params)
    weight_map, shard, size, number, total = {}, {}, 0, 1, 0

    def flush() -> None:
        nonlocal shard, size, number
        name = f"model-{number:05d}.safetensors"
        with open(folder / name, "wb") as handle:
            safetensors.write(shard, handle)
        weight_map.update(dict.fromkeys(shard, name))
        shard, size, number = {}, 0, number + 1

    for key, shape in table.items():
        if len(shape) == 1:
            array = (1 + 0.1 * rng.standard_normal(shape, dtype=np.float32)).astype(ml_dtypes.bfloat16)
        else:
            array = (rng.standard_normal(shape, dtype=np.float32) / np.sqrt(shape[1])).astype(ml_dtypes.bfloat16)
        if size + array.nbytes > SHARD_BYTES and shard:
            flush()
        shard[key] = array
        size += array.nbytes
        total += array.size
    flush()
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": 2 * total}, "weight_map": weight_map}))
    largest = 2 * max(int(np.prod(s)) for s in table.values())
    return index, total, 2 * total, largest


def run(args: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (MB) of `alexcompress ARGS` as a fresh process: its own, or with `--jobs`
    the larger of its own and its largest worker's (a forked worker's count includes what it inherited)."""
    start = time.perf_counter()
    done = subprocess.run([PY, "-c", PEAK, *args], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"failed: alexcompress {' '.join(args)}\n{done.stderr}")
    own, workers = (int(x) for x in next(line for line in done.stderr.splitlines() if line.startswith("PEAK")).split()[1:])
    return wall, max(own, workers)


def check(index: Path, decoded: Path) -> tuple[bool, bool]:
    """(every raw tensor bit for bit, every coded tensor bf16 with at most 16 distinct values)."""
    original = safetensors.load_index(str(index))
    back = safetensors.load(str(decoded))
    raw = all(np.array_equal(back[k].view(np.uint16), v.view(np.uint16)) for k, v in original.items() if v.ndim == 1)
    coded = all(
        back[k].dtype == ml_dtypes.bfloat16 and back[k].shape == v.shape and np.unique(back[k][::7].view(np.uint16)).size <= 17
        for k, v in original.items()
        if v.ndim == 2
    )
    return raw, coded


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=float, nargs="+", default=[0.1, 0.5, 1.5], help="billions of parameters")
    parser.add_argument("--jobs-check", type=float, default=0.1, help="the size --jobs 2 is timed on (0: skip)")
    parser.add_argument("--coder", default="auto")
    parser.add_argument("--sparsity", default="0.5")
    args = parser.parse_args()
    common = ["--arch", "none", "--sparsity", args.sparsity, "--bits", "4", "--coder", args.coder, "-q", "--force"]
    rows = []
    for params in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            start = time.perf_counter()
            index, count, nbytes, largest = generate(folder, params)
            made = time.perf_counter() - start
            dcz, decoded = folder / "m.dcz", folder / "d.safetensors"
            c_wall, c_peak = run(["compress", str(index), "-o", str(dcz), *common])
            d_wall, d_peak = run(["decode", str(dcz), "-o", str(decoded), "-q", "--force"])
            raw, coded = check(index, decoded)
            jobs = None
            if params == args.jobs_check:
                j1 = run(["--jobs", "1", "compress", str(index), "-o", str(folder / "j1.dcz"), *common])[0]
                j2 = run(["--jobs", "2", "compress", str(index), "-o", str(folder / "j2.dcz"), *common])[0]
                same = (folder / "j1.dcz").read_bytes() == (folder / "j2.dcz").read_bytes()
                jobs = (j1, j2, same)
            rows.append((params, count, nbytes, largest, made, c_wall, c_peak, d_wall, d_peak, dcz.stat().st_size, raw, coded, jobs))
            print(f"{params} B done: compress {c_wall:.1f} s, decode {d_wall:.1f} s", file=sys.stderr, flush=True)
    print(f"global sparsity {args.sparsity}, 4-bit codes, coder {args.coder}; bf16 sharded safetensors (shards <= 512 MB)")
    print(
        f"{'params':>10} {'input GB':>8} {'largest MB':>10} {'compress s':>10} {'s/GB':>6} {'peak MB':>8} {'<= 3x+512':>9}"
        f" {'decode s':>9} {'s/GB':>6} {'peak MB':>8} {'ratio':>6} {'raw exact':>9} {'coded bf16':>10}"
    )
    for params, count, nbytes, largest, _, c_wall, c_peak, d_wall, d_peak, size, raw, coded, _ in rows:
        gb, largest_mb = nbytes / 1e9, largest / 2**20
        print(
            f"{count:>10,} {gb:8.2f} {largest_mb:10.0f} {c_wall:10.1f} {c_wall / gb:6.1f} {c_peak:8d} {str(c_peak <= 3 * largest_mb + 512):>9}"
            f" {d_wall:9.1f} {d_wall / gb:6.1f} {d_peak:8d} {nbytes / size:6.2f} {str(raw):>9} {str(coded):>10}"
        )
    per_gb = [r[5] / (r[2] / 1e9) for r in rows]
    if len(per_gb) > 1:
        print(f"compress time per GB, largest vs smallest: {per_gb[-1] / per_gb[0]:.2f}x (goal within 0.8x-1.2x)")
    for params, *_, jobs in rows:
        if jobs:
            j1, j2, same = jobs
            print(f"--jobs 2 vs --jobs 1 on {params} B: {j1:.1f} s / {j2:.1f} s = {j1 / j2:.2f}x (goal >= 1.6x); files identical: {same}")


if __name__ == "__main__":
    main()
