"""The architecture registry: what a model's state dict must look like, which tensors are coded, what the
layers are called, and how to build the module.

Three kinds of architecture, one interface (`architecture.Architecture`):

- hand-described ones, one module per family (`alexnet.py`, `vgg.py`, `resnet.py`): shape tables written
  out, so the hot paths (`compress`, `info`) never import torchvision (2 s, 170 MB). AlexNet carries the
  paper's layer names (conv1..fc8) and its Table 4 keep rates as the preset `paper`;
- every other torchvision classification model, by its `list_models()` name (`torchvision_archs.py`):
  shapes and the conv/linear weights are read off a skeleton built on the meta device (no memory, no init);
- `none` (`architecture.GenericArch`): a state dict of a model nobody registered; every floating tensor
  with >= 2 dimensions is coded.

`detect(state)` recognises a state dict by its keys and shapes. Adding an architecture with paper names or
presets is one `register(...)` call; any torchvision model works without one.
"""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Mapping
from dataclasses import dataclass

from alexcompress.errors import ModelError
from alexcompress.models.alexnet import ALEXNET
from alexcompress.models.architecture import AUTO, NONE, Architecture, GenericArch, _shape_of
from alexcompress.models.resnet import RESNET18
from alexcompress.models.torchvision_archs import (
    TableArch,
    TorchvisionArch,
    _signature_index,
    index_is_current,
    key_signature,
    torchvision_names,
)
from alexcompress.models.vgg import VGG16

_REGISTRY: dict[str, Architecture] = {}


def register(arch: Architecture, *, replace: bool = False) -> Architecture:
    """Add an architecture (a name already taken raises, unless `replace`); torchvision models need no
    registration to work.

    >>> register(GenericArch())
    Traceback (most recent call last):
    ...
    alexcompress.errors.ModelError: architecture 'none' is already registered (register(..., replace=True) replaces it)
    """
    if arch.name in _REGISTRY and not replace:
        raise ModelError(f"architecture {arch.name!r} is already registered (register(..., replace=True) replaces it)")
    _REGISTRY[arch.name] = arch
    return arch


def get_arch(name: str, *, discover: bool = True) -> Architecture:
    """The architecture called `name`: registered, or any torchvision classification model. A name outside
    the shipped index is looked up in the installed torchvision only with `discover` (a user's --arch; not
    a name read from a file, which must not make a reader import torchvision)."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    known = (
        isinstance(name, str)
        and name.isidentifier()
        and (any(name in names for names in _signature_index().values()) or (discover and name in torchvision_names()))
    )
    if known:
        return _torchvision_arch(name)
    raise ModelError(
        f"unknown architecture {name!r}; use a torchvision classification model name "
        "(e.g. alexnet, resnet50, mobilenet_v2, vit_b_16), "
        f"'{NONE}' for any state dict, or '{AUTO}' to detect it"
    )


@functools.cache
def _torchvision_arch(name: str) -> Architecture:
    """An unregistered torchvision model's architecture, built once (a lookup never registers)."""
    return TorchvisionArch(name)


for _arch in (ALEXNET, VGG16, RESNET18, GenericArch()):
    register(_arch)


@dataclass(frozen=True)
class Detection:
    name: str
    reason: str  # one line a user can read: what was recognised, or why nothing was


def _matches(arch: Architecture, state: Mapping[str, object]) -> bool:
    try:
        shapes = arch.shapes(arch.num_classes(state))
    except ModelError:
        return False
    return shapes is not None and list(shapes) == list(state) and all(_shape_of(state[k]) == s for k, s in shapes.items())


def detect(state: Mapping[str, object]) -> Detection:
    """The architecture of a state dict, from its keys and shapes, when exactly one model fits.

    >>> from alexcompress.models.state import random_model
    >>> detect(random_model("alexnet", num_classes=10)).name
    'alexnet'
    """
    for arch in _REGISTRY.values():  # hand tables first: no torchvision import for the common models
        if isinstance(arch, TableArch) and _matches(arch, state):
            return Detection(arch.name, f"detected architecture {arch.name} (keys and shapes match)")
    candidates = list(_signature_index().get(key_signature(list(state)), []))
    if not candidates and not index_is_current():
        unindexed = set(torchvision_names()) - {n for names in _signature_index().values() for n in names}
        candidates = sorted(unindexed)  # models newer than the shipped index: check them the slow way
    fits = [n for n in candidates if n not in _REGISTRY or not isinstance(_REGISTRY[n], TableArch)]
    fits = [n for n in fits if n in torchvision_names() and _matches(get_arch(n), state)]
    if len(fits) == 1:
        return Detection(fits[0], f"detected architecture {fits[0]} (keys and shapes match)")
    if len(fits) > 1:
        return Detection(NONE, f"keys and shapes fit {', '.join(fits)}: treating it as '{NONE}' (pass --arch to choose)")
    return Detection(
        NONE,
        f"no torchvision model has these keys and shapes: treating it as '{NONE}' (every floating tensor with >= 2 dimensions is coded)",
    )


# ------------------------------------------------------------------------------------------ layers


def layer_keys(arch: Architecture, state: Mapping[str, object]) -> list[str]:
    """The compressible entries of `state`, in order."""
    return [k for k, v in state.items() if arch.is_compressible(k, _shape_of(v), is_floating(v))]


def is_floating(value: object) -> bool:
    """A floating-point tensor or array (numpy's bfloat16 is `ml_dtypes`', of kind "V")."""
    import numpy as np

    if isinstance(value, np.ndarray):
        return value.dtype.kind == "f" or value.dtype.name == "bfloat16"
    return bool(value.is_floating_point())  # type: ignore[attr-defined]


def resolve_layers(arch: Architecture, pattern: str, keys: list[str]) -> list[str]:
    """The compressible keys a layer pattern names: an alias (conv1), a key with or without `.weight`, or a
    glob over either (`features.*`, `*.conv2`). A pattern that names nothing is an error.

    >>> from alexcompress.models.alexnet import ALEXNET_LAYERS
    >>> a = get_arch("alexnet")
    >>> resolve_layers(a, "fc6", list(ALEXNET_LAYERS.values()))
    ['classifier.1.weight']
    >>> resolve_layers(a, "classifier.*", list(ALEXNET_LAYERS.values()))
    ['classifier.1.weight', 'classifier.4.weight', 'classifier.6.weight']
    """
    if pattern in arch.aliases and arch.aliases[pattern] in keys:
        return [arch.aliases[pattern]]
    found = []
    for key in keys:
        short = key[: -len(".weight")] if key.endswith(".weight") else key
        if any(fnmatch.fnmatchcase(form, pattern) for form in (key, short, arch.display_name(key))):
            found.append(key)
    if not found:
        known = ", ".join(arch.display_name(k) for k in keys[:12]) + (" ..." if len(keys) > 12 else "")
        raise ModelError(f"layer {pattern!r} matches no compressible layer; layers: {known}")
    return found


def per_layer(arch: Architecture, table: Mapping[str, "float | int"], keys: list[str]) -> "dict[str, float | int]":
    """Spread a {pattern: value} table over layer keys; a later pattern overrides an earlier one."""
    out: dict[str, float | int] = {}
    for pattern, value in table.items():
        for key in resolve_layers(arch, pattern, keys):
            out[key] = value
    return out
