"""Stage 1: magnitude pruning. Small weights become exact zeros; biases and buffers are never touched.

Three ways to pick the threshold: one global percentile over every conv/fc weight (the seed's method),
per-layer keep rates (the paper's Table 4 via `preset="paper"`), or `scale * std(layer)` (Han et al. 2015).
Counts are exact: ties at the threshold are broken in flattened order, so the requested sparsity is met to
the weight, and the result is deterministic.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

import numpy as np

from .errors import AlexCompressError
from .models import PAPER_KEEP_RATES, is_compressible, layer_names, resolve_layer

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


def prune_global(
    state: Mapping[str, "torch.Tensor"], sparsity: float, *, arch: str = "alexnet", inplace: bool = False
) -> PruneResult:
    """Zero the `sparsity` fraction of smallest-magnitude weights, over all conv and fc layers together.

    >>> from alexcompress.models import random_model
    >>> result = prune_global(random_model(num_classes=10), 0.9)
    >>> round(result.sparsity, 6)
    0.9
    """
    _check_fraction("sparsity", sparsity, allow_one=False)
    out, keys = _prepare(state, inplace)
    flats = [_flat(out[k]) for k in keys]
    total = sum(f.size for f in flats)
    n_prune = int(round(sparsity * total))
    magnitudes = np.concatenate([np.abs(f) for f in flats])
    threshold = _kth_smallest(magnitudes, n_prune)
    del magnitudes
    below = [int(np.count_nonzero(np.abs(f) < threshold)) for f in flats] if n_prune else [0] * len(flats)
    ties_left = n_prune - sum(below)
    names = layer_names(arch, keys)
    layers = []
    for key, flat, n_below in zip(keys, flats, below):
        take_ties = 0
        if n_prune:
            n_ties = int(np.count_nonzero(np.abs(flat) == threshold))
            take_ties = min(n_ties, ties_left)
            ties_left -= take_ties
        _zero_smallest(flat, threshold if n_prune else None, take_ties)
        layers.append(LayerPruning(names[key], key, flat.size, int(np.count_nonzero(flat)), threshold))
    return PruneResult(out, layers, f"global sparsity {sparsity:g}")


def prune_by_rates(
    state: Mapping[str, "torch.Tensor"],
    keep_rates: Mapping[str, float],
    *,
    arch: str = "alexnet",
    inplace: bool = False,
) -> PruneResult:
    """Keep `keep_rates[layer]` of each named layer's weights (layers not named are left as they are).

    Layer names are the paper's conv1..fc8 for AlexNet, or state-dict prefixes such as `features.0`.
    """
    out, keys = _prepare(state, inplace)
    by_key = {}
    for name, rate in keep_rates.items():
        _check_fraction(f"keep rate of {name}", rate, allow_one=True)
        by_key[resolve_layer(arch, name, keys)] = rate
    names = layer_names(arch, keys)
    layers = []
    for key in keys:
        flat = _flat(out[key])
        threshold = 0.0
        if key in by_key:
            n_prune = flat.size - int(round(by_key[key] * flat.size))
            magnitudes = np.abs(flat)
            threshold = _kth_smallest(magnitudes, n_prune)
            n_below = int(np.count_nonzero(magnitudes < threshold))
            del magnitudes
            if n_prune:
                _zero_smallest(flat, threshold, n_prune - n_below)
        layers.append(LayerPruning(names[key], key, flat.size, int(np.count_nonzero(flat)), threshold))
    return PruneResult(out, layers, "per-layer keep rates")


def prune_paper(state: Mapping[str, "torch.Tensor"], *, inplace: bool = False) -> PruneResult:
    """The paper's Table 4 keep rates for AlexNet (conv1 84% ... fc6 9%, fc8 25%): 11% kept overall."""
    result = prune_by_rates(state, PAPER_KEEP_RATES, arch="alexnet", inplace=inplace)
    return PruneResult(result.state, result.layers, "paper preset (Table 4 keep rates)")


def prune_by_std(
    state: Mapping[str, "torch.Tensor"], scale: float, *, arch: str = "alexnet", inplace: bool = False
) -> PruneResult:
    """Prune |w| < scale * std(layer) in every layer: the threshold rule of Han et al. (NIPS 2015)."""
    if not np.isfinite(scale) or scale < 0:
        raise AlexCompressError(f"std scale must be a finite number >= 0, got {scale}")
    out, keys = _prepare(state, inplace)
    names = layer_names(arch, keys)
    layers = []
    for key in keys:
        flat = _flat(out[key])
        threshold = float(scale * flat.std(dtype=np.float64))
        flat[np.abs(flat) < threshold] = 0.0
        layers.append(LayerPruning(names[key], key, flat.size, int(np.count_nonzero(flat)), threshold))
    return PruneResult(out, layers, f"threshold {scale:g} x std per layer")


def parse_rates(text: str) -> dict[str, float]:
    """Parse `conv1=0.84,fc6=0.09` into a dict; a malformed item is an AlexCompressError."""
    rates: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            rates[name.strip()] = float(value)
        except ValueError:
            raise AlexCompressError(f"bad --rates item {item!r}: expected LAYER=KEEP_RATE, e.g. fc6=0.09") from None
    if not rates:
        raise AlexCompressError("--rates is empty: expected LAYER=KEEP_RATE items, e.g. conv1=0.84,fc6=0.09")
    return rates


# --------------------------------------------------------------------------------------------- helpers


def _prepare(state: Mapping[str, "torch.Tensor"], inplace: bool) -> tuple["OrderedDict[str, torch.Tensor]", list[str]]:
    import torch

    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, value in state.items():
        if is_compressible(key, value):
            if value.dtype != torch.float32:
                raise AlexCompressError(f"{key} is {value.dtype}; pruning works on float32 weights")
            value = value.detach().contiguous() if inplace else value.detach().clone().contiguous()
        out[key] = value
    keys = [k for k, v in out.items() if is_compressible(k, v)]
    for key in keys:
        if not np.isfinite(_flat(out[key])).all():
            raise AlexCompressError(f"{key} contains NaN or infinite weights")
    return out, keys


def _flat(tensor: "torch.Tensor") -> np.ndarray:
    """A writable flat numpy view sharing the tensor's memory."""
    return tensor.numpy().reshape(-1)


def _kth_smallest(values: np.ndarray, k: int) -> float:
    """The k-th smallest value (1-based), partitioning `values` in place; 0.0 when k == 0."""
    if k <= 0:
        return 0.0
    values.partition(k - 1)
    return float(values[k - 1])


def _zero_smallest(flat: np.ndarray, threshold: float | None, ties: int) -> None:
    """Zero every |w| < threshold, then the first `ties` weights with |w| == threshold."""
    if threshold is None:
        return
    magnitudes = np.abs(flat)
    flat[magnitudes < threshold] = 0.0
    if ties > 0:
        tie_positions = np.flatnonzero(magnitudes == threshold)[:ties]
        flat[tie_positions] = 0.0


def _check_fraction(what: str, value: float, *, allow_one: bool) -> None:
    upper_ok = value <= 1.0 if allow_one else value < 1.0
    if not (np.isfinite(value) and value >= 0.0 and upper_ok):
        interval = "[0, 1]" if allow_one else "[0, 1)"
        raise AlexCompressError(f"{what} must be in {interval}, got {value}")
