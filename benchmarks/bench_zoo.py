"""Every torchvision classification model up to 150 M parameters through the CLI, as a user would run it:
`init --arch NAME` (seeded random init, 1000 classes), then `compress --sparsity 0.9` (8/5 bits) with
`--verify` (the file decodes bit for bit to the quantized model), then `decode`, then a strict
`load_state_dict` of the decoded `.pt` into torchvision's module. Prints a Markdown table.

    .venv/bin/python benchmarks/bench_zoo.py [--max-params 150] [--only NAME,NAME]   (~25 min on 2 cores)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PY = sys.executable
CHECK = """
import sys, torch, torchvision
state = torch.load(sys.argv[2], weights_only=True)
model = torchvision.models.get_model(sys.argv[1], weights=None, num_classes=1000)
model.load_state_dict(state, strict=True)
"""


def run(args: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True)
    return time.perf_counter() - start, done


def parameter_counts(limit: float) -> dict[str, int]:
    """Parameters of each model, counted on the meta device (no memory, no init)."""
    out = subprocess.run(
        [
            PY,
            "-c",
            "import torchvision\nfrom alexcompress.models.torchvision_archs import _skeleton, torchvision_names\nimport math\n"
            "for n in torchvision_names():\n"
            "    print(n, sum(math.prod(e.shape) for e in _skeleton(n, 1000).values()))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    counts = {name: int(n) for name, n in (line.split() for line in out.splitlines())}
    return {k: v for k, v in sorted(counts.items(), key=lambda kv: kv[1]) if v <= limit * 1e6}


def main() -> None:
    from alexcompress.codec.accounting import original_bytes
    from alexcompress.codec.container import parse_header

    parser = argparse.ArgumentParser()
    parser.add_argument("--max-params", type=float, default=150, help="millions")
    parser.add_argument("--only", default="", help="comma-separated model names")
    args = parser.parse_args()
    models = parameter_counts(args.max_params)
    if args.only:
        models = {k: v for k, v in models.items() if k in args.only.split(",")}
    cli = [PY, "-m", "alexcompress"]
    print(f"{len(models)} models, seeded random init (1000 classes), --sparsity 0.9, 8/5 bits, through the CLI\n")
    print("| model | parameters | float32 MB | .dcz MB | ratio | compress s | decode s | bit-exact + strict load |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    total_original = total_file = 0
    failures = []
    for name, params in models.items():
        with tempfile.TemporaryDirectory() as tmp:
            pt, dcz, back = Path(tmp) / "m.pt", Path(tmp) / "m.dcz", Path(tmp) / "back.pt"
            _, done = run(cli + ["init", "--arch", name, "-o", str(pt), "-q"])
            if done.returncode:
                failures.append((name, "init", done.stderr.strip()[-300:]))
                continue
            t_compress, done = run(cli + ["compress", str(pt), "-o", str(dcz), "--sparsity", "0.9", "--verify", "-q"])
            if done.returncode:
                failures.append((name, "compress", done.stderr.strip()[-300:]))
                continue
            t_decode, done = run(cli + ["decode", str(dcz), "-o", str(back), "-q"])
            _, check = run([PY, "-c", CHECK, name, str(back)]) if not done.returncode else (0, done)
            exact = "yes" if not check.returncode else f"NO: {check.stderr.strip()[-120:]}"
            header = parse_header(dcz.read_bytes())
            original, size = original_bytes(header), dcz.stat().st_size
            total_original += original
            total_file += size
            print(
                f"| {name} | {params / 1e6:.1f} M | {original / 1e6:.1f} | {size / 1e6:.2f} | {original / size:.1f}x "
                f"| {t_compress:.1f} | {t_decode:.1f} | {exact} |",
                flush=True,
            )
    if total_file:
        print(
            f"\nall models: {total_original / 1e6:,.0f} MB float32 -> {total_file / 1e6:,.1f} MB of .dcz ({total_original / total_file:.1f}x)"
        )
    for name, stage, message in failures:
        print(f"FAILED {name} at {stage}: {message}")
    print("\n(compress s includes --verify, a full decode and comparison; every time includes starting Python and importing the CLI)")


if __name__ == "__main__":
    main()
