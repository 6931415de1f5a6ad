"""The architecture registry: what a model's state dict must look like, which tensors are coded, what the
layers are called, and how to build the module.

Three kinds of architecture, one interface (`Architecture`):

- hand-described ones (`alexnet`, `vgg16`, `resnet18`): shape tables written out here, so the hot paths
  (`compress`, `info`) never import torchvision (2 s, 170 MB). AlexNet carries the paper's layer names
  (conv1..fc8) and its Table 4 keep rates as the preset `paper`;
- every other torchvision classification model, by its `list_models()` name: shapes and the conv/linear
  weights are read off a skeleton built on the meta device (no memory, no init);
- `none`: a state dict of a model nobody registered; every floating tensor with >= 2 dimensions is coded.

`detect(state)` recognises a state dict by its keys and shapes. Adding an architecture with paper names or
presets is one `register(...)` call; any torchvision model works without one.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, NamedTuple, Optional

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


# ------------------------------------------------------------------------------- hand-described tables


@dataclass(frozen=True)
class _Table:
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


def _alexnet_table(num_classes: int) -> "OrderedDict[str, tuple[int, ...]]":
    t = _Table()
    for index, out, inp, k in ((0, 64, 3, 11), (3, 192, 64, 5), (6, 384, 192, 3), (8, 256, 384, 3), (10, 256, 256, 3)):
        t.conv(f"features.{index}", out, inp, k)
    t.linear("classifier.1", 4096, 256 * 6 * 6)
    t.linear("classifier.4", 4096, 4096)
    t.linear("classifier.6", num_classes, 4096)
    return t.shapes


def _vgg16_table(num_classes: int) -> "OrderedDict[str, tuple[int, ...]]":
    t = _Table()
    index, channels = 0, 3
    for item in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
        if item == "M":
            index += 1
        else:
            t.conv(f"features.{index}", int(item), channels, 3)
            channels = int(item)
            index += 2
    t.linear("classifier.0", 4096, 512 * 7 * 7)
    t.linear("classifier.3", 4096, 4096)
    t.linear("classifier.6", num_classes, 4096)
    return t.shapes


def _resnet18_table(num_classes: int) -> "OrderedDict[str, tuple[int, ...]]":
    t = _Table()
    t.conv("conv1", 64, 3, 7, bias=False)
    t.batchnorm("bn1", 64)
    inplanes = 64
    for layer, planes in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            prefix = f"layer{layer}.{block}"
            t.conv(f"{prefix}.conv1", planes, inplanes, 3, bias=False)
            t.batchnorm(f"{prefix}.bn1", planes)
            t.conv(f"{prefix}.conv2", planes, planes, 3, bias=False)
            t.batchnorm(f"{prefix}.bn2", planes)
            if block == 0 and inplanes != planes:
                t.conv(f"{prefix}.downsample.0", planes, inplanes, 1, bias=False)
                t.batchnorm(f"{prefix}.downsample.1", planes)
            inplanes = planes
    t.linear("fc", num_classes, 512)
    return t.shapes


def _shape_of(value: object) -> tuple[int, ...]:
    return tuple(int(d) for d in value.shape)  # type: ignore[attr-defined]


def _classes_from(state: Mapping[str, object], key: str, arch: str) -> int:
    value = state.get(key)
    if value is None or len(_shape_of(value)) < 1:
        raise ModelError(f"missing the classifier weight {key!r}: not a torchvision {arch} state dict")
    return _shape_of(value)[0]


class TorchvisionArch(Architecture):
    """A torchvision classification model, by its `torchvision.models` builder name."""

    def __init__(self, name: str) -> None:
        self.name = name

    def build(self, num_classes: int) -> "torch.nn.Module":
        import torchvision

        return torchvision.models.get_model(self.name, weights=None, num_classes=num_classes)

    def build_empty(self, num_classes: int) -> "torch.nn.Module":
        with _skip_parameter_init():  # real (CPU) tensors: non-persistent buffers are computed, weights left as they come
            import torchvision

            return torchvision.models.get_model(self.name, weights=None, num_classes=num_classes)

    def shapes(self, num_classes: int) -> "OrderedDict[str, tuple[int, ...]]":
        return OrderedDict((k, e.shape) for k, e in _skeleton(self.name, num_classes).items())

    def expects_floating(self, key: str) -> bool:
        entry = _skeleton(self.name, 1000).get(key)
        return entry.floating if entry is not None else True

    def classifier_keys(self) -> list[str]:
        """The entries whose shape follows num_classes (the final layer, and auxiliary heads)."""
        a, b = _skeleton(self.name, 1000), _skeleton(self.name, 7)
        return [k for k in a if k not in b or a[k].shape != b[k].shape]

    def num_classes(self, state: Mapping[str, object]) -> int:
        keys = self.classifier_keys()
        if not keys:
            raise ModelError(f"{self.name} has no class count")
        return _classes_from(state, keys[0], self.name)

    def is_compressible(self, key: str, shape: tuple[int, ...], floating: bool) -> bool:
        return floating and key in _coded_keys(self.name)

    def pretrained_state(self) -> "OrderedDict[str, torch.Tensor]":
        import torchvision

        return _download(torchvision.models.get_model_weights(self.name).DEFAULT)

    def versions(self) -> dict[str, int]:
        return _versions(self.name)


class TableArch(TorchvisionArch):
    """A torchvision model whose shape table is written out here (no torchvision import to check files)."""

    def __init__(
        self,
        name: str,
        table: Callable[[int], "OrderedDict[str, tuple[int, ...]]"],
        classifier_key: str,
        aliases: Mapping[str, str] | None = None,
        presets: Mapping[str, Mapping[str, float]] | None = None,
    ) -> None:
        super().__init__(name)
        self._table, self.classifier_key = table, classifier_key
        self.aliases = dict(aliases or {})
        self.presets = {k: dict(v) for k, v in (presets or {}).items()}

    def shapes(self, num_classes: int) -> "OrderedDict[str, tuple[int, ...]]":
        return self._table(num_classes)

    def num_classes(self, state: Mapping[str, object]) -> int:
        return _classes_from(state, self.classifier_key, self.name)

    def build_empty(self, num_classes: int) -> "torch.nn.Module":
        import torch

        with torch.device("meta"):  # no memory and no init to pay for: every tensor is about to be assigned
            return self.build(num_classes)

    def is_compressible(self, key: str, shape: tuple[int, ...], floating: bool) -> bool:
        return Architecture.is_compressible(self, key, shape, floating)

    def expects_floating(self, key: str) -> bool:
        return Architecture.expects_floating(self, key)

    def versions(self) -> dict[str, int]:
        return {}  # nothing in these three modules needs them (BatchNorm reads a missing version as current)


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


# ------------------------------------------------------------------------------------------ registry

#: The paper's AlexNet layer names and the torchvision state-dict keys they stand for.
ALEXNET_LAYERS: "OrderedDict[str, str]" = OrderedDict(
    (name, f"{prefix}.weight")
    for name, prefix in (
        ("conv1", "features.0"),
        ("conv2", "features.3"),
        ("conv3", "features.6"),
        ("conv4", "features.8"),
        ("conv5", "features.10"),
        ("fc6", "classifier.1"),
        ("fc7", "classifier.4"),
        ("fc8", "classifier.6"),
    )
)

#: Table 4 of the paper: the fraction of weights kept after pruning, per AlexNet layer.
PAPER_KEEP_RATES: dict[str, float] = {
    "conv1": 0.84,
    "conv2": 0.38,
    "conv3": 0.35,
    "conv4": 0.37,
    "conv5": 0.37,
    "fc6": 0.09,
    "fc7": 0.09,
    "fc8": 0.25,
}

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


register(TableArch("alexnet", _alexnet_table, "classifier.6.weight", ALEXNET_LAYERS, {"paper": PAPER_KEEP_RATES}))
register(TableArch("vgg16", _vgg16_table, "classifier.6.weight"))
register(TableArch("resnet18", _resnet18_table, "fc.weight"))
register(GenericArch())


@functools.cache
def torchvision_names() -> tuple[str, ...]:
    import torchvision

    return tuple(torchvision.models.list_models(module=torchvision.models))


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


# ---------------------------------------------------------------------------------- torchvision skeletons


class _Entry(NamedTuple):
    shape: tuple[int, ...]
    coded: bool  # a conv or linear weight
    floating: bool


@functools.lru_cache(maxsize=64)
def _skeleton(name: str, num_classes: int) -> "OrderedDict[str, _Entry]":
    """Shape, role and dtype kind of every state-dict entry of torchvision's `name`, without allocating or
    initialising weights where the meta device allows it."""
    module = _build_uninitialised(name, num_classes)
    coded = _conv_linear_weights(module)
    return OrderedDict((k, _Entry(tuple(v.shape), k in coded, bool(v.is_floating_point()))) for k, v in module.state_dict().items())


def _build_uninitialised(name: str, num_classes: int) -> "torch.nn.Module":
    import warnings

    import torch
    import torchvision

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # init-weights notices of googlenet/inception
        try:
            with torch.device("meta"):
                return torchvision.models.get_model(name, weights=None, num_classes=num_classes)
        except (NotImplementedError, RuntimeError):  # RegNet computes its widths with real tensors
            with _skip_parameter_init():
                return torchvision.models.get_model(name, weights=None, num_classes=num_classes)


def _skip_parameter_init_mode() -> type:
    """A torch function mode (scoped to a `with` block and this thread; nothing is patched) in which the
    in-place methods that initialise weights (`uniform_`, `normal_`, `fill_`...) leave parameters as
    allocated: untouched torch.empty pages cost no time and no memory."""
    from torch.overrides import TorchFunctionMode

    class Mode(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            import torch

            kwargs = kwargs or {}
            name = getattr(func, "__name__", "")
            target = args[0] if args else kwargs.get("tensor")  # torch.nn.init's functions pass it by name
            if name.endswith("_") and not name.startswith("_") and isinstance(target, torch.nn.Parameter):
                return target
            return func(*args, **kwargs)

    return Mode


def _skip_parameter_init() -> "contextlib.AbstractContextManager[object]":
    return _skip_parameter_init_mode()()  # type: ignore[no-any-return]


def _conv_linear_weights(module: "torch.nn.Module") -> set[str]:
    """State-dict keys of conv and linear weights, including attention's packed input projection."""
    import torch

    kinds = (torch.nn.Linear, torch.nn.modules.conv._ConvNd)
    keys = set()
    for prefix, sub in module.named_modules():
        dot = f"{prefix}." if prefix else ""
        if isinstance(sub, kinds):
            keys.add(f"{dot}weight")
        elif isinstance(sub, torch.nn.MultiheadAttention) and sub.in_proj_weight is not None:
            keys.add(f"{dot}in_proj_weight")
    return keys


@functools.cache
def _versions(name: str) -> dict[str, int]:
    metadata = getattr(_build_uninitialised(name, 1000).state_dict(), "_metadata", {})
    return {prefix: int(v["version"]) for prefix, v in metadata.items() if isinstance(v.get("version"), int)}


@functools.cache
def _coded_keys(name: str) -> frozenset[str]:
    return frozenset(k for k, entry in _skeleton(name, 1000).items() if entry.coded)


# ------------------------------------------------------------------------------------------ detection


def key_signature(keys: "list[str] | tuple[str, ...]") -> str:
    """A short hash of a state dict's sorted key set (the first filter of `detect`)."""
    return hashlib.sha1("\n".join(sorted(keys)).encode()).hexdigest()[:16]


@functools.cache
def _signature_index() -> dict[str, list[str]]:
    """key signature -> torchvision model names, shipped with the package (`torchvision_keys.json`, made by
    `python -m alexcompress.models.archs`, checked against the installed torchvision by the tests)."""
    text = resources.files(__package__).joinpath("torchvision_keys.json").read_text()
    index: dict[str, list[str]] = {}
    for name, signature in json.loads(text)["models"].items():
        index.setdefault(signature, []).append(name)
    return index


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
    if not candidates:
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
    return [k for k, v in state.items() if arch.is_compressible(k, _shape_of(v), _is_floating(v))]


def _is_floating(value: object) -> bool:
    import numpy as np

    if isinstance(value, np.ndarray):
        return value.dtype.kind == "f"
    return bool(value.is_floating_point())  # type: ignore[attr-defined]


def resolve_layers(arch: Architecture, pattern: str, keys: list[str]) -> list[str]:
    """The compressible keys a layer pattern names: an alias (conv1), a key with or without `.weight`, or a
    glob over either (`features.*`, `*.conv2`). A pattern that names nothing is an error.

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


def check_num_classes(num_classes: int) -> None:
    if not 1 <= num_classes <= MAX_NUM_CLASSES:
        raise ModelError(f"num_classes must be between 1 and {MAX_NUM_CLASSES}, got {num_classes}")


def _download(weights: object) -> "OrderedDict[str, torch.Tensor]":
    """A torchvision weights enum's state dict, downloaded once into torch's cache; offline, a ModelError
    within seconds that says what to do instead of hanging. (torch.hub has no timeout of its own, so the file
    is fetched here, with one, into the same cache path and checked against the hash in its name.)"""
    try:
        state = _fetch_checkpoint(weights.url)  # type: ignore[attr-defined]
    except Exception as exc:  # URLError, socket.timeout, hash mismatch: all mean "not available here"
        raise ModelError(
            f"cannot download the pretrained weights ({weights.url}): {' '.join(str(exc).split()) or type(exc).__name__}; "  # type: ignore[attr-defined]
            "check your network, or copy the file into torch's cache (torch.hub.get_dir()/checkpoints), "
            "or use 'random' / 'alexcompress init' for a seeded random-init model"
        ) from None
    return OrderedDict(state)


def _fetch_checkpoint(url: str, timeout: float = 10.0) -> "Mapping[str, torch.Tensor]":
    """`torch.hub.load_state_dict_from_url(url, check_hash=True)` with a network timeout: the file lands in
    torch's cache (`torch.hub.get_dir()/checkpoints`, where a user may also copy it by hand), its SHA-256
    must start with the hex digits after the last '-' of its name, and it is loaded with weights_only."""
    import os
    import tempfile
    import urllib.request
    from urllib.parse import urlparse

    import torch

    name = os.path.basename(urlparse(url).path)
    folder = os.path.join(torch.hub.get_dir(), "checkpoints")
    path = os.path.join(folder, name)
    if not os.path.exists(path):
        os.makedirs(folder, exist_ok=True)
        digest = hashlib.sha256()
        handle, partial = tempfile.mkstemp(dir=folder, prefix=".partial-")
        try:
            with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
            expected = name.rsplit("-", 1)[-1].split(".")[0] if "-" in name else ""
            if expected and not digest.hexdigest().startswith(expected):
                raise ValueError(f"hash mismatch: {digest.hexdigest()[: len(expected)]} is not {expected}")
            os.replace(partial, path)
        finally:
            if os.path.exists(partial):
                os.remove(partial)
    return torch.load(path, map_location="cpu", weights_only=True)


def _write_index() -> None:  # pragma: no cover - run by hand when torchvision grows new models
    """Regenerate `torchvision_keys.json` from the installed torchvision: `python -m alexcompress.models.archs`."""
    import torchvision

    models = {name: key_signature(list(_skeleton(name, 1000))) for name in torchvision_names()}
    path = resources.files(__package__).joinpath("torchvision_keys.json")
    payload = {"torchvision": torchvision.__version__.split("+")[0], "models": models}
    with open(str(path), "w") as handle:
        json.dump(payload, handle, indent=1, sort_keys=True)
        handle.write("\n")


if __name__ == "__main__":  # pragma: no cover
    _write_index()
