"""Sensitivity analysis and automatic per-layer allocation (what the paper did by hand for Table 4).

`measure` prunes (or quantizes) one layer at a time, leaving the others as they are, and records the
validation top-1 at each keep rate and each bit width (Han et al. 2015's Fig. 5, for any model) and how far
the model's predictions moved from the original's (the mean KL divergence over the validation images).
`allocate` then picks, per layer, a keep rate and a width from those curves and from a model of each
layer's *coded* size (what the `.dcz` spends on it after Huffman coding), to reach a compression ratio at
the least predicted damage, or the smallest file within an allowed top-1 drop.

The damage it ranks options by is the divergence, not the top-1 drop: on a model that over-fits, pruning a
layer alone often *raises* validation top-1 (it shrinks the over-confident logits), so the top-1 curves
read flat to 7% keep and an allocation built on them spends nothing where the layers then fail together
(measured on the Fashion-MNIST benchmark model at 114x: the layers' top-1 drops summed to 0.00 pp, and
the layers pruned and quantized together scored 21.3% before retraining, baseline 80.5%; ranked by
divergence, at the same ratio, 79.0%). The divergence counts every change of the predictions, and a gain
never. The prediction adds the layers' figures, which ignores how they interact and what retraining wins
back: a ranking, not a promise. `allocate_measured` replaces the sum by a measurement of all the layers
changed together, on validation images, along the same path (`prune --max-drop` with `--val`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from alexcompress.codec import huffman
from alexcompress.codec.encodings import DENSE_FROM
from alexcompress.compression.quantization import MAX_BITS, MIN_BITS
from alexcompress.errors import AlexCompressError
from alexcompress.models.archs import get_arch
from alexcompress.models.state import as_numpy, compressible_keys

if TYPE_CHECKING:
    import torch

KEEP_GRID = (1.0, 0.7, 0.5, 0.35, 0.25, 0.15, 0.1, 0.07, 0.05, 0.03, 0.02)
BITS_GRID = (8, 6, 5, 4, 3, 2)
FORMAT = "alexcompress-sensitivity-2"
FORMATS = ("alexcompress-sensitivity-1", FORMAT)  # version 1 had no divergence curves


@dataclass
class LayerCurve:
    key: str
    name: str  # the architecture's display name (conv1 ... fc8 for AlexNet)
    weights: int
    nonzero: int  # in the analysed model (a keep rate is a fraction of `weights`)
    keep: dict[float, float] = field(default_factory=dict)  # keep rate -> validation top-1
    bits: dict[int, float] = field(default_factory=dict)  # bit width -> validation top-1
    keep_kl: dict[float, float] = field(default_factory=dict)  # keep rate -> mean KL from the original (nats)
    bits_kl: dict[int, float] = field(default_factory=dict)  # bit width -> mean KL from the original (nats)


@dataclass
class Curves:
    arch: str
    baseline: float  # validation top-1 of the model as given
    samples: int
    layers: list[LayerCurve]
    raw_bytes: int = 0  # what the uncoded tensors (biases, norms) occupy in a .dcz
    seconds: float = 0.0

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, **asdict(self)}, indent=1)

    @classmethod
    def from_json(cls, text: "str | bytes", where: str) -> "Curves":
        """Curves from a file's text, every field checked for type and range (one line naming the field and
        the file otherwise): the file may come from anywhere."""
        from alexcompress import jsontext

        try:
            obj = jsontext.loads(text.encode("utf-8") if isinstance(text, str) else text, MAX_CURVES_NESTING)
        except ValueError as exc:
            raise AlexCompressError(f"{where}: not a sensitivity file written by 'alexcompress sensitivity --save' ({exc})") from None
        top = _Fields(obj, where)
        if top.obj.get("format") not in FORMATS:
            raise AlexCompressError(
                f"{where}: not a sensitivity file written by 'alexcompress sensitivity --save' (format is {top.obj.get('format')!r})"
            )
        rows = top.get("layers", list)
        if not 1 <= len(rows) <= MAX_CURVE_LAYERS:
            raise AlexCompressError(f"{where}: field 'layers' must list 1 to {MAX_CURVE_LAYERS} layers, got {len(rows)}")
        layers = []
        for i, row in enumerate(rows):
            f = _Fields(row, f"{where}: layers[{i}]")
            weights = f.number("weights", int, 1, MAX_CURVE_WEIGHTS)
            layer = LayerCurve(
                f.get("key", str),
                f.get("name", str),
                weights,
                f.number("nonzero", int, 0, weights),
                f.curve("keep", float, (0.0, 1.0), (0.0, 1.0)),
                f.curve("bits", int, (MIN_CURVE_BITS, MAX_CURVE_BITS), (0.0, 1.0)),
                f.curve("keep_kl", float, (0.0, 1.0), (0.0, math.inf), required=False),
                f.curve("bits_kl", int, (MIN_CURVE_BITS, MAX_CURVE_BITS), (0.0, math.inf), required=False),
            )
            if (layer.keep_kl or layer.bits_kl) and (set(layer.keep_kl) != set(layer.keep) or set(layer.bits_kl) != set(layer.bits)):
                raise AlexCompressError(f"{where}: layer {layer.key}'s divergence curves are not at its top-1 curves' points")
            layers.append(layer)
        return cls(
            top.get("arch", str),
            top.number("baseline", float, 0.0, 1.0),
            top.number("samples", int, 1, 1 << 40),
            layers,
            top.number("raw_bytes", int, 0, 1 << 50),
            top.number("seconds", float, 0.0, math.inf),
        )

    @property
    def has_divergence(self) -> bool:
        """Every layer carries divergence curves (files of version 1 carry none: allocation ranks by top-1 then)."""
        return all(layer.keep_kl and layer.bits_kl for layer in self.layers)


MAX_CURVES_BYTES = 1 << 22
MAX_CURVES_NESTING = 8  # the file nests 4 deep (layers, a layer, a curve)
MAX_CURVE_LAYERS = 100_000
MAX_CURVE_POINTS = 1_000  # per curve: a grid of ~10 is measured; the allocation's cost grows with the points
MAX_CURVE_WEIGHTS = 1 << 40
MIN_CURVE_BITS, MAX_CURVE_BITS = MIN_BITS, MAX_BITS  # the widths quantization takes


class _Fields:
    """Typed, range-checked access to one JSON object of a curves file, each failure one line naming the field."""

    def __init__(self, obj: Any, where: str) -> None:
        if not isinstance(obj, dict):
            raise AlexCompressError(f"{where}: expected an object, got {type(obj).__name__}")
        self.obj, self.where = obj, where

    def get(self, key: str, kind: type) -> Any:
        if key not in self.obj:
            raise AlexCompressError(f"{self.where}: field '{key}' is missing")
        value = self.obj[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise AlexCompressError(f"{self.where}: field '{key}' must be {_KINDS[kind]}, got {type(value).__name__}")
        return value

    def number(self, key: str, kind: type, low: float, high: float) -> Any:
        if key not in self.obj:
            raise AlexCompressError(f"{self.where}: field '{key}' is missing")
        return _in_range(self.obj[key], kind, low, high, f"{self.where}: field '{key}'")

    def curve(self, key: str, kind: type, points: "tuple[float, float]", values: "tuple[float, float]", required: bool = True) -> dict:
        if key not in self.obj and not required:
            return {}
        curve = self.get(key, dict)
        if (required and not curve) or len(curve) > MAX_CURVE_POINTS:
            raise AlexCompressError(f"{self.where}: field '{key}' must hold 1 to {MAX_CURVE_POINTS} points, got {len(curve)}")
        out = {}
        for point, value in curve.items():
            try:
                number = float(point) if kind is float else int(point)
            except ValueError:
                raise AlexCompressError(f"{self.where}: field '{key}' has a point {point[:20]!r} that is not a number") from None
            at = _in_range(number, kind, *points, f"{self.where}: field '{key}' point")
            out[at] = _in_range(value, float, *values, f"{self.where}: field '{key}' at {point}")
        return out


_KINDS = {int: "an integer", float: "a number", str: "a string", list: "a list", dict: "an object"}


def _in_range(value: Any, kind: type, low: float, high: float, what: str) -> Any:
    """`value` as `kind` (an int is a float too), finite and within [low, high]; one line naming `what` otherwise."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (kind is float or isinstance(value, int))
    if not ok:
        raise AlexCompressError(f"{what} must be {_KINDS[kind]}, got {type(value).__name__}")
    if not (math.isfinite(value) and low <= value <= high):
        raise AlexCompressError(f"{what} must be in [{low:g}, {high:g}], got {value!r}"[:200])
    return kind(value)


def nats(value: float) -> str:
    """A divergence in at most five characters, as the logs and tables print it: 0.283, 4e-05, 0.

    >>> nats(0.28312), nats(0.0000412), nats(0.0)
    ('0.283', '4e-05', '0')
    """
    return "0" if value == 0 else f"{value:.3f}" if value >= 0.001 else f"{value:.0e}"


def _prune_one(values: np.ndarray, keep: float) -> np.ndarray:
    from alexcompress.compression.pruning import prune_by_rates

    return as_numpy(prune_by_rates({"w": values.copy()}, {"w": keep}, arch="none", inplace=True).state["w"])


def _quantize_one(values: np.ndarray, bits: int) -> np.ndarray:
    from alexcompress.compression.quantization import quantize

    return as_numpy(quantize({"w": values.copy()}, bits=bits, arch="none", inplace=True).state["w"])


def measure(
    model: "torch.nn.Module",
    arch: str,
    score: Callable[["torch.nn.Module"], tuple[float, float, int]],
    *,
    keep_grid: Sequence[float] = KEEP_GRID,
    bits_grid: Sequence[int] = BITS_GRID,
    on_step: Optional[Callable[[str, str], None]] = None,
) -> Curves:
    """Each coded layer of `model` pruned alone to every keep rate, and quantized alone to every width,
    scored by `score(model) -> (top-1, KL from the model as given, samples)`; the layer is restored after
    each."""
    import time

    import torch

    started = time.perf_counter()
    state = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    architecture = get_arch(arch)
    keys = compressible_keys(state, arch)
    baseline, _, samples = score(model)
    tensors = {**dict(model.named_buffers()), **dict(model.named_parameters())}
    layers = []
    for key in keys:
        param = tensors[key]
        original = state[key].copy()
        curve = LayerCurve(key, architecture.display_name(key), int(original.size), int(np.count_nonzero(original)))
        for what, grid, change in (("keep", keep_grid, _prune_one), ("bits", bits_grid, _quantize_one)):
            for point in grid:
                with torch.no_grad():
                    param.copy_(torch.from_numpy(change(original, point)))
                top1, kl, _ = score(model)
                getattr(curve, what)[point] = top1
                getattr(curve, f"{what}_kl")[point] = kl
                if on_step:
                    on_step(curve.name, f"{what} {point}: top-1 {top1:.2%}, KL {nats(kl)}")
        with torch.no_grad():
            param.copy_(torch.from_numpy(original))
        layers.append(curve)
    raw = sum(int(v.nbytes) for k, v in state.items() if k not in set(keys))
    return Curves(arch, baseline, samples, layers, raw, time.perf_counter() - started)


def warning(curves: Curves) -> Optional[str]:
    """A warning when the curves cannot rank anything: the images score 100% as given and at (nearly) every
    point, as images the model was trained on do; an allocation built on them takes the narrowest widths
    everywhere (measured: 2 bits almost everywhere, then a -4.76 pp drop on held-out images)."""
    points = [v for layer in curves.layers for v in (*layer.keep.values(), *layer.bits.values())]
    if curves.baseline < 1.0 or not points or sum(v >= 1.0 for v in points) < 0.9 * len(points):
        return None
    return (
        f"warning: the {curves.samples:,} images score 100% as given and at {sum(v >= 1.0 for v in points) / len(points):.0%} of the "
        "curve points: images the model was trained on? Measure on images it has not seen, or nothing here can be ranked"
    )


# ------------------------------------------------------------------------------------------ allocation


def gap_bits(density: float) -> float:
    """Bits per nonzero of its Huffman-coded relative index, for nonzeros spread at `density`: the entropy
    of the geometric gap distribution (a Huffman code comes within a few hundredths of a bit of it at the
    widths `encode` picks), plus the filler entries' share.

    >>> round(gap_bits(0.09), 2), round(gap_bits(1.0), 2)
    (4.85, 0.0)
    """
    if density >= 1:
        return 0.0
    p = max(density, 1e-9)
    return (-(1 - p) * math.log2(1 - p) - p * math.log2(p)) / p


def coded_bytes(weights: int, keep: float, bits: int) -> int:
    """Predicted `.dcz` bytes of one layer at a keep rate and width, in the smaller of the writer's two
    encodings (as `encodings.encode_coded` picks): `sparse_huffman` (codes at `bits` each, gaps at
    `gap_bits`) or `dense_huffman` (a Huffman code per weight over the 2**bits values and zero), plus the
    codebook and the code tables. On a random-init AlexNet (uniform weights, so Huffman cannot shorten the
    codes) the file came out 0.7% larger than predicted; trained, bell-shaped weights code below `bits`
    (and ECSQ further below), so there the file is smaller than predicted.

    >>> coded_bytes(100_000, 1.0, 2) < 100_000 * 2.01 / 8  # kept whole: no index at all
    True
    """
    nnz = keep * weights
    sparse = nnz * (bits + gap_bits(keep))
    if keep >= DENSE_FROM:
        symbols = np.append(np.full(2**bits, max(1, round(nnz / 2**bits))), max(0, round(weights - nnz)))
        sparse = min(sparse, float((symbols * huffman.code_lengths(symbols)).sum()))
    return int(math.ceil(sparse / 8)) + 4 * 2**bits + 2**bits + 1 + 16 + 64


@dataclass(frozen=True)
class Allocation:
    rates: dict[str, float]  # key -> keep rate
    bits: dict[str, int]  # key -> width
    names: dict[str, str]  # key -> display name
    weights: dict[str, int]  # key -> weights in the layer the curves were measured on
    predicted_drop: float  # percentage points of validation top-1, summed over the layers
    predicted_bytes: int
    original_bytes: int
    predicted_kl: Optional[float] = None  # nats, summed over the layers (None: the curves carry no divergence)
    measured: Optional[tuple[float, float, int]] = None  # (top-1 as given, top-1 with every layer changed, images)
    real_ratio: Optional[float] = None  # of the file it makes (k-means at its widths), where that was measured (`specs.calibrate`)

    @property
    def measured_drop(self) -> Optional[float]:
        """Percentage points of validation top-1 lost with every layer pruned and quantized together,
        before retraining, where that was measured."""
        return None if self.measured is None else 100 * (self.measured[0] - self.measured[1])

    @property
    def predicted_ratio(self) -> float:
        return self.original_bytes / max(self.predicted_bytes, 1)

    def rates_option(self) -> str:
        """The `--rates` value that applies these keep rates."""
        return ",".join(f"{self.names[k]}={self.rates[k]:g}" for k in self.rates)

    def bits_option(self) -> str:
        """The `--layer-bits` value that applies these widths."""
        return ",".join(f"{self.names[k]}={self.bits[k]}" for k in self.bits)


BETWEEN = 3  # keep rates the allocation may choose between two measured ones


def _keep_points(layer: LayerCurve) -> list[tuple[float, float, float]]:
    """(keep, top-1, divergence) at every measured keep rate and at `BETWEEN` rates between each two
    neighbours (evenly spaced in log keep, figures interpolated linearly in log keep), so that a target
    ratio is met closely rather than overshot by a grid step of the largest layer (fc6 from 3% to 2% is
    a ninth of AlexNet's file). Linear interpolation over-states a convex curve, so an interpolated point
    never looks better than the measurements around it make it.

    >>> curve = LayerCurve("w", "w", 100, 100, {0.4: 0.9, 0.1: 0.5}, {8: 0.9}, {0.4: 0.0, 0.1: 0.8}, {8: 0.0})
    >>> [(k, round(t, 2), round(d, 2)) for k, t, d in _keep_points(curve)]
    [(0.4, 0.9, 0.0), (0.283, 0.8, 0.2), (0.2, 0.7, 0.4), (0.141, 0.6, 0.6), (0.1, 0.5, 0.8)]
    """
    measured = sorted(layer.keep, reverse=True)
    kl = layer.keep_kl or dict.fromkeys(measured, 0.0)
    points = [(measured[0], layer.keep[measured[0]], kl[measured[0]])]
    for high, low in zip(measured, measured[1:]):
        if low > 0:
            for i in range(1, BETWEEN + 1):
                t = i / (BETWEEN + 1)
                keep = float(f"{high * (low / high) ** t:.3g}")
                if low < keep < high:
                    f = math.log(high / keep) / math.log(high / low)
                    points.append((keep, (1 - f) * layer.keep[high] + f * layer.keep[low], (1 - f) * kl[high] + f * kl[low]))
        points.append((low, layer.keep[low], kl[low]))
    return points


def _options(layer: LayerCurve, baseline: float, divergence: bool) -> list[tuple[float, int, float, float, int]]:
    """(keep, bits, damage, predicted drop in pp, predicted bytes) for every keep rate of `_keep_points`
    and every measured width of a layer; the damage an allocation minimises is the divergence (nats) where
    the curves carry it, else the top-1 drop."""
    out = []
    for keep, top1_keep, kl_keep in _keep_points(layer):
        for bits, top1_bits in layer.bits.items():
            drop = round(100 * (max(0.0, baseline - top1_keep) + max(0.0, baseline - top1_bits)), 9)
            damage = kl_keep + layer.bits_kl[bits] if divergence else drop
            out.append((keep, bits, damage, drop, coded_bytes(layer.weights, keep, bits)))
    return out


class _Planner:
    """Every layer's options, and the path of Lagrangian choices through them as the price per byte rises."""

    def __init__(self, curves: Curves) -> None:
        self.curves, self.divergence = curves, curves.has_divergence
        self.options = {layer.key: _options(layer, curves.baseline, self.divergence) for layer in curves.layers}
        self.original = 4 * sum(layer.weights for layer in curves.layers) + curves.raw_bytes
        # per layer, (damage, bytes) as arrays: the hull walk in `path` is vectorised over a layer's options
        self._arrays = {key: (np.array([r[2] for r in rows]), np.array([r[4] for r in rows], float)) for key, rows in self.options.items()}

    def totals(self, choice: Mapping[str, tuple[float, int, float, float, int]]) -> tuple[float, int]:
        """(predicted top-1 drop in pp, predicted bytes) of a choice."""
        return sum(r[3] for r in choice.values()), sum(r[4] for r in choice.values()) + self.curves.raw_bytes

    def allocation(self, choice: Mapping[str, tuple[float, int, float, float, int]]) -> Allocation:
        drop, size = self.totals(choice)
        names = {layer.key: layer.name for layer in self.curves.layers}
        weights = {layer.key: layer.weights for layer in self.curves.layers}
        kl = sum(r[2] for r in choice.values()) if self.divergence else None
        rates, bits = {k: r[0] for k, r in choice.items()}, {k: r[1] for k, r in choice.items()}
        return Allocation(rates, bits, names, weights, drop, size, self.original, kl)

    def path(self) -> list[Allocation]:
        """Every allocation the price sweeps through, largest predicted file first (Shoham & Gersho's convex
        hull walk): each layer's choice moves along the lower convex hull of its (bytes, damage) options as
        the price rises, so the path is the layers' hull steps merged in order of the price at which each
        becomes worth it."""
        steps = []  # (price, order, layer key, option index)
        choice = {}
        for key, (damage, size) in self._arrays.items():
            least = damage == damage.min()  # price 0: the least damage, the smallest file among ties
            current = int(np.flatnonzero(least)[np.argmin(size[least])])
            choice[key] = self.options[key][current]
            order = 0
            while True:
                smaller = np.flatnonzero(size < size[current])
                if smaller.size == 0:
                    break
                slopes = (damage[smaller] - damage[current]) / (size[current] - size[smaller])
                best = smaller[slopes == slopes.min()]
                current = int(best[np.argmin(size[best])])
                steps.append((max(float(slopes.min()), 0.0), order, key, current))
                order += 1
        path = [self.allocation(choice)]
        steps.sort(key=lambda step: (step[0], step[1]))
        for i, (price, _, key, index) in enumerate(steps):
            choice = {**choice, key: self.options[key][index]}
            if i + 1 == len(steps) or steps[i + 1][0] > price:  # steps at one price land together
                path.append(self.allocation(choice))
        return path


def allocate(curves: Curves, *, target_ratio: Optional[float] = None, max_drop: Optional[float] = None) -> Allocation:
    """Per-layer keep rates and widths: the least predicted damage (divergence from the original, summed over
    the layers; top-1 drop for curves without it) whose predicted file reaches `target_ratio`, or the
    smallest predicted file along that path whose predicted top-1 drop stays within `max_drop` percentage
    points. The path is the Lagrangian sweep's (`_Planner.path`): for a price per byte, each layer takes its
    cheapest option in damage + price x bytes, and the price rises from zero."""
    if (target_ratio is None) == (max_drop is None):
        raise AlexCompressError("give a target ratio or a maximum accuracy drop (one of them)")
    if target_ratio is not None and not (math.isfinite(target_ratio) and target_ratio > 1):
        raise AlexCompressError(f"target ratio must be a number above 1, got {target_ratio}")
    if max_drop is not None:
        check_max_drop(max_drop)
    path = _Planner(curves).path()
    if target_ratio is not None:  # the first (least damage) allocation along the path that reaches the ratio
        for allocation in path:
            if allocation.predicted_ratio >= target_ratio:
                return allocation
        raise AlexCompressError(
            f"a ratio of {target_ratio:g}x is out of reach of these curves (at most {path[-1].predicted_ratio:.1f}x: "
            "measure smaller keep rates or widths with sensitivity --keep-grid/--bits-grid)"
        )
    within = [allocation for allocation in path if allocation.predicted_drop <= max_drop + 1e-9]
    if not within:
        raise AlexCompressError(f"no allocation keeps the predicted drop within {max_drop:g} pp")
    return within[-1]


def check_max_drop(max_drop: float) -> None:
    if not (math.isfinite(max_drop) and max_drop >= 0):
        raise AlexCompressError(f"maximum drop must be >= 0 percentage points, got {max_drop}")


def least_compression(curves: Curves) -> Allocation:
    """The first allocation along `allocate`'s path (the one `allocate_measured` tries first)."""
    return _Planner(curves).path()[0]


def allocate_measured(
    curves: Curves,
    max_drop: float,
    top1: Callable[[Optional[Allocation]], tuple[float, int]],
    *,
    on_probe: Optional[Callable[[Allocation, float], None]] = None,
) -> Allocation:
    """The smallest file along `allocate`'s path whose layers, all pruned and quantized together, lose at
    most `max_drop` percentage points of validation top-1 before retraining, as *measured* by
    `top1(allocation) -> (top-1, images)` (`top1(None)`: the model as given), not as the curves predict:
    the layers' drops do not add up (on an over-fitting model they can sum to nothing while the layers
    together lose half the accuracy). A binary search along the path, about ten evaluations, which takes the
    drop to grow as the file shrinks."""
    check_max_drop(max_drop)
    path = _Planner(curves).path()
    baseline, samples = top1(None)
    measured: dict[int, Allocation] = {}

    def drop(index: int) -> float:
        if index not in measured:
            score, _ = top1(path[index])
            measured[index] = dataclasses.replace(path[index], measured=(baseline, score, samples))
            if on_probe:
                on_probe(measured[index], 100 * (baseline - score))
        return measured[index].measured_drop  # type: ignore[return-value]

    if drop(0) > max_drop + 1e-9:
        raise AlexCompressError(
            f"even the least compression these curves offer loses {drop(0):.2f} pp together (more than {max_drop:g} pp)"
        )
    low, high = 0, len(path) - 1  # low: within the budget; the answer is in [low, high]
    if drop(high) <= max_drop + 1e-9:
        return measured[high]
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if drop(mid) <= max_drop + 1e-9 else (low, mid)
    return measured[low]


def jointly(state: Mapping[str, Any], allocation: Allocation) -> dict[str, Any]:
    """`state` with every allocated layer pruned to its keep rate and quantized (k-means) to its width, as
    `prune --rates` then `quantize --layer-bits` would before any retraining."""
    out = dict(state)
    for key, keep in allocation.rates.items():
        out[key] = _quantize_one(_prune_one(as_numpy(state[key]), keep), allocation.bits[key])
    return out


def read_curves(path: "str | os.PathLike[str]") -> Curves:
    where = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_CURVES_BYTES + 1)
    except OSError as exc:
        raise AlexCompressError(f"{where}: cannot read ({exc.strerror or exc})") from None
    if len(raw) > MAX_CURVES_BYTES:
        raise AlexCompressError(f"{where}: larger than {MAX_CURVES_BYTES >> 20} MB, not a sensitivity file (a few KB)")
    return Curves.from_json(raw, where)


def check_allocation(allocation: Allocation, state: Mapping[str, Any], arch: str) -> None:
    """The curves were measured on this model: the same coded layers, of the same sizes."""
    sizes = {k: int(np.prod(np.shape(state[k]))) for k in compressible_keys(state, arch)}
    if sizes != allocation.weights:
        differ = sorted(set(sizes) ^ set(allocation.weights) | {k for k in sizes if allocation.weights.get(k, sizes[k]) != sizes[k]})
        raise AlexCompressError(f"the curves were measured on another model (layers that differ: {', '.join(differ[:3])})")
