"""The naive pipeline this project grew from (../shared/seed/), kept as the baseline to measure against.

One global magnitude percentile, one scikit-learn KMeans(n_clusters=32) over every nonzero weight, a
pure-Python heapq Huffman code, and 32-bit absolute indices. Unlike the seed, it really produces the byte
streams it accounts for (so timing it is fair), but it writes no container: its "size" is the seed's sum.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter

import numpy as np


def huffman_code(frequencies: dict[int, int]) -> dict[int, str]:
    """Textbook heapq Huffman: code strings per symbol."""
    tie = itertools.count()
    heap = [[freq, next(tie), [[symbol, ""]]] for symbol, freq in frequencies.items()]
    heapq.heapify(heap)
    if len(heap) == 1:
        return {heap[0][2][0][0]: "0"}
    while len(heap) > 1:
        low = heapq.heappop(heap)
        high = heapq.heappop(heap)
        for pair in low[2]:
            pair[1] = "0" + pair[1]
        for pair in high[2]:
            pair[1] = "1" + pair[1]
        heapq.heappush(heap, [low[0] + high[0], next(tie), low[2] + high[2]])
    return {symbol: code for symbol, code in heap[0][2]}


def naive_compress(state, sparsity: float = 0.9, clusters: int = 32, seed: int = 0) -> dict[str, float]:
    """Run the seed's three stages on a state dict (float32 numpy-convertible tensors); return its sizes."""
    from sklearn.cluster import KMeans

    weights = {k: v.numpy().copy() for k, v in state.items() if k.endswith(".weight") and v.dim() >= 2}
    total_params = sum(v.numel() for v in state.values())
    everything = np.concatenate([np.abs(w).ravel() for w in weights.values()])
    threshold = np.percentile(everything, sparsity * 100)
    del everything
    positions, values = [], []
    for w in weights.values():
        flat = w.ravel()
        flat[np.abs(flat) < threshold] = 0
        nz = np.flatnonzero(flat)
        positions.append(nz.astype(np.int32))  # 32-bit absolute indices
        values.append(flat[nz])
    values_all = np.concatenate(values)
    kmeans = KMeans(n_clusters=clusters, random_state=seed, n_init=1).fit(values_all.reshape(-1, 1))
    labels = kmeans.labels_
    code = huffman_code(dict(Counter(labels.tolist())))
    bitstring = "".join(code[s] for s in labels.tolist())
    payload = int(bitstring, 2).to_bytes((len(bitstring) + 7) // 8, "big") if bitstring else b""
    index_bytes = b"".join(p.tobytes() for p in positions)
    nnz = values_all.size
    original = total_params * 32
    return {
        "nnz": nnz,
        "original_bytes": original / 8,
        "pruned_bytes": nnz * 64 / 8,
        "fixed_bytes": (nnz * np.log2(clusters) + clusters * 32 + nnz * 32) / 8,
        "huffman_bytes": (len(bitstring) + clusters * 32 + nnz * 32) / 8,
        "ratio": original / (len(bitstring) + clusters * 32 + nnz * 32),
        "streams_bytes": len(payload) + len(index_bytes),
    }


if __name__ == "__main__":
    import sys

    import torch
    import torchvision  # noqa: F401  (the seed imported it; decode pays for it too)

    state = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
    result = naive_compress(state)
    for key, value in result.items():
        print(f"{key:>16}: {value:,.2f}")
