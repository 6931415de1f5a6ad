"""Stage 1: magnitude pruning. Small weights become exact zeros; biases and buffers are never touched.

Three ways to pick the threshold: one global percentile over every conv/fc weight (the seed's method),
per-layer keep rates (the paper's Table 4 via `preset="paper"`), or `scale * std(layer)` (Han et al. 2015).
Counts are exact: ties at the threshold are broken in flattened order, so the requested sparsity is met to
the weight, and the result is deterministic.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from alexcompress.errors import AlexCompressError
from alexcompress.models.architecture import Architecture
from alexcompress.models.archs import per_layer
from alexcompress.models.state import as_numpy, is_compressible, resolve_arch

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class LayerPruning:
    """What pruning did to one layer."""

    name: str
    key: str
    weights: int
    kept: int
    threshold: float  # weights with |w| below this were pruned (ties at it broken in flattened order)

    @property
    def kept_fraction(self) -> float:
        return self.kept / self.weights if self.weights else 0.0


@dataclass(frozen=True)
class PruneResult:
    state: "OrderedDict[str, torch.Tensor]"
    layers: list[LayerPruning]
    method: str

    @property
    def weights(self) -> int:
        return sum(layer.weights for layer in self.layers)

    @property
    def kept(self) -> int:
        return sum(layer.kept for layer in self.layers)

    @property
    def sparsity(self) -> float:
        return 1.0 - self.kept / self.weights if self.weights else 0.0


def prune_global(state: Mapping[str, "torch.Tensor"], sparsity: float, *, arch: str | None = None, inplace: bool = False) -> PruneResult:
    """Zero the `sparsity` fraction of smallest-magnitude weights, over all conv and fc layers together.

    >>> from alexcompress.models.state import random_model
    >>> result = prune_global(random_model(num_classes=10), 0.9)
    >>> round(result.sparsity, 6)
    0.9
    """
    check_fraction("sparsity", sparsity, allow_one=False, field="sparsity")
    architecture = resolve_arch(state, arch)
    out, keys = _prepare(state, architecture, inplace)
    flats = [_flat(out[k]) for k in keys]
    n_prune = int(round(sparsity * sum(f.size for f in flats)))
    threshold, below = _radix_select(flats, n_prune)
    ties_left = n_prune - below
    layers = []
    for key, flat in zip(keys, flats):
        if n_prune:
            ties_left -= _zero_smallest(flat, threshold, ties_left)
        layers.append(
            LayerPruning(architecture.display_name(key), key, flat.size, int(np.count_nonzero(flat)), threshold if n_prune else 0.0)
        )
    return PruneResult(out, layers, f"global sparsity {sparsity:g}")


def prune_by_rates(
    state: Mapping[str, "torch.Tensor"],
    keep_rates: Mapping[str, float],
    *,
    arch: str | None = None,
    inplace: bool = False,
    method: str = "per-layer keep rates",
) -> PruneResult:
    """Keep `keep_rates[layer]` of each named layer's weights (layers not named are left as they are).

    Layers are named by state-dict key (with or without `.weight`), by glob (`features.*`), or by the
    architecture's aliases (the paper's conv1..fc8 for AlexNet); a later pattern overrides an earlier one.
    """
    architecture = resolve_arch(state, arch)
    out, keys = _prepare(state, architecture, inplace)
    for name, rate in keep_rates.items():
        check_fraction(f"keep rate of {name}", rate, allow_one=True)
    by_key = per_layer(architecture, keep_rates, keys)
    layers = []
    for key in keys:
        flat = _flat(out[key])
        threshold = 0.0
        if key in by_key:
            n_prune = flat.size - int(round(by_key[key] * flat.size))
            if n_prune:
                threshold, below = _radix_select([flat], n_prune)
                _zero_smallest(flat, threshold, n_prune - below)
        layers.append(LayerPruning(architecture.display_name(key), key, flat.size, int(np.count_nonzero(flat)), threshold))
    return PruneResult(out, layers, method)


def prune_preset(
    state: Mapping[str, "torch.Tensor"], preset: str = "paper", *, arch: str | None = None, inplace: bool = False
) -> PruneResult:
    """An architecture's named keep-rate table; AlexNet's `paper` is Table 4 (conv1 84% ... fc6 9%)."""
    architecture = resolve_arch(state, arch)
    rates = architecture.presets.get(preset)
    if rates is None:
        have = ", ".join(architecture.presets) or "none"
        raise AlexCompressError(
            f"architecture {architecture.name} has no preset {preset!r} (its presets: {have}); give keep rates or a sparsity instead"
        )
    return prune_by_rates(state, rates, arch=architecture.name, inplace=inplace, method=f"preset {preset!r} keep rates")


def prune_paper(state: Mapping[str, "torch.Tensor"], *, inplace: bool = False) -> PruneResult:
    """The paper's Table 4 keep rates for AlexNet (conv1 84% ... fc6 9%, fc8 25%): 11% kept overall."""
    return prune_preset(state, "paper", arch="alexnet", inplace=inplace)


def prune_by_std(state: Mapping[str, "torch.Tensor"], scale: float, *, arch: str | None = None, inplace: bool = False) -> PruneResult:
    """Prune |w| < scale * std(layer) in every layer: the threshold rule of Han et al. (NIPS 2015)."""
    check_std_scale(scale)
    architecture = resolve_arch(state, arch)
    out, keys = _prepare(state, architecture, inplace)
    layers = []
    for key in keys:
        flat = _flat(out[key])
        threshold = float(scale * flat.std(dtype=np.float64))
        flat[np.abs(flat) < threshold] = 0.0
        layers.append(LayerPruning(architecture.display_name(key), key, flat.size, int(np.count_nonzero(flat)), threshold))
    return PruneResult(out, layers, f"threshold {scale:g} x std per layer")


# --------------------------------------------------------------------------------------------- helpers


def _prepare(state: Mapping[str, "torch.Tensor | np.ndarray"], arch: Architecture, inplace: bool) -> tuple["OrderedDict", list[str]]:
    """The output state (sharing or copying the input's weights) and its compressible keys, checked."""
    out: OrderedDict = OrderedDict()
    keys = []
    for key, value in state.items():
        if is_compressible(arch, key, value):
            keys.append(key)
            array = as_numpy(value)
            if array.dtype != np.float32:
                raise AlexCompressError(f"{key} is {value.dtype}; pruning works on float32 weights")
            if not inplace:
                value = value.copy() if isinstance(value, np.ndarray) else value.detach().clone()
            elif not array.flags.c_contiguous:
                raise AlexCompressError(f"{key} is not contiguous; cannot prune it in place")
        out[key] = value
    for key in keys:
        if not all(np.isfinite(chunk).all() for chunk in _chunks(_flat(out[key]))):
            raise AlexCompressError(f"{key} contains NaN or infinite weights")
    return out, keys


def _flat(tensor: "torch.Tensor | np.ndarray") -> np.ndarray:
    """A writable flat numpy view sharing the tensor's memory."""
    return as_numpy(tensor).reshape(-1)


_CHUNK = 1 << 22  # elements per pass: temporaries stay at a few tens of MB whatever the layer size


def _magnitude_bits(chunk: np.ndarray) -> np.ndarray:
    """|w| as uint32 bit patterns: for finite float32, integer order of these is the order of |w|."""
    return chunk.view(np.uint32) & np.uint32(0x7FFFFFFF)


def _chunks(flat: np.ndarray):
    """`flat` a chunk at a time: views of a float32 array, float32 copies of another dtype's (a half-precision
    source is read as it is, never widened whole)."""
    for start in range(0, flat.size, _CHUNK):
        chunk = flat[start : start + _CHUNK]
        yield chunk if chunk.dtype == np.float32 else chunk.astype(np.float32)


def _radix_select(flats: list[np.ndarray], k: int, after: Callable[[np.ndarray], None] = lambda flat: None) -> tuple[float, int]:
    """The k-th smallest |w| (1-based) over all arrays and how many |w| are strictly below it, by a
    two-pass radix select on the float bits: O(n), no sorting, and no copy of the weights (the seed's
    percentile copied all 228 MB). `after(flat)` follows each array's pass (a memory map drops its pages)."""
    threshold, below, _ = _radix_select_counting(flats, k, after)
    return threshold, below


def _radix_select_counting(
    flats: list[np.ndarray], k: int, after: Callable[[np.ndarray], None] = lambda flat: None
) -> tuple[float, int, list[int]]:
    """`_radix_select`, and how many |w| of each array equal the k-th (the second pass keeps the low bits
    of its bucket's weights, array by array: no third pass to count the ties)."""
    if k <= 0:
        return 0.0, 0, [0] * len(flats)
    high = np.zeros(1 << 16, dtype=np.int64)
    for flat in flats:
        for chunk in _chunks(flat):
            high += np.bincount(_magnitude_bits(chunk) >> 15, minlength=1 << 16)
        after(flat)
    cumulative = np.cumsum(high)
    top = int(np.searchsorted(cumulative, k))
    below = int(cumulative[top - 1]) if top else 0
    low = np.zeros(1 << 15, dtype=np.int64)
    members = []  # per array, the low bits of its weights in the bucket
    for flat in flats:
        mine = []
        for chunk in _chunks(flat):
            bits = _magnitude_bits(chunk)
            mine.append((bits[(bits >> 15) == top] & 0x7FFF).astype(np.uint16))
            low += np.bincount(mine[-1], minlength=1 << 15)
        members.append(np.concatenate(mine) if mine else np.zeros(0, np.uint16))
        after(flat)
    cumulative_low = np.cumsum(low)
    bottom = int(np.searchsorted(cumulative_low, k - below))
    below += int(cumulative_low[bottom - 1]) if bottom else 0
    equal = [int(np.count_nonzero(m == bottom)) for m in members]
    return float(np.array([(top << 15) | bottom], dtype=np.uint32).view(np.float32)[0]), below, equal


def _zero_smallest(flat: np.ndarray, threshold: float, ties: int) -> int:
    """Zero every |w| < threshold, then the first `ties` weights with |w| == threshold (in flattened
    order); returns how many ties were zeroed."""
    limit = _magnitude_bits(np.array([threshold], dtype=np.float32))[0]
    zeroed = 0
    for chunk in _chunks(flat):
        bits = _magnitude_bits(chunk)
        chunk[bits < limit] = 0.0
        if zeroed < ties:
            tie_positions = np.flatnonzero(bits == limit)[: ties - zeroed]
            chunk[tie_positions] = 0.0
            zeroed += tie_positions.size
    return zeroed


def check_fraction(what: str, value: float, *, allow_one: bool, field: str | None = None) -> None:
    """A sparsity (in [0, 1)) or a keep rate (in [0, 1]); `field` when `what` names a parameter."""
    upper_ok = value <= 1.0 if allow_one else value < 1.0
    if not (np.isfinite(value) and value >= 0.0 and upper_ok):
        interval = "[0, 1]" if allow_one else "[0, 1)"
        raise AlexCompressError(f"{what} must be in {interval}, got {value}", field=field)


def check_std_scale(scale: float) -> None:
    if not np.isfinite(scale) or scale < 0:
        raise AlexCompressError(f"std_scale must be a finite number >= 0, got {scale}", field="std_scale")
