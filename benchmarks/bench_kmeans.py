"""Issue 2's comparison: the exact 1-D Lloyd k-means (`kmeans_1d`) against scikit-learn's KMeans on the
same data, same linear init, n_init=1, on every layer of the 1000-class AlexNet pruned with the paper's
rates (8 bits conv, 5 bits fc). Prints time and the k-means objective (sum of squared errors) of each.

    .venv/bin/python benchmarks/bench_kmeans.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' scikit-learn reference

import alexcompress  # noqa: E402
from alexcompress.compression.quantization import kmeans_1d  # noqa: E402
from alexcompress.models.alexnet import ALEXNET_LAYERS  # noqa: E402
from alexcompress.models.state import numpy_state  # noqa: E402
from tests.reference import kmeans_sklearn  # noqa: E402


def sse(values: np.ndarray, centroids: np.ndarray, labels: np.ndarray) -> float:
    return float(((values.astype(np.float64) - centroids[labels]) ** 2).sum())


def main() -> None:
    state = numpy_state(alexcompress.prune(alexcompress.random_model("alexnet", num_classes=1000, seed=0), inplace=True).state)
    keys = [k for k, v in state.items() if k.endswith(".weight")]
    names = {key: name for name, key in ALEXNET_LAYERS.items()}
    print(
        f"{'layer':6} {'nonzeros':>10} {'k':>4} | {'1-D Lloyd s':>11} {'sklearn s':>10} {'speed-up':>9} | {'SSE ratio (ours/sklearn)':>24}"
    )
    total_ours = total_theirs = 0.0
    for key in keys:
        values = state[key][state[key] != 0]
        k = 256 if state[key].ndim == 4 else 32
        start = time.perf_counter()
        c1, l1, _ = kmeans_1d(values, k)
        ours = time.perf_counter() - start
        start = time.perf_counter()
        c2, l2 = kmeans_sklearn(values, k)
        theirs = time.perf_counter() - start
        total_ours += ours
        total_theirs += theirs
        ratio = sse(values, c1, l1) / sse(values, c2, l2)
        print(f"{names[key]:6} {values.size:10,} {k:4} | {ours:11.3f} {theirs:10.3f} {theirs / ours:8.0f}x | {ratio:24.6f}")
    print(f"{'total':6} {'':>10} {'':>4} | {total_ours:11.3f} {total_theirs:10.3f} {total_theirs / total_ours:8.0f}x |")


if __name__ == "__main__":
    main()
