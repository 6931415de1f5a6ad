"""The whole pipeline as library calls with typed options: prune (one spec, four methods), quantize,
encode (`compress`), and the iterative prune-retrain schedule. The CLI only parses options into these specs.

>>> from alexcompress.models.state import random_model
>>> result = compress(random_model("alexnet", num_classes=10), pruning=PruneSpec(sparsity=0.9))
>>> result.arch, round(result.pruning.sparsity, 3), result.ratio > 20
('alexnet', 0.9, True)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Optional

from alexcompress.compression.pruning import (
    PruneResult,
    check_fraction,
    check_std_scale,
    prune_by_rates,
    prune_by_std,
    prune_global,
    prune_preset,
)
from alexcompress.compression.quantization import QuantizeResult, quantize
from alexcompress.errors import AlexCompressError
from alexcompress.models.state import resolve_arch

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch.utils.data import Dataset

    from alexcompress.codec.container import DczHeader
    from alexcompress.train.config import TrainConfig
    from alexcompress.train.log import TrainingLog

DEFAULT_SPARSITY = 0.9


def parse_assignments(text: str, what: str, convert: Callable[[str], Any]) -> dict[str, Any]:
    """`conv1=0.84,features.*=0.4` -> {"conv1": 0.84, "features.*": 0.4}, or a one-line error."""
    out: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            out[name.strip()] = convert(value.strip())
        except ValueError:
            raise AlexCompressError(
                f"bad {what} item {item!r}: expected LAYER=VALUE, e.g. fc6={'0.09' if convert is float else '4'}"
            ) from None
    if not out:
        raise AlexCompressError(f"{what} is empty: expected LAYER=VALUE items, e.g. conv1=0.84,fc6=0.09")
    return out


@dataclass(frozen=True)
class PruneSpec:
    """How to prune: exactly one of a global `sparsity`, per-layer keep `rates` ({layer or glob: rate}),
    an architecture `preset` ("paper" for AlexNet), or `std_scale` (|w| < scale * std per layer). All
    None: the architecture's `paper` preset where it has one, else sparsity 0.9."""

    sparsity: Optional[float] = None
    rates: Optional[Mapping[str, float]] = None
    preset: Optional[str] = None
    std_scale: Optional[float] = None

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.sparsity, self.rates, self.preset, self.std_scale)) > 1:
            raise AlexCompressError("give only one pruning method: sparsity, keep rates, a preset, or a std scale")
        if self.sparsity is not None:
            check_fraction("sparsity", self.sparsity, allow_one=False, field="sparsity")
        if self.std_scale is not None:
            check_std_scale(self.std_scale)
        for name, rate in (self.rates or {}).items():
            check_fraction(f"keep rate of {name}", rate, allow_one=True)

    def resolved(self, arch: Any) -> "PruneSpec":
        """This spec with the default filled in for `arch` (an Architecture)."""
        if any(x is not None for x in (self.sparsity, self.rates, self.preset, self.std_scale)):
            return self
        return PruneSpec(preset="paper") if "paper" in arch.presets else PruneSpec(sparsity=DEFAULT_SPARSITY)

    def step(self, r: int, rounds: int, arch: Any) -> "PruneSpec":
        """Round r (1..rounds) of an iterative schedule reaching this spec: the kept fraction of every layer
        shrinks geometrically, keep_r = keep ** (r / rounds)."""
        spec = self.resolved(arch)
        fraction = r / rounds
        if spec.sparsity is not None:
            return PruneSpec(sparsity=1 - (1 - spec.sparsity) ** fraction)
        if spec.std_scale is not None:
            return PruneSpec(std_scale=spec.std_scale * fraction)
        rates = arch.presets.get(spec.preset) if spec.preset is not None else spec.rates
        if rates is None:
            have = ", ".join(arch.presets) or "none"
            raise AlexCompressError(f"architecture {arch.name} has no preset {spec.preset!r} (its presets: {have})")
        return PruneSpec(rates={k: v**fraction for k, v in rates.items()})


def prune(
    state: Mapping[str, "torch.Tensor | np.ndarray"], spec: PruneSpec | None = None, *, arch: str | None = None, inplace: bool = False
) -> PruneResult:
    """Prune `state` as `spec` says (default: see PruneSpec). `arch` None detects it."""
    architecture = resolve_arch(state, arch)
    spec = (spec or PruneSpec()).resolved(architecture)
    name = architecture.name
    if spec.preset is not None:
        return prune_preset(state, spec.preset, arch=name, inplace=inplace)
    if spec.rates is not None:
        return prune_by_rates(state, spec.rates, arch=name, inplace=inplace)
    if spec.std_scale is not None:
        return prune_by_std(state, spec.std_scale, arch=name, inplace=inplace)
    return prune_global(state, spec.sparsity, arch=name, inplace=inplace)


@dataclass(frozen=True)
class QuantizeSpec:
    """Per-layer k-means weight sharing: conv layers `conv_bits`, the others `fc_bits` (`bits` sets both;
    `layer_bits` {layer or glob: bits} wins over both); `init` linear|density|random."""

    conv_bits: int = 8
    fc_bits: int = 5
    bits: Optional[int] = None
    layer_bits: Mapping[str, int] = field(default_factory=dict)
    init: str = "linear"
    seed: int = 0
    shared_codebook: bool = False
    quantizer: str = "kmeans"  # kmeans | ecsq (see quantization.QUANTIZERS)
    rate_weight: float = 0.002  # ecsq: weight of the code length against the squared error (what the search tries: 0.001-0.004)
    importance: str = "none"  # none | grad2 (see importance.IMPORTANCES): needs training images
    importance_batches: int = 16

    def apply(
        self, state: Mapping[str, Any], *, arch: str | None = None, inplace: bool = False, importance: Optional[Mapping[str, Any]] = None
    ) -> QuantizeResult:
        """Quantize `state`; `importance` holds the arrays `importances()` estimated (None: all alike)."""
        if self.importance != "none" and importance is None:
            raise AlexCompressError(
                f"importance {self.importance!r} needs training images: pass apply(..., importance=spec.importances(state, arch, dataset, config))"
            )
        options = asdict(self)
        del options["importance"], options["importance_batches"]
        return quantize(state, arch=arch, inplace=inplace, importance=importance, **options)

    def importances(self, state: Mapping[str, Any], arch: str, dataset: Any, config: Any, log: Any = None) -> Optional[Mapping[str, Any]]:
        """The per-weight importances this spec asks for, from `dataset` at `config`'s batch size and device;
        None for "none"."""
        from alexcompress.compression.importance import estimate

        if self.importance == "none":
            return None
        return estimate(
            self.importance,
            state,
            arch,
            dataset,
            batch_size=config.batch_size,
            batches=self.importance_batches,
            device=config.device,
            seed=self.seed,
            log=log,
        )

    def record(self) -> dict[str, Any]:
        """What the `.dcz` header keeps of these options."""
        out = asdict(self)
        out["conv_bits"] = self.bits or self.conv_bits
        out["fc_bits"] = self.bits or self.fc_bits
        del out["bits"]
        if not out["layer_bits"]:
            del out["layer_bits"]
        if self.quantizer == "kmeans":  # the paper's default leaves the header as it always was
            del out["quantizer"], out["rate_weight"]
        if self.importance == "none":
            del out["importance"], out["importance_batches"]
        return out


@dataclass(frozen=True)
class Compressed:
    """What `compress` did: each stage's report, and the `.dcz` file image."""

    arch: str
    pruning: PruneResult
    quantization: QuantizeResult
    data: bytes

    @property
    def original_bytes(self) -> int:
        from alexcompress.codec.accounting import original_bytes
        from alexcompress.codec.container import parse_header

        return original_bytes(parse_header(self.data))

    @property
    def ratio(self) -> float:
        return self.original_bytes / len(self.data)

    @property
    def header(self) -> "DczHeader":
        from alexcompress.codec.container import parse_header

        return parse_header(self.data)

    @property
    def payload(self) -> bytes:
        """What `fileio.write_output` writes (as `Streamed.payload`)."""
        return self.data


def compress(
    state: Mapping[str, "torch.Tensor | np.ndarray"],
    *,
    arch: str | None = None,
    pruning: PruneSpec | None = None,
    quantization: QuantizeSpec | None = None,
    index_bits: int | None = None,
    coder: str = "auto",
    inplace: bool = False,
    dtypes: Mapping[str, str] | None = None,
) -> Compressed:
    """All three stages: prune, quantize, entropy-code into a `.dcz` file image (`Compressed.data`);
    `coder` as in `dcz.encode`; `dtypes`: the original dtypes of weights widened to float32 (`state.widen`),
    which the quantized weights are narrowed back to before they are coded."""
    from alexcompress.models.dcz import encode
    from alexcompress.models.state import narrow

    architecture = resolve_arch(state, arch)
    quantization = quantization or QuantizeSpec()
    pruned = prune(state, pruning, arch=architecture.name, inplace=inplace)
    quantized = quantization.apply(pruned.state, arch=architecture.name, inplace=True)
    narrow(quantized.state, dtypes or {})
    options = {"prune": pruned.method, **quantization.record(), "index_bits": "auto" if index_bits is None else index_bits, "coder": coder}
    data = encode(quantized.state, arch=architecture.name, index_bits=index_bits, coder=coder, options=options)
    return Compressed(architecture.name, pruned, quantized, data)


def prune_and_retrain(
    state: Mapping[str, "torch.Tensor | np.ndarray"],
    dataset: "Dataset",
    config: "TrainConfig",
    spec: PruneSpec | None = None,
    *,
    arch: str | None = None,
    rounds: int = 1,
    validation: "Optional[Dataset]" = None,
    log: "Optional[TrainingLog]" = None,
    on_round: Optional[Callable[[int, PruneResult], None]] = None,
) -> "dict[str, torch.Tensor]":
    """Iterative pruning (Han et al. 2015): `rounds` rounds of prune-to-the-schedule then masked retraining
    for `config.epochs`; pruned weights stay exactly zero throughout. Returns the retrained state."""
    from alexcompress.train.trainer import retrain_pruned

    if rounds < 1:
        raise AlexCompressError(f"rounds must be at least 1, got {rounds}")
    architecture = resolve_arch(state, arch)
    target = (spec or PruneSpec()).resolved(architecture)

    def prune_round(current: Any, r: int) -> Any:
        result = prune(current, target.step(r, rounds, architecture), arch=architecture.name, inplace=True)
        if on_round is not None:
            on_round(r, replace(result, method=f"round {r}/{rounds}: {result.method}"))
        return result.state

    return retrain_pruned(state, architecture.name, dataset, config, validation=validation, prune_round=prune_round, rounds=rounds, log=log)


def measure_allocation(
    state: Mapping[str, "torch.Tensor | np.ndarray"],
    arch: str,
    curves: Any,
    allocation: Any,
    validation: "Dataset",
    config: "TrainConfig",
    *,
    max_drop: Optional[float] = None,
    on_probe: Optional[Callable[[Any, float], None]] = None,
) -> Any:
    """An automatic allocation checked on validation images, every layer pruned and quantized together
    before retraining: with `max_drop`, the smallest file along the allocation path whose *measured* drop
    stays within it (`sensitivity.allocate_measured`); without, `allocation` with its measured drop."""
    from alexcompress.compression.sensitivity import allocate_measured, jointly
    from alexcompress.models.state import build_model
    from alexcompress.train.distributed import rank_device
    from alexcompress.train.trainer import validation_top1

    device = rank_device(config.device)

    def top1(candidate: Any) -> tuple[float, int]:
        model = build_model(state if candidate is None else jointly(state, candidate), arch).to(device)
        return validation_top1(model, validation, config), len(validation)

    if max_drop is not None:
        return allocate_measured(curves, max_drop, top1, on_probe=on_probe)
    (before, samples), (after, _) = top1(None), top1(allocation)
    return replace(allocation, measured=(before, after, samples))


CALIBRATION_TRIES = 3


def calibrate(
    state: Mapping[str, "torch.Tensor | np.ndarray"],
    arch: str,
    curves: Any,
    target_ratio: float,
    quantization: Optional[QuantizeSpec] = None,
    *,
    tries: int = CALIBRATION_TRIES,
) -> Any:
    """The allocation along the path whose *real* file reaches `target_ratio` most closely from above: the
    curves' size model predicts a layer's codes at its full width, and trained, bell-shaped weights code
    smaller (`--target-ratio 108` gave 112.4x on digits: 4% more pruning than asked). Each try compresses a
    copy of `state` at an allocation (k-means, or `quantization`'s quantizer, under its widths), and the next
    try scales the predicted ratio it asks for by the prediction's measured error; the smallest real ratio
    of at least the target wins (none: the largest). The allocation carries `real_ratio`."""
    from alexcompress.compression.sensitivity import _Planner, allocate

    path = _Planner(curves).path()
    quantization = quantization or QuantizeSpec()
    tried: list[tuple[Any, float]] = []
    allocation = allocate(curves, target_ratio=target_ratio)
    for _ in range(tries):
        if any(a is allocation for a, _ in tried):
            break
        spec = replace(quantization, layer_bits={**allocation.bits, **quantization.layer_bits})
        real = compress(state, arch=arch, pruning=PruneSpec(rates=dict(allocation.rates)), quantization=spec).ratio
        tried.append((allocation, real))
        if target_ratio <= real <= target_ratio * 1.01:
            break
        want = allocation.predicted_ratio * target_ratio / real
        allocation = next((a for a in path if a.predicted_ratio >= want), path[-1])
    reached = [(a, r) for a, r in tried if r >= target_ratio]
    chosen, real = min(reached, key=lambda t: t[1]) if reached else max(tried, key=lambda t: t[1])
    return replace(chosen, real_ratio=real)
