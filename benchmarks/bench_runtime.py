"""Issue 14's figures: the 1000-class AlexNet run from its `.dcz` by the sparse runtime against the densely
decoded model, side by side in one run, each measured in a fresh process.

The `.dcz` is written by the CLI (`alexcompress compress random --preset paper`, 8/5 bits, seeded random
init: fine for speed and memory, not for accuracy); `alexcompress decode` is timed as the CLI user meets it.
In each child: RSS after `import torch, torchvision, alexcompress` is the baseline; then the load (timed),
RSS after it, batch-1 latency (median of 40 forwards after 5 warm-ups), batch-64 throughput (median of 5),
and the logits of a fixed set of inputs, compared across the two children. Then the same with fc6 kept at
3%, 9% (the paper) and 25%.

    .venv/bin/python benchmarks/bench_runtime.py [--inputs 256]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PY = sys.executable
CLI = [PY, "-m", "alexcompress"]
PAPER_RATES = "conv1=0.84,conv2=0.38,conv3=0.35,conv4=0.37,conv5=0.37,fc6={fc6},fc7=0.09,fc8=0.25"

CHILD = r"""
import json, sys, time
import numpy as np, torch, torchvision, alexcompress, alexcompress.runtime.sparse
def kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
mode, path, n_inputs, logits_out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
alexcompress.runtime.sparse._return_freed_memory()
before = kib()
start = time.perf_counter()
model = alexcompress.load(path, sparse=(mode == "sparse"))
load_s = time.perf_counter() - start
alexcompress.runtime.sparse._return_freed_memory()  # both modes alike: what the model holds, not freed heap
resident = kib() - before
def median_time(f, n, warm):
    for _ in range(warm):
        f()
    times = []
    for _ in range(n):
        t = time.perf_counter(); f(); times.append(time.perf_counter() - t)
    return statistics.median(times)
import statistics
g = torch.Generator().manual_seed(0)
x1 = torch.randn(1, 3, 224, 224, generator=g)
x64 = torch.randn(64, 3, 224, 224, generator=g)
with torch.no_grad():
    b1 = median_time(lambda: model(x1), 40, 5)
    b64 = median_time(lambda: model(x64), 5, 1)
    inputs = torch.randn(n_inputs, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    logits = torch.cat([model(inputs[i : i + 64]) for i in range(0, n_inputs, 64)])
np.save(logits_out, logits.numpy())
print(json.dumps(dict(load_s=load_s, resident_mb=resident / 1024, batch1_ms=b1 * 1e3, batch64_img_s=64 / b64)))
"""


def child(mode: str, path: Path, n_inputs: int, logits: Path) -> dict:
    done = subprocess.run([PY, "-c", CHILD, mode, str(path), str(n_inputs), str(logits)], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{mode} child failed:\n{done.stderr}")
    return json.loads(done.stdout)


def cli(*args: str) -> float:
    start = time.perf_counter()
    done = subprocess.run([*CLI, *args], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"failed: alexcompress {' '.join(args)}\n{done.stderr}")
    return time.perf_counter() - start


def compare(work: Path, fc6: float, n_inputs: int) -> dict:
    import numpy as np

    dcz = work / f"alexnet-fc6-{fc6}.dcz"
    rates = PAPER_RATES.format(fc6=fc6)
    cli("compress", "random", "--rates", rates, "--conv-bits", "8", "--fc-bits", "5", "-o", str(dcz), "-q", "--force")
    decode_s = statistics.median(cli("decode", str(dcz), "-o", str(work / "d.pt"), "-q", "--force") for _ in range(3))
    sparse = child("sparse", dcz, n_inputs, work / "sparse.npy")
    dense = child("dense", dcz, n_inputs, work / "dense.npy")
    a, b = np.load(work / "dense.npy"), np.load(work / "sparse.npy")
    return dict(
        fc6=fc6,
        file_mb=dcz.stat().st_size / 1e6,
        decode_s=decode_s,
        sparse=sparse,
        dense=dense,
        max_rel=float(np.abs(a - b).max() / np.abs(a).max()),
        same_top1=int((a.argmax(1) == b.argmax(1)).sum()),
        inputs=n_inputs,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=int, default=256, help="random 224x224 inputs whose logits are compared")
    parser.add_argument("--fc6", default="0.09,0.03,0.25", help="fc6 keep rates; the first is the main table")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [compare(Path(tmp), float(r), args.inputs) for r in args.fc6.split(",")]
    main_row = rows[0]
    s, d = main_row["sparse"], main_row["dense"]
    print(f"\n1000-class AlexNet, paper keep rates (fc6 {main_row['fc6']:.0%}), 8/5 bits, {main_row['file_mb']:.2f} MB .dcz\n")
    print("| figure | sparse runtime | dense (decoded) | sparse / dense | target |")
    print("|---|---:|---:|---:|---|")
    print(
        f"| resident MB after load | {s['resident_mb']:.1f} | {d['resident_mb']:.1f} | {s['resident_mb'] / d['resident_mb']:.2f} | <= 0.25 |"
    )
    print(f"| batch-1 latency ms | {s['batch1_ms']:.2f} | {d['batch1_ms']:.2f} | {s['batch1_ms'] / d['batch1_ms']:.2f} | <= 1.0 |")
    print(
        f"| batch-64 images/s | {s['batch64_img_s']:.1f} | {d['batch64_img_s']:.1f} | {s['batch64_img_s'] / d['batch64_img_s']:.2f} | >= 0.7 |"
    )
    print(f"| load s (.dcz to module) | {s['load_s']:.2f} | {d['load_s']:.2f} | {s['load_s'] / d['load_s']:.2f} | |")
    print(
        f"| sparse load / `alexcompress decode` | {s['load_s']:.2f} | {main_row['decode_s']:.2f} | "
        f"{s['load_s'] / main_row['decode_s']:.2f} | <= 1.0 |"
    )
    print(
        f"\nlogits: max |dense - sparse| / max |dense| = {main_row['max_rel']:.2e} (target 1e-4); "
        f"same top-1 on {main_row['same_top1']}/{main_row['inputs']} inputs\n"
    )
    print(
        "| fc6 kept | .dcz MB | resident sparse / dense MB | batch-1 ms sparse / dense | batch-64 img/s sparse / dense | load s sparse / decode s | max rel | same top-1 |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in sorted(rows, key=lambda r: r["fc6"]):
        s, d = r["sparse"], r["dense"]
        print(
            f"| {r['fc6']:.0%} | {r['file_mb']:.2f} | {s['resident_mb']:.1f} / {d['resident_mb']:.1f} | "
            f"{s['batch1_ms']:.2f} / {d['batch1_ms']:.2f} | {s['batch64_img_s']:.1f} / {d['batch64_img_s']:.1f} | "
            f"{s['load_s']:.2f} / {r['decode_s']:.2f} | {r['max_rel']:.1e} | {r['same_top1']}/{r['inputs']} |"
        )


if __name__ == "__main__":
    main()
