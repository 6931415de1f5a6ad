"""Stage 2: weight sharing. Per layer, 1-D k-means over the nonzero weights; each weight becomes its centroid.

The output is still a plain state dict: every layer's nonzeros take at most 2**bits distinct float32 values,
pruned zeros stay exactly zero, and no centroid is 0.0 (it would silently prune weights). The k-means is an
exact Lloyd iteration exploiting 1-D structure: on sorted values the clusters are contiguous runs split at
the midpoints between centroids, so one iteration is a `searchsorted` plus prefix sums, O(k log n).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from alexcompress.codec.sparse_index import PIECE, flat_nonzero, gather, rank
from alexcompress.errors import AlexCompressError
from alexcompress.models.archs import per_layer
from alexcompress.models.state import as_numpy, is_compressible, resolve_arch

if TYPE_CHECKING:
    import torch

INITS: tuple[str, ...] = ("linear", "density", "random")
MIN_BITS, MAX_BITS = 1, 8


@dataclass(frozen=True)
class LayerQuantization:
    name: str
    key: str
    bits: int
    nonzeros: int
    clusters: int  # distinct nonzero values after quantization (<= 2**bits)
    mean_abs_error: float  # over the nonzero weights
    iterations: int


@dataclass(frozen=True)
class QuantizeResult:
    state: "OrderedDict[str, torch.Tensor]"
    layers: list[LayerQuantization]
    method: str = "per-layer k-means"  # what the report's title says was done


def initial_centroids(sorted_values: np.ndarray, k: int, init: str, seed: int = 0) -> np.ndarray:
    """k starting centroids: linear (evenly spaced min..max), density (evenly spaced on the CDF), random."""
    n = sorted_values.size
    if init == "linear":
        return _linear_over_support(sorted_values, k)
    if init == "density":
        return sorted_values[np.minimum(((np.arange(k) + 0.5) / k * n).astype(np.int64), n - 1)].astype(np.float64)
    if init == "random":  # Forgy: k distinct weights chosen at random
        rng = np.random.default_rng(seed)
        return np.sort(sorted_values[rng.choice(n, size=min(k, n), replace=False)]).astype(np.float64)
    raise AlexCompressError(f"unknown init {init!r}; choose one of {', '.join(INITS)}")


def _linear_over_support(v: np.ndarray, k: int) -> np.ndarray:
    """Evenly spaced from min to max, skipping the empty band that pruning leaves around zero.

    The paper spaces centroids over [min, max]. After pruning, the band (-t, t) holds no weights, and every
    centroid placed there stays empty (at 90% pruning, ~90% of the codebook). Spacing the same k centroids
    evenly over the two occupied intervals keeps linear's virtue (rare large weights are represented) and
    uses the whole codebook. Without a band (unpruned weights) this is exactly the paper's linear init.
    """
    first_zero, first_positive = np.searchsorted(v, v.dtype.type(0), side="left"), np.searchsorted(v, v.dtype.type(0), side="right")
    negative, positive = v[:first_zero], v[first_positive:]  # v is sorted: views, not copies
    if negative.size == 0 or positive.size == 0 or first_positive > first_zero:
        return np.linspace(v[0], v[-1], k)
    width_neg = float(negative[-1] - negative[0])
    width_pos = float(positive[-1] - positive[0])
    k_neg = int(round(k * width_neg / (width_neg + width_pos))) if width_neg + width_pos > 0 else k // 2
    k_neg = min(max(k_neg, 1), k - 1)
    return np.concatenate((np.linspace(negative[0], negative[-1], k_neg), np.linspace(positive[0], positive[-1], k - k_neg)))


def kmeans_1d(
    values: np.ndarray, k: int, *, init: str = "linear", seed: int = 0, max_iter: int = 1000, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, int]:
    """Exact Lloyd k-means on 1-D data. Returns (sorted float64 centroids, labels, iterations).

    Iterates until no assignment changes (Lloyd's fixed point) or `max_iter`. Empty clusters keep their
    centroid. With at most k distinct values, each distinct value is its own centroid (no error). Positive
    `weights` (one per value: an importance, see `alexcompress.compression.importance`) make each centroid the weighted
    mean of its cluster (Choi et al.'s Hessian-weighted k-means); the assignment stays the nearest centroid.

    >>> c, labels, _ = kmeans_1d(np.array([0.1, 0.11, 0.9, 1.0]), 2)
    >>> np.round(c, 3).tolist(), labels.tolist()
    ([0.105, 0.95], [0, 0, 1, 1])
    >>> c, _, _ = kmeans_1d(np.array([0.1, 0.11, 0.9, 1.0]), 2, weights=np.array([1, 1, 9, 1]))
    >>> np.round(c, 3).tolist()
    [0.105, 0.91]
    """
    x = np.asarray(values).reshape(-1)
    if x.size == 0:
        return np.empty(0), np.empty(0, dtype=np.int64), 0
    if weights is None:
        v = np.sort(x)  # in the input's precision (float32 sorts twice as fast); sums below are float64
        mass = None
    else:
        order = np.argsort(x, kind="stable")
        v, w = x[order], np.asarray(weights, dtype=np.float64).reshape(-1)[order]
        mass = np.concatenate(([0.0], np.cumsum(w)))
    if _distinct_in_sorted(v) <= k:
        distinct = v[np.concatenate(([True], v[1:] != v[:-1]))].astype(np.float64)  # at most k values
        return distinct, rank(distinct, x), 0
    centroids = np.unique(initial_centroids(v, k, init, seed).astype(np.float64))
    prefix = _prefix_sums(v if mass is None else w * v)
    ends = None
    iterations = 0
    for iterations in range(1, max_iter + 1):
        boundaries = (centroids[:-1] + centroids[1:]) / 2
        new_ends = np.concatenate(([0], np.searchsorted(v, boundaries.astype(v.dtype), side="right"), [v.size]))
        if ends is not None and np.array_equal(new_ends, ends):
            break
        ends = new_ends
        counts = np.diff(ends) if mass is None else mass[ends[1:]] - mass[ends[:-1]]
        sums = prefix[ends[1:]] - prefix[ends[:-1]]
        filled = np.diff(ends) > 0
        centroids = np.where(filled, sums / np.where(filled, counts, 1), centroids)
        centroids = np.unique(centroids)  # merged or crossed centroids collapse; keeps them sorted
    boundaries = (centroids[:-1] + centroids[1:]) / 2
    # the same rule as the segments above: a value equal to a (rounded) boundary joins the lower cluster
    return centroids, rank(boundaries.astype(x.dtype), x), iterations


def _distinct_in_sorted(v: np.ndarray) -> int:
    """How many distinct values sorted `v` holds, a piece at a time."""
    changes = 0
    for start in range(0, v.size - 1, PIECE):
        stop = min(start + PIECE, v.size - 1)
        changes += int(np.count_nonzero(v[start + 1 : stop + 1] != v[start:stop]))
    return changes + 1 if v.size else 0


def _prefix_sums(values: np.ndarray) -> np.ndarray:
    """0 and the running float64 sums of `values` (n + 1 entries): `np.cumsum` a piece at a time, each
    continuing from the last sum (the same additions in the same order, without a float64 copy of them all)."""
    out = np.empty(values.size + 1, dtype=np.float64)
    out[0] = 0.0
    for start in range(0, values.size, PIECE):
        stop = min(start + PIECE, values.size)
        out[start + 1 : stop + 1] = values[start:stop]
        np.cumsum(out[start : stop + 1], out=out[start : stop + 1])
    return out


def ecsq_1d(
    values: np.ndarray,
    k: int,
    *,
    rate_weight: float = 0.05,
    init: str = "linear",
    seed: int = 0,
    max_iter: int = 200,
    weights: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Entropy-constrained scalar quantization (Chou, Lookabaugh & Gray 1989; Choi et al. 2017): at most k
    centroids minimising  mean (w - c)^2 / var(w) + rate_weight * (Huffman code length of c, in bits).

    Starts from k-means; then alternates (1) assignment by the lower envelope of the k cost parabolas
    (exact in 1-D: each centroid wins one interval, some none), (2) centroids to the mean of their interval,
    (3) code lengths -log2(count / n), the information content the Huffman coder approaches within a
    fraction of a bit (Huffman's own integer lengths are too coarse to steer single weights: a value whose
    length equals its neighbour's never moves). Clusters that lose all their weights are dropped, so more
    weights fall on fewer, cheaper codes. `rate_weight` 0 is k-means. Returns (sorted float64 centroids,
    labels, iterations), like `kmeans_1d`.

    With positive `weights` (importances of mean 1, `alexcompress.compression.importance`) the error term of each value
    is multiplied by its weight (Choi et al. 2017): an important weight keeps its own code where an
    unimportant one is pushed onto a cheap code. The clusters are then no longer intervals; assignment is an
    argmin over the k centroids per value (`_weighted_ecsq`).

    >>> x = np.concatenate([np.full(90, 0.1), np.full(9, 0.5), [0.52]])
    >>> c, labels, _ = ecsq_1d(x, 4, rate_weight=0.0)
    >>> c.size
    3
    >>> c, labels, _ = ecsq_1d(x, 4, rate_weight=1.0)   # the rare value joins its neighbour
    >>> c.size, np.bincount(labels).tolist()
    (2, [90, 10])
    """
    centroids, labels, _ = kmeans_1d(values, k, init=init, seed=seed, weights=weights)
    x = np.asarray(values).reshape(-1)
    if centroids.size <= 1 or rate_weight <= 0:
        return centroids, labels, 0
    if weights is not None:
        return _weighted_ecsq(x, np.asarray(weights, dtype=np.float64).reshape(-1), centroids, labels, rate_weight, max_iter)
    v = np.sort(x).astype(np.float64)
    prefix = _prefix_sums(v)
    lam = rate_weight * float(v.var()) if v.var() > 0 else 0.0
    boundaries = (centroids[:-1] + centroids[1:]) / 2
    ends = np.concatenate(([0], np.searchsorted(v, boundaries, side="right"), [v.size]))
    iterations = 0
    for iterations in range(1, max_iter + 1):
        counts = np.diff(ends)
        keep = counts > 0
        centroids, counts, ends = centroids[keep], counts[keep], np.concatenate(([0], ends[1:][keep]))
        centroids = (prefix[ends[1:]] - prefix[ends[:-1]]) / counts
        boundaries, winners = _envelope(centroids, lam * _information(counts))
        centroids = centroids[winners]
        new_ends = np.concatenate(([0], np.searchsorted(v, boundaries, side="right"), [v.size]))
        if new_ends.size == ends.size and np.array_equal(new_ends, ends):
            break
        ends = new_ends
    # the last envelope's winners and boundaries belong together; at convergence the centroids are the
    # means of the partition those boundaries make
    return centroids, rank(boundaries, x), iterations


#: values per block of the weighted assignment (a block × k float64 cost matrix at a time)
_BLOCK = 1 << 18


def _weighted_ecsq(
    x: np.ndarray, h: np.ndarray, centroids: np.ndarray, labels: np.ndarray, rate_weight: float, max_iter: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """ECSQ with per-value error weights h: alternate the argmin of h (x - c)^2 + lam * length over the
    centroids (blockwise), weighted means, and code lengths from the counts; empty clusters drop out."""
    v = x.astype(np.float64)
    lam = rate_weight * float(v.var()) if v.var() > 0 else 0.0
    iterations = 0
    for iterations in range(1, max_iter + 1):
        counts = np.bincount(labels, minlength=centroids.size)
        used = np.flatnonzero(counts)
        remap = np.cumsum(counts > 0) - 1
        labels, counts = remap[labels], counts[used]
        mass = np.bincount(labels, weights=h, minlength=used.size)
        centroids = np.bincount(labels, weights=h * v, minlength=used.size) / mass
        penalty = lam * _information(counts)
        new = np.empty_like(labels)
        for start in range(0, v.size, _BLOCK):
            block = slice(start, start + _BLOCK)
            cost = h[block, None] * (v[block, None] - centroids[None, :]) ** 2 + penalty[None, :]
            new[block] = cost.argmin(axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
    # sorted centroids, labels renumbered to match (the callers' contract); unused ones dropped
    counts = np.bincount(labels, minlength=centroids.size)
    used = np.flatnonzero(counts)
    order = used[np.argsort(centroids[used], kind="stable")]
    rank = np.empty(centroids.size, dtype=np.int64)
    rank[order] = np.arange(order.size)
    return centroids[order], rank[labels], iterations


def _information(counts: np.ndarray) -> np.ndarray:
    return -np.log2(counts / counts.sum())


def _envelope(centroids: np.ndarray, penalty: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The minimum over j of (w - c_j)^2 + penalty_j along w: which centroids win an interval (indices, in
    order) and the boundaries between consecutive winners. Expanding the square, it is the lower envelope of
    the lines -2 c_j w + (c_j^2 + penalty_j): a convex-hull pass over centroids sorted ascending."""
    hull: list[int] = []
    starts: list[float] = []  # where each hull line starts to win
    for j in range(centroids.size):
        while hull:
            i = hull[-1]
            # line j (larger c) beats line i for w above this point
            cross = (centroids[j] ** 2 + penalty[j] - centroids[i] ** 2 - penalty[i]) / (2 * (centroids[j] - centroids[i]))
            if cross <= starts[-1]:
                hull.pop()
                starts.pop()
                continue
            break
        starts.append(-np.inf if not hull else cross)
        hull.append(j)
    return np.asarray(starts[1:], dtype=np.float64), np.asarray(hull, dtype=np.int64)


#: 1-D quantizers by name: (values, k, init=, seed=, rate_weight=, weights=) -> (sorted centroids, labels,
#: iterations); `weights` are per-value importances or None
QUANTIZERS = {
    "kmeans": lambda values, k, *, init, seed, rate_weight, weights=None: kmeans_1d(values, k, init=init, seed=seed, weights=weights),
    "ecsq": ecsq_1d,
}


def centroids_to_float32(centroids: np.ndarray) -> np.ndarray:
    """float32 centroids with exact zeros moved to the smallest normal float32 of the same sign."""
    c32 = centroids.astype(np.float32)
    zero = c32 == 0
    if zero.any():
        c32[zero] = np.copysign(np.finfo(np.float32).tiny, centroids[zero]).astype(np.float32)
    return c32


def check_bits(what: str, bits: int) -> None:
    if not MIN_BITS <= bits <= MAX_BITS:
        raise AlexCompressError(f"{what} must be between {MIN_BITS} and {MAX_BITS} (2 to 256 clusters), got {bits}")


def quantize(
    state: Mapping[str, "torch.Tensor"],
    *,
    conv_bits: int = 8,
    fc_bits: int = 5,
    bits: int | None = None,
    layer_bits: Mapping[str, int] | None = None,
    init: str = "linear",
    seed: int = 0,
    shared_codebook: bool = False,
    quantizer: str = "kmeans",
    rate_weight: float = 0.002,
    importance: Mapping[str, np.ndarray] | None = None,
    arch: str | None = None,
    inplace: bool = False,
) -> QuantizeResult:
    """Per-layer k-means weight sharing (conv layers `conv_bits`, fc layers `fc_bits`; `bits` sets both;
    `layer_bits` maps layer names or globs to their own width and wins over both).

    With `shared_codebook`, one codebook of 2**bits (default `fc_bits`) centroids serves every layer, as
    in the seed script. `quantizer` names an entry of QUANTIZERS: `kmeans` (the paper), or `ecsq`, which
    also weighs each code's length (`rate_weight`, see `ecsq_1d`) and so leaves a smaller file.
    `importance` ({key: positive array of the weight's shape}, `alexcompress.compression.importance`) weighs each
    weight's squared error in either quantizer.

    >>> from alexcompress.models.state import random_model
    >>> from alexcompress.compression.pruning import prune_global
    >>> q = quantize(prune_global(random_model(num_classes=10), 0.9).state, bits=4)
    >>> max(layer.clusters for layer in q.layers) <= 16
    True
    """
    if bits is not None:
        check_bits("bits", bits)
        conv_bits = fc_bits = bits
    check_bits("conv_bits", conv_bits)
    check_bits("fc_bits", fc_bits)
    for name, value in (layer_bits or {}).items():
        check_bits(f"bits of {name}", value)
    architecture = resolve_arch(state, arch)
    if init not in INITS:
        raise AlexCompressError(f"unknown init {init!r}; choose one of {', '.join(INITS)}")
    if quantizer not in QUANTIZERS:
        raise AlexCompressError(f"unknown quantizer {quantizer!r}; choose one of {', '.join(QUANTIZERS)}")
    if not (np.isfinite(rate_weight) and 0 <= rate_weight <= 100):
        raise AlexCompressError(f"rate weight must be between 0 and 100, got {rate_weight}")
    fit = QUANTIZERS[quantizer]
    out: OrderedDict = OrderedDict()
    keys = []
    for key, value in state.items():
        if is_compressible(architecture, key, value):
            if as_numpy(value).dtype != np.float32:
                raise AlexCompressError(f"{key} is {value.dtype}; quantization works on float32 weights")
            if not inplace:
                value = value.copy() if isinstance(value, np.ndarray) else value.detach().clone()
            keys.append(key)
        out[key] = value
    flats = {key: as_numpy(out[key]).reshape(-1) for key in keys}
    for key in keys:
        if not all(np.isfinite(flats[key][start : start + PIECE]).all() for start in range(0, flats[key].size, PIECE)):
            raise AlexCompressError(f"{key} contains NaN or infinite weights")
    nonzero = {key: flat_nonzero(flats[key]) for key in keys}  # int32 where the layer allows
    weights = {key: None for key in keys}
    for key in keys if importance is not None else ():
        if key not in importance:
            raise AlexCompressError(f"importance: no values for {key}")
        h = np.asarray(importance[key], dtype=np.float32).reshape(-1)
        if h.size != flats[key].size:
            raise AlexCompressError(f"importance of {key}: {h.size} values for {flats[key].size} weights")
        weights[key] = gather(h, nonzero[key])
        if not (np.isfinite(weights[key]).all() and (weights[key] > 0).all()):
            raise AlexCompressError(f"importance of {key} must be finite and positive")
    widths = {key: conv_bits if len(out[key].shape) > 2 else fc_bits for key in keys}
    widths.update(per_layer(architecture, layer_bits or {}, keys))

    fits: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}
    if shared_codebook:
        shared_bits = bits if bits is not None else fc_bits
        everything = np.concatenate([gather(flats[k], nonzero[k]) for k in keys]) if keys else np.empty(0, np.float32)
        together = None if importance is None else np.concatenate([weights[k] for k in keys] or [np.empty(0, np.float32)])
        centroids, labels, iters = fit(everything, 2**shared_bits, init=init, seed=seed, rate_weight=rate_weight, weights=together)
        start = 0
        for key in keys:
            n = nonzero[key].size
            fits[key] = (centroids, labels[start : start + n], iters)
            widths[key] = shared_bits
            start += n
    else:
        from alexcompress.parallel import ordered_map

        def fit_layer(key: str) -> tuple[np.ndarray, np.ndarray, int]:
            values = gather(flats[key], nonzero[key])
            return fit(values, 2 ** widths[key], init=init, seed=seed, rate_weight=rate_weight, weights=weights[key])

        fits = dict(zip(keys, ordered_map(fit_layer, keys), strict=True))  # each layer seeded alike: any --jobs, same result

    layers = []
    for key in keys:
        flat, where = flats[key], nonzero[key]
        flat += np.float32(0)  # -0.0 becomes +0.0 (and nothing else changes): zeros are zeros, and encode stays bit-exact
        centroids, labels, iters = fits[key]
        codebook = centroids_to_float32(centroids)
        total = 0.0
        for start in range(0, where.size, PIECE):  # each weight to its centroid, a piece at a time
            at, new_values = where[start : start + PIECE], codebook[labels[start : start + PIECE]]
            total += float(np.abs(flat[at] - new_values).sum(dtype=np.float64))
            flat[at] = new_values
        error = total / where.size if where.size else 0.0
        clusters = int(np.unique(codebook[np.bincount(labels, minlength=codebook.size) > 0]).size)
        layers.append(LayerQuantization(architecture.display_name(key), key, widths[key], int(where.size), clusters, error, iters))
    return QuantizeResult(out, layers, method_title(quantizer, rate_weight) + (", one shared codebook" if shared_codebook else ""))


def method_title(quantizer: str, rate_weight: float) -> str:
    """What a quantization's report calls it."""
    return "per-layer k-means" if quantizer == "kmeans" else f"per-layer ECSQ (rate weight {rate_weight:g})"
