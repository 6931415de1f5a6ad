"""Issue 3's targets: the .dcz size against the memoryless entropy bound, against the seed's accounting,
and encode/decode wall time. Prints tables; asserts nothing (figures, not tests).

    .venv/bin/python benchmarks/bench_container.py
"""

from __future__ import annotations

import math
import statistics
import time

import numpy as np

import alexcompress
from alexcompress.codec.accounting import layer_rows
from alexcompress.codec.container import parse_header
from alexcompress.models.alexnet import ALEXNET_LAYERS, PAPER_KEEP_RATES

# The paper's Table 4, "size P+Q+H" column (percent of the float32 layer)
PAPER_SIZE = {"conv1": 20.53, "conv2": 9.43, "conv3": 8.44, "conv4": 9.11, "conv5": 9.43, "fc6": 2.39, "fc7": 2.46, "fc8": 5.85}
PAPER_WBITS = {"conv1": 6.3, "conv2": 5.5, "conv3": 5.1, "conv4": 5.2, "conv5": 5.6, "fc6": 3.9, "fc7": 3.6, "fc8": 4.0}
PAPER_IBITS = {"conv1": 1.2, "conv2": 2.3, "conv3": 2.6, "conv4": 2.5, "conv5": 2.5, "fc6": 3.2, "fc7": 3.7, "fc8": 3.2}


def log2_binomial(n: int, k: int) -> float:
    return (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)) / math.log(2)


def entropy_bound_bits(state) -> tuple[float, dict[str, float]]:
    """Σ over layers of log2 C(n, nnz) + nnz·H(codes) + 32·k, plus raw tensors at 32 bits per element."""
    per_layer = {}
    total = 0.0
    for key, value in state.items():
        if key in ALEXNET_LAYERS.values():
            flat = value.numpy().ravel()
            nz = flat[flat != 0]
            _, counts = np.unique(nz, return_counts=True)
            p = counts / max(nz.size, 1)
            h = float(-(p * np.log2(p)).sum()) if nz.size else 0.0
            bits = log2_binomial(flat.size, nz.size) + nz.size * h + 32 * counts.size
            per_layer[key] = bits
            total += bits
        else:
            total += value.numel() * value.element_size() * 8
    return total, per_layer


def main() -> None:
    print("== 1000-class AlexNet, seeded random init (seed 0), --preset paper, 8/5 bits ==")
    state = alexcompress.random_model("alexnet", num_classes=1000, seed=0)
    q = alexcompress.compress(state, inplace=True).quantization.state
    encode_times, decode_times = [], []
    data = b""
    for _ in range(3):
        start = time.perf_counter()
        data = alexcompress.encode(q)
        encode_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        decoded, _ = alexcompress.decode(data)
        decode_times.append(time.perf_counter() - start)
    assert all(decoded[k].equal(q[k]) for k in q)
    bound, per_layer = entropy_bound_bits(q)
    header = parse_header(data)
    names = {key: name for name, key in ALEXNET_LAYERS.items()}
    print(
        f"{'layer':6} {'kept':>6} {'paper':>6} | {'w-bits+H':>8} {'paper':>5} | {'idx+H':>6} {'paper':>5} | "
        f"{'size':>7} {'paper':>6} | {'file B':>11} {'bound B':>11} {'file/bound':>10}"
    )
    for row, key in zip(layer_rows(header), per_layer):
        name = names[key]
        bound_bytes = per_layer[key] / 8
        print(
            f"{name:6} {row.kept:6.1%} {PAPER_KEEP_RATES[name]:6.0%} | {row.weight_bits_coded:8.2f} {PAPER_WBITS[name]:5.1f} | "
            f"{row.index_bits_huffman:6.2f} {PAPER_IBITS[name]:5.1f} | {row.size_file:7.2%} {PAPER_SIZE[name] / 100:6.2%} | "
            f"{row.bytes_file:11,} {bound_bytes:11,.0f} {row.bytes_file / bound_bytes:10.4f}"
        )
    print(
        f"file {len(data):,} bytes; memoryless entropy bound {bound / 8:,.0f} bytes; file/bound = {len(data) / (bound / 8):.4f} (target <= 1.02)"
    )
    original = sum(v.numel() * 4 for v in q.values())
    print(f"ratio vs float32 original: {original / len(data):.2f}x (paper, pretrained weights: 35x)")
    print(
        f"encode: median {statistics.median(encode_times):.2f} s, decode: median {statistics.median(decode_times):.2f} s (3 runs, in-process)"
    )

    print()
    print("== 10-class AlexNet (the seed's shape), global 90%, 5 bits: the real file vs the seed's accounting ==")
    from seed_reference import naive_compress

    state10 = alexcompress.random_model("alexnet", num_classes=10, seed=0)
    seed_figures = naive_compress({k: v.clone() for k, v in state10.items()}, sparsity=0.9, clusters=32)
    q10 = alexcompress.compress(
        state10, pruning=alexcompress.PruneSpec(sparsity=0.9), quantization=alexcompress.QuantizeSpec(bits=5), inplace=True
    ).quantization.state
    data10 = alexcompress.encode(q10)
    original10 = sum(v.numel() * 4 for v in q10.values())
    print(
        f"seed's accounting (sizes it never wrote): {seed_figures['huffman_bytes'] / 1e6:.3f} MB, {seed_figures['ratio']:.2f}x (its printout: 9.00x)"
    )
    print(
        f"alexcompress .dcz on disk:                {len(data10) / 1e6:.3f} MB, {original10 / len(data10):.2f}x "
        f"({seed_figures['huffman_bytes'] / len(data10):.2f}x smaller than the seed's figure)"
    )


if __name__ == "__main__":
    main()
