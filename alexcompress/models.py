"""Architectures, the layer-name table, and loading/saving state dicts safely.

Every intermediate file of the pipeline is a plain torchvision state dict, so this module owns the one
place where files become tensors: `weights_only=True` always, common checkpoint layouts unwrapped, and the
result validated against the architecture before any stage sees it.
"""

from __future__ import annotations

import io
import os
import pickle
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Callable, Mapping

import numpy as np

from .errors import ModelError

if TYPE_CHECKING:  # torch is imported lazily: `info` must not pay for it
    import torch

#: The paper's AlexNet layer names and the torchvision state-dict prefixes they correspond to.
ALEXNET_LAYERS: "OrderedDict[str, str]" = OrderedDict(
    [
        ("conv1", "features.0"),
        ("conv2", "features.3"),
        ("conv3", "features.6"),
        ("conv4", "features.8"),
        ("conv5", "features.10"),
        ("fc6", "classifier.1"),
        ("fc7", "classifier.4"),
        ("fc8", "classifier.6"),
    ]
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

MAX_NUM_CLASSES = 1_000_000


@dataclass(frozen=True)
class Arch:
    """A supported torchvision architecture: how to build it and where its classifier lives."""

    name: str
    classifier_key: str  # the final linear layer's weight: its first dimension is num_classes

    def build(self, num_classes: int) -> "torch.nn.Module":
        import torchvision

        builder: Callable[..., torch.nn.Module] = getattr(torchvision.models, self.name)
        return builder(weights=None, num_classes=num_classes)


ARCHS: dict[str, Arch] = {
    "alexnet": Arch("alexnet", "classifier.6.weight"),
    "vgg16": Arch("vgg16", "classifier.6.weight"),
    "resnet18": Arch("resnet18", "fc.weight"),
}


def get_arch(name: str) -> Arch:
    """The architecture called `name`, or a ModelError listing the supported ones."""
    try:
        return ARCHS[name]
    except KeyError:
        raise ModelError(f"unknown architecture {name!r}; supported: {', '.join(ARCHS)}") from None


def is_compressible(key: str, tensor: "torch.Tensor | np.ndarray") -> bool:
    """Conv and linear weights are pruned, quantized and coded; biases, norms and buffers stay raw."""
    return key.endswith(".weight") and len(tensor.shape) >= 2


def is_array(value: object) -> bool:
    """A torch tensor or a numpy array: the stages take either, without importing torch for numpy."""
    return isinstance(value, np.ndarray) or type(value).__module__.startswith("torch") and hasattr(value, "shape")


def is_floating(value: "torch.Tensor | np.ndarray") -> bool:
    return value.dtype.kind == "f" if isinstance(value, np.ndarray) else bool(value.is_floating_point())


def as_numpy(value: "torch.Tensor | np.ndarray") -> np.ndarray:
    """A numpy view of a CPU tensor (no copy), or the array itself."""
    return value if isinstance(value, np.ndarray) else value.detach().cpu().numpy()


def c_contiguous(array: np.ndarray, dtype: "np.dtype | str | None" = None) -> np.ndarray:
    """`array` in C order (and `dtype`), copied only if needed; unlike np.ascontiguousarray, a 0-d array
    (a BatchNorm counter) stays 0-d."""
    return np.require(array, dtype=dtype, requirements="C")


def numpy_state(state: Mapping[str, "torch.Tensor | np.ndarray"]) -> "OrderedDict[str, np.ndarray]":
    return OrderedDict((k, as_numpy(v)) for k, v in state.items())


def torch_state(state: Mapping[str, "torch.Tensor | np.ndarray"]) -> "OrderedDict[str, torch.Tensor]":
    """Tensors sharing memory with the arrays (torch.from_numpy), for saving and building models."""
    import torch

    return OrderedDict(
        (k, torch.from_numpy(c_contiguous(v)) if isinstance(v, np.ndarray) else v) for k, v in state.items()
    )


def layer_names(arch: str, keys: list[str]) -> dict[str, str]:
    """Map compressible weight keys to display names: the paper's conv1..fc8 for AlexNet, else the key."""
    names = {}
    by_prefix = {prefix: name for name, prefix in ALEXNET_LAYERS.items()} if arch == "alexnet" else {}
    for key in keys:
        prefix = key[: -len(".weight")] if key.endswith(".weight") else key
        names[key] = by_prefix.get(prefix, prefix)
    return names


def resolve_layer(arch: str, name: str, keys: list[str]) -> str:
    """The state-dict weight key for a layer name (conv1..fc8 or a key prefix), or a ModelError."""
    names = layer_names(arch, keys)
    for key, display in names.items():
        if name in (display, key, key[: -len(".weight")]):
            return key
    raise ModelError(f"unknown layer {name!r}; known layers: {', '.join(names.values())}")


def expected_shapes(arch: str, num_classes: int) -> dict[str, tuple[int, ...]]:
    """Shapes of every entry of torchvision's `arch` state dict, in order, without importing torchvision
    (which costs ~2 s and ~170 MB per process). tests/test_models.py checks them against torchvision."""
    get_arch(arch)
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(key: str, out: int, inp: int, k: int, bias: bool = True) -> None:
        shapes[f"{key}.weight"] = (out, inp, k, k)
        if bias:
            shapes[f"{key}.bias"] = (out,)

    def linear(key: str, out: int, inp: int) -> None:
        shapes[f"{key}.weight"] = (out, inp)
        shapes[f"{key}.bias"] = (out,)

    def batchnorm(key: str, n: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{key}.{name}"] = (n,)
        shapes[f"{key}.num_batches_tracked"] = ()

    if arch == "alexnet":
        for index, out, inp, k in ((0, 64, 3, 11), (3, 192, 64, 5), (6, 384, 192, 3), (8, 256, 384, 3), (10, 256, 256, 3)):
            conv(f"features.{index}", out, inp, k)
        linear("classifier.1", 4096, 256 * 6 * 6)
        linear("classifier.4", 4096, 4096)
        linear("classifier.6", num_classes, 4096)
    elif arch == "vgg16":
        index, channels = 0, 3
        for item in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
            if item == "M":
                index += 1
            else:
                conv(f"features.{index}", int(item), channels, 3)
                channels = int(item)
                index += 2
        linear("classifier.0", 4096, 512 * 7 * 7)
        linear("classifier.3", 4096, 4096)
        linear("classifier.6", num_classes, 4096)
    else:  # resnet18
        conv("conv1", 64, 3, 7, bias=False)
        batchnorm("bn1", 64)
        inplanes = 64
        for layer, planes in enumerate((64, 128, 256, 512), start=1):
            for block in range(2):
                prefix = f"layer{layer}.{block}"
                conv(f"{prefix}.conv1", planes, inplanes, 3, bias=False)
                batchnorm(f"{prefix}.bn1", planes)
                conv(f"{prefix}.conv2", planes, planes, 3, bias=False)
                batchnorm(f"{prefix}.bn2", planes)
                if block == 0 and inplanes != planes:
                    conv(f"{prefix}.downsample.0", planes, inplanes, 1, bias=False)
                    batchnorm(f"{prefix}.downsample.1", planes)
                inplanes = planes
        linear("fc", num_classes, 512)
    return shapes


def random_model(arch: str = "alexnet", num_classes: int = 1000, seed: int = 0) -> "OrderedDict[str, torch.Tensor]":
    """A seeded random-init state dict (torchvision's own initialisation), for trying the tool offline.

    >>> sd = random_model("alexnet", num_classes=10, seed=0)
    >>> tuple(sd["classifier.6.weight"].shape)
    (10, 4096)
    """
    import torch

    _check_num_classes(num_classes)
    with torch.random.fork_rng(devices=[]):  # seeded, without disturbing the caller's global RNG
        torch.manual_seed(seed)
        model = get_arch(arch).build(num_classes)
    return OrderedDict((k, v.detach().clone()) for k, v in model.state_dict().items())


def pretrained_alexnet() -> "OrderedDict[str, torch.Tensor]":
    """torchvision's ImageNet AlexNet (IMAGENET1K_V1), downloaded once into torch's cache.

    Offline, this fails fast with a ModelError that says what to do instead of hanging.
    """
    import socket

    import torchvision

    weights = torchvision.models.AlexNet_Weights.IMAGENET1K_V1
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(10.0)  # torch.hub has no timeout of its own: a blackholed network would hang
    try:
        state = weights.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # URLError, socket.timeout, hash mismatch: all mean "not available here"
        raise ModelError(
            f"cannot download the pretrained AlexNet weights ({weights.url}): {_one_line(exc)}; "
            "check your network, or copy the file into torch's cache (torch.hub.get_dir()/checkpoints), "
            "or use 'random' / 'alexcompress init' for a seeded random-init AlexNet"
        ) from None
    finally:
        socket.setdefaulttimeout(previous)
    return OrderedDict(state)


def _torch_reason(text: str) -> str:
    """The informative sentence of one of torch.load's multi-paragraph errors."""
    boilerplate = ("Weights only load failed", "Check the documentation", "Please file an issue", "(1)", "(2)")
    for line in (line.strip() for line in text.splitlines()):
        if line and not line.startswith(boilerplate) and not line.endswith("WeightsUnpickler error:"):
            return line.split(". ")[0].rstrip(".")[:200]
    return " ".join(text.split())[:200] or "unknown error"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _check_num_classes(num_classes: int) -> None:
    if not 1 <= num_classes <= MAX_NUM_CLASSES:
        raise ModelError(f"num_classes must be between 1 and {MAX_NUM_CLASSES}, got {num_classes}")


# --------------------------------------------------------------------------------------------- loading

_CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")


def load_state_dict(
    source: str | os.PathLike[str] | bytes, *, arch: str | None = None, name: str | None = None
) -> tuple["OrderedDict[str, torch.Tensor]", str]:
    """Read a `.pt` file (path or bytes) into a validated state dict; returns it with its architecture.

    Only `torch.load(weights_only=True)` is used: a pickled module or arbitrary object is refused with a
    message saying how to re-save it as a state dict.
    """
    import torch

    label = name or (os.fspath(source) if not isinstance(source, bytes) else "<stdin>")
    if isinstance(source, bytes):
        handle: IO[bytes] | str | os.PathLike[str] = io.BytesIO(source)
        if not source:
            raise ModelError(f"{label}: empty input, expected a torch .pt file")
    else:
        if not os.path.exists(source):
            raise ModelError(f"{label}: no such file")
        if os.path.isdir(source):
            raise ModelError(f"{label}: is a directory, expected a torch .pt file")
        if os.path.getsize(source) == 0:
            raise ModelError(f"{label}: empty file, expected a torch .pt file")
        handle = source
    try:
        obj = torch.load(handle, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        found = re.search(r"GLOBAL ([\w.]+)", text)
        if found:
            raise ModelError(
                f"{label}: holds pickled Python objects ({found.group(1)}), which are never unpickled here; "
                "if it is a whole nn.Module, re-save it as a state dict: torch.save(model.state_dict(), 'model.pt')"
            ) from None
        raise ModelError(f"{label}: not a readable torch file ({_torch_reason(text)})") from None
    except Exception as exc:  # torch.load on hostile bytes raises anything (KeyError, struct.error, ...)
        raise ModelError(f"{label}: not a readable torch file, or truncated ({_torch_reason(str(exc))})") from None
    state = _unwrap(obj, label)
    arch_name = arch or guess_arch(state)
    validate_state_dict(state, arch_name, label)
    return state, arch_name


def _unwrap(obj: object, label: str) -> "OrderedDict[str, torch.Tensor | np.ndarray]":
    for _ in range(3):  # {"state_dict": {"model": ...}} nests at most a little
        if isinstance(obj, Mapping) and not _all_arrays(obj):
            inner = next((obj[k] for k in _CHECKPOINT_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping):
        raise ModelError(
            f"{label}: holds a {type(obj).__name__}, not a state dict; "
            "save one with torch.save(model.state_dict(), 'model.pt')"
        )
    state: OrderedDict = OrderedDict()
    for key, value in obj.items():
        if not isinstance(key, str) or not is_array(value):
            raise ModelError(f"{label}: entry {key!r} is not a tensor; expected a state dict of tensors")
        for prefix in ("module.", "_orig_mod."):  # DataParallel / torch.compile wrappers
            if key.startswith(prefix):
                key = key[len(prefix) :]
        state[key] = value
    return state


def _all_arrays(obj: Mapping) -> bool:
    return len(obj) > 0 and all(is_array(v) for v in obj.values())


def load_arrays(
    path: str | os.PathLike[str], *, arch: str | None = None, name: str | None = None
) -> tuple["OrderedDict[str, np.ndarray]", str]:
    """Like `load_state_dict`, as float32 numpy arrays, without importing torch when the file is a plain
    zip `.pt` (see `ptfile`); anything else goes through torch.load(weights_only=True)."""
    from .ptfile import read_state_dict

    label = name or os.fspath(path)
    obj = read_state_dict(path) if os.path.isfile(path) else None
    if obj is None:
        state, found = load_state_dict(path, arch=arch, name=name)
        return to_float32(numpy_state(state)), found
    state = _unwrap(obj, label)
    found = arch or guess_arch(state)
    validate_state_dict(state, found, label)
    return to_float32(state), found


def guess_arch(state: Mapping[str, "torch.Tensor"]) -> str:
    """Tell AlexNet, VGG-16 and ResNet-18 state dicts apart by their keys."""
    if "fc.weight" in state and "layer1.0.conv1.weight" in state:
        return "resnet18"
    if "features.28.weight" in state:
        return "vgg16"
    return "alexnet"


def num_classes_of(state: Mapping[str, "torch.Tensor"], arch: str) -> int:
    key = get_arch(arch).classifier_key
    if key not in state or len(state[key].shape) != 2:
        raise ModelError(f"missing the classifier weight {key!r}: not a torchvision {arch} state dict")
    return int(state[key].shape[0])


def validate_state_dict(state: Mapping[str, "torch.Tensor"], arch: str, label: str = "model") -> int:
    """Check keys, shapes and dtypes against torchvision's `arch`; returns num_classes."""
    try:
        num_classes = num_classes_of(state, arch)
        _check_num_classes(num_classes)
    except ModelError as exc:
        raise ModelError(f"{label}: {exc}") from None
    expected = expected_shapes(arch, num_classes)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_few(unexpected)}")
        raise ModelError(f"{label}: not a torchvision {arch} state dict: {'; '.join(parts)}")
    for key, shape in expected.items():
        if tuple(state[key].shape) != shape:
            raise ModelError(
                f"{label}: {key} has shape {tuple(state[key].shape)}, expected {shape} for {arch}"
            )
        if key.endswith("num_batches_tracked"):
            continue
        if not is_floating(state[key]):
            raise ModelError(f"{label}: {key} has dtype {state[key].dtype}, expected a floating-point tensor")
    return num_classes


def _few(keys: list[str], limit: int = 4) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def to_float32(state: Mapping[str, "torch.Tensor | np.ndarray"]) -> "OrderedDict[str, torch.Tensor | np.ndarray]":
    """Floating-point entries as contiguous float32 (half-precision checkpoints load as float32); no copy
    where they already are."""
    out: OrderedDict = OrderedDict()
    for key, value in state.items():
        if isinstance(value, np.ndarray):
            value = c_contiguous(value, np.float32 if value.dtype.kind == "f" else value.dtype)
        else:
            import torch

            if value.is_floating_point() and value.dtype != torch.float32:
                value = value.to(torch.float32)
            value = value.detach().cpu().contiguous()
        out[key] = value
    return out


def state_dict_bytes(state: Mapping[str, "torch.Tensor"]) -> bytes:
    """Serialise a state dict the way torch.save does, into memory."""
    import torch

    buffer = io.BytesIO()
    torch.save(OrderedDict(state), buffer)
    return buffer.getvalue()


def build_model(state: Mapping[str, "torch.Tensor | np.ndarray"], arch: str) -> "torch.nn.Module":
    """The torchvision module for `state`, weights loaded, in eval mode."""
    import torch

    with torch.device("meta"):  # no random init to pay for: every tensor is about to be replaced
        model = get_arch(arch).build(num_classes_of(state, arch))
    # clones: the model must not share memory with (and train into) the caller's arrays
    model.load_state_dict(OrderedDict((k, v.clone()) for k, v in torch_state(state).items()), assign=True)
    return model.eval()
