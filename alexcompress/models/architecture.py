"""The interface every architecture implements (`Architecture`), the shape-table builder of the hand-described
ones, and `none`: a state dict of a model nobody registered, every floating tensor with >= 2 dimensions coded."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

from alexcompress.codec.container import MAX_NUM_CLASSES
from alexcompress.errors import ModelError

if TYPE_CHECKING:
    import torch

NONE = "none"  # the architecture of a state dict that no registered or torchvision model matches
AUTO = "auto"


class Architecture:
    """The interface every architecture implements. `num_classes` is 0 where a model has no class count."""

    name: str
    #: display names for layers (the paper's conv1..fc8), mapped to state-dict weight keys
    aliases: Mapping[str, str] = {}
    #: named per-layer keep-rate tables (layer name or glob -> keep rate)
    presets: Mapping[str, Mapping[str, float]] = {}
    #: True when a module exists to load the weights into (`build`); False for `none`
    buildable: bool = True

    def shapes(self, num_classes: int) -> "Optional[OrderedDict[str, tuple[int, ...]]]":
        """Every entry of the state dict and its shape, in order; None where anything goes (`none`)."""
        raise NotImplementedError

    def num_classes(self, state: Mapping[str, object]) -> int:
        raise NotImplementedError

    def is_compressible(self, key: str, shape: tuple[int, ...], floating: bool) -> bool:
        """Whether this tensor is pruned, quantized and entropy-coded (conv and linear weights)."""
        return floating and key.endswith(".weight") and len(shape) >= 2

    def build(self, num_classes: int) -> "torch.nn.Module":
        """The module with its own random initialisation."""
        raise ModelError(f"architecture {self.name!r} has no module to build; pass the model yourself")

    def build_empty(self, num_classes: int) -> "torch.nn.Module":
        """The module with uninitialised weights, about to be loaded from a state dict."""
        return self.build(num_classes)

    def expects_floating(self, key: str) -> bool:
        """Whether this state-dict entry is floating point (not an integer counter or index table)."""
        return not key.endswith("num_batches_tracked")

    def display_name(self, key: str) -> str:
        for alias, target in self.aliases.items():
            if target == key:
                return alias
        return key[: -len(".weight")] if key.endswith(".weight") else key

    def pretrained_state(self) -> "OrderedDict[str, torch.Tensor]":
        raise ModelError(f"no pretrained weights are known for architecture {self.name!r}")

    def versions(self) -> dict[str, int]:
        """Module versions torch keeps beside a state dict (`_metadata`), by module prefix: some modules
        (MNASNet) refuse a state dict without them."""
        return {}


@dataclass(frozen=True)
class ShapeTable:
    """Shape-table builder with torchvision's key naming."""

    shapes: "OrderedDict[str, tuple[int, ...]]" = field(default_factory=OrderedDict)

    def conv(self, key: str, out: int, inp: int, k: int, bias: bool = True) -> None:
        self.shapes[f"{key}.weight"] = (out, inp, k, k)
        if bias:
            self.shapes[f"{key}.bias"] = (out,)

    def linear(self, key: str, out: int, inp: int) -> None:
        self.shapes[f"{key}.weight"] = (out, inp)
        self.shapes[f"{key}.bias"] = (out,)

    def batchnorm(self, key: str, n: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            self.shapes[f"{key}.{name}"] = (n,)
        self.shapes[f"{key}.num_batches_tracked"] = ()


def _shape_of(value: object) -> tuple[int, ...]:
    return tuple(int(d) for d in value.shape)  # type: ignore[attr-defined]


def _classes_from(state: Mapping[str, object], key: str, arch: str) -> int:
    value = state.get(key)
    if value is None or len(_shape_of(value)) < 1:
        raise ModelError(f"missing the classifier weight {key!r}: not a torchvision {arch} state dict")
    return _shape_of(value)[0]


class GenericArch(Architecture):
    """`none`: any state dict; every floating tensor with at least two dimensions is coded."""

    name = NONE
    buildable = False

    def shapes(self, num_classes: int) -> None:
        return None

    def num_classes(self, state: Mapping[str, object]) -> int:
        return 0

    def is_compressible(self, key: str, shape: tuple[int, ...], floating: bool) -> bool:
        return floating and len(shape) >= 2


def check_num_classes(num_classes: int) -> None:
    if not 1 <= num_classes <= MAX_NUM_CLASSES:
        raise ModelError(f"num_classes must be between 1 and {MAX_NUM_CLASSES}, got {num_classes}", field="num_classes")
