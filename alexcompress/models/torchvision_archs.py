"""Every torchvision classification model, by its `list_models()` name: shapes and the conv/linear weights are
read off a skeleton built on the meta device (no memory, no init); `TableArch` is one whose shape table is
written out (`alexnet`, `vgg16`, `resnet18`), so the hot paths never import torchvision (2 s, 170 MB).
`torchvision_keys.json` is the shipped index from key signatures to model names:
`python -m alexcompress.models.torchvision_archs` regenerates it."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable, Mapping
from importlib import resources
from typing import TYPE_CHECKING, NamedTuple

from alexcompress.errors import ModelError
from alexcompress.models.architecture import Architecture, _classes_from

if TYPE_CHECKING:
    import torch


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


@functools.cache
def torchvision_names() -> tuple[str, ...]:
    import torchvision

    return tuple(torchvision.models.list_models(module=torchvision.models))


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
def index_is_current() -> bool:
    """The shipped index was made from the installed torchvision's version (read from its metadata, not by
    importing it: 2 s and ~650 MB), so it lists every model that torchvision has."""
    from importlib import metadata

    try:
        installed = metadata.version("torchvision").split("+")[0]
    except metadata.PackageNotFoundError:
        return False
    return json.loads(resources.files(__package__).joinpath("torchvision_keys.json").read_text()).get("torchvision") == installed


@functools.cache
def _signature_index() -> dict[str, list[str]]:
    """key signature -> torchvision model names, shipped with the package (`torchvision_keys.json`, made by
    `python -m alexcompress.models.torchvision_archs`, checked against the installed torchvision by the tests)."""
    text = resources.files(__package__).joinpath("torchvision_keys.json").read_text()
    index: dict[str, list[str]] = {}
    for name, signature in json.loads(text)["models"].items():
        index.setdefault(signature, []).append(name)
    return index


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
    """Regenerate `torchvision_keys.json` from the installed torchvision: `python -m alexcompress.models.torchvision_archs`."""
    import torchvision

    models = {name: key_signature(list(_skeleton(name, 1000))) for name in torchvision_names()}
    path = resources.files(__package__).joinpath("torchvision_keys.json")
    payload = {"torchvision": torchvision.__version__.split("+")[0], "models": models}
    with open(str(path), "w") as handle:
        json.dump(payload, handle, indent=1, sort_keys=True)
        handle.write("\n")


if __name__ == "__main__":  # pragma: no cover
    _write_index()
