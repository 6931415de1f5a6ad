"""Issue 24's lossless float coder on trained weights, through the CLI: a small CNN trained here on
scikit-learn's digits (real handwriting), its state dict cast to bfloat16 (and kept in float32), written as
safetensors and stored with `alexcompress encode --lossless-floats`; then decoded and compared bit for bit.

    .venv/bin/python benchmarks/bench_lossless.py [--epochs 30]

Prints, per dtype: bits per weight of the file's `float_huffman` tensors against the bound a per-tensor
exponent code can reach (the sign and mantissa bits as they are, plus the exponents' entropy), and the whole
file against the checkpoint.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import ml_dtypes
import numpy as np
import torch
from sklearn.datasets import load_digits

from alexcompress.codec.container import parse_header
from alexcompress.models import safetensors
from alexcompress.models.dcz import decode_arrays

PY = sys.executable


def trained(epochs: int, seed: int = 0) -> tuple[dict[str, np.ndarray], float]:
    """A CNN of ~0.6 M parameters trained on 80% of digits; (its float32 state, held-out top-1)."""
    torch.manual_seed(seed)
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16
    y = torch.tensor(digits.target)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    train, test = order[: int(0.8 * len(y))], order[int(0.8 * len(y)) :]
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 64, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(64, 128, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(128 * 16, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 10),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(epochs):
        for batch in train[torch.randperm(len(train))].split(64):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    with torch.no_grad():
        top1 = float((model(x[test]).argmax(1) == y[test]).float().mean())
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}, top1


def exponent_bound(array: np.ndarray) -> float:
    """Bits per element of sign and mantissa as they are plus the exponents' empirical entropy."""
    if array.dtype == ml_dtypes.bfloat16:
        exponents, rest = (array.view(np.uint16) >> 7) & 0xFF, 8
    else:
        exponents, rest = (array.view(np.uint32) >> 23) & 0xFF, 24
    p = np.bincount(exponents.reshape(-1), minlength=256) / exponents.size
    p = p[p > 0]
    return rest - float((p * np.log2(p)).sum())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    state, top1 = trained(args.epochs)
    print(f"a CNN trained on digits ({sum(v.size for v in state.values()):,} parameters, held-out top-1 {top1:.1%})")
    print(f"{'dtype':>9} {'checkpoint B':>12} {'.dcz B':>9} {'ratio':>6} {'coded bits/w':>12} {'bound':>6} {'bit-exact':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in (ml_dtypes.bfloat16, np.float32):
            arrays = {k: v.astype(dtype) for k, v in state.items()}
            source, target = Path(tmp) / "m.safetensors", Path(tmp) / "m.dcz"
            with open(source, "wb") as handle:
                safetensors.write(arrays, handle)
            subprocess.run(
                [PY, "-m", "alexcompress", "encode", str(source), "--lossless-floats", "-o", str(target), "-q", "--force"], check=True
            )
            data = target.read_bytes()
            header = parse_header(data)
            coded = [t for t in header.tensors if t.encoding == "float_huffman"]
            weights = sum(t.numel for t in coded)
            bits = 8 * sum(t.nbytes for t in coded) / weights
            bound = sum(exponent_bound(arrays[t.name]) * t.numel for t in coded) / weights
            back, _ = decode_arrays(data)
            exact = all(back[k].dtype == v.dtype and back[k].tobytes() == v.tobytes() for k, v in arrays.items())
            size = source.stat().st_size
            print(f"{np.dtype(dtype).name:>9} {size:12,} {len(data):9,} {size / len(data):6.3f} {bits:12.3f} {bound:6.3f} {exact!s:>9}")


if __name__ == "__main__":
    main()
