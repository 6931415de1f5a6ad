"""Model files in and out: loading state dicts safely, checking them against their architecture, building
the module, and the numpy/torch views every stage works on.

Every intermediate file of the pipeline is a plain state dict, so this module owns the one place where files
become tensors: the torch-free reader (`ptfile`) or `torch.load(weights_only=True)`, never a full unpickle;
common checkpoint layouts unwrapped; the result matched to an architecture (given, or detected) before any
stage sees it. What architectures exist lives in `archs`.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import re
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import IO, TYPE_CHECKING, Any, NamedTuple

import ml_dtypes
import numpy as np

from alexcompress.errors import ModelError, check_range
from alexcompress.models.architecture import AUTO, NONE, Architecture, check_num_classes
from alexcompress.models.archs import detect, get_arch, is_floating, layer_keys

if TYPE_CHECKING:  # torch is imported lazily: `info` must not pay for it
    import torch


class Loaded(NamedTuple):
    """A state dict read from a file, the architecture it was matched to, and how (for the log)."""

    state: "OrderedDict[str, torch.Tensor | np.ndarray]"
    arch: str
    note: str | None  # "detected architecture resnet50 ...", or None where the caller named it


def is_array(value: object) -> bool:
    """A torch tensor or a numpy array: the stages take either, without importing torch for numpy."""
    return isinstance(value, np.ndarray) or type(value).__module__.startswith("torch") and hasattr(value, "shape")


def is_compressible(arch: "str | Architecture", key: str, value: "torch.Tensor | np.ndarray") -> bool:
    """Whether `arch` prunes, quantizes and codes this entry (its conv and linear weights)."""
    a = get_arch(arch) if isinstance(arch, str) else arch
    return a.is_compressible(key, tuple(int(d) for d in value.shape), is_floating(value))


def compressible_keys(state: Mapping[str, object], arch: str) -> list[str]:
    return layer_keys(get_arch(arch), state)


def as_numpy(value: "torch.Tensor | np.ndarray") -> np.ndarray:
    """A numpy view of a CPU tensor (no copy; bfloat16 as `ml_dtypes.bfloat16`), or the array itself."""
    if isinstance(value, np.ndarray):
        return value
    value = value.detach().cpu()
    if str(value.dtype) == "torch.bfloat16":
        import torch

        return value.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return value.numpy()


def c_contiguous(array: np.ndarray, dtype: "np.dtype | str | None" = None) -> np.ndarray:
    """`array` in C order (and `dtype`), copied only if needed; unlike np.ascontiguousarray, a 0-d array
    (a BatchNorm counter) stays 0-d."""
    return np.require(array, dtype=dtype, requirements="C")


def same_bits(a: "torch.Tensor | np.ndarray", b: "torch.Tensor | np.ndarray") -> bool:
    """The same dtype, shape and bytes (NaNs and signed zeros included)."""
    a, b = c_contiguous(as_numpy(a)), c_contiguous(as_numpy(b))
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a.reshape(-1).view(np.uint8), b.reshape(-1).view(np.uint8))


def numpy_state(state: Mapping[str, "torch.Tensor | np.ndarray"]) -> "OrderedDict[str, np.ndarray]":
    return OrderedDict((k, as_numpy(v)) for k, v in state.items())


def torch_state(state: Mapping[str, "torch.Tensor | np.ndarray"]) -> "OrderedDict[str, torch.Tensor]":
    """Tensors sharing memory with the arrays (torch.from_numpy), for building models."""
    return OrderedDict((k, to_torch(v) if isinstance(v, np.ndarray) else v) for k, v in state.items())


def to_torch(array: np.ndarray) -> "torch.Tensor":
    """A tensor sharing memory with `array` (C order; `ml_dtypes.bfloat16` as torch.bfloat16)."""
    import torch

    array = c_contiguous(array)
    if array.dtype == BFLOAT16:
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(array)


#: numpy's bfloat16 (numpy has none of its own: `ml_dtypes`, which the JAX project maintains)
BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
#: the half-precision dtypes whose coded weights are widened to float32 for the stages and narrowed back
HALF = {"float16": np.dtype("<f2"), "bfloat16": BFLOAT16}


def narrow(state: "MutableMapping[str, Any]", dtypes: Mapping[str, str]) -> None:
    """Give the entries `load_arrays` widened their original dtypes back, in place (round to nearest even:
    quantized values become the nearest the dtype holds; pruned and raw ones were exact all along)."""
    for key, name in dtypes.items():
        if key in state:
            state[key] = c_contiguous(as_numpy(state[key]).astype(HALF[name]))


#: the largest seed a random initialisation (and training) takes: torch's generator seeds are 64-bit
MAX_SEED = 2**63 - 1


def check_seed(seed: int) -> None:
    check_range("seed", seed, 0, MAX_SEED)


def random_model(arch: str = "alexnet", num_classes: int = 1000, seed: int = 0) -> "OrderedDict[str, torch.Tensor]":
    """A seeded random-init state dict (torchvision's own initialisation), for trying the tool offline.

    >>> sd = random_model("alexnet", num_classes=10, seed=0)
    >>> tuple(sd["classifier.6.weight"].shape)
    (10, 4096)
    """
    import torch

    check_num_classes(num_classes)
    check_seed(seed)
    architecture = get_arch(arch)
    if not architecture.buildable:
        raise ModelError(f"architecture {arch!r} has no module, so no random initialisation; name a model")
    from alexcompress.codec.container import max_elements

    total = sum(math.prod(shape) for shape in architecture.shapes(num_classes).values())
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 1 << 62
    if 8 * total > memory:  # the module and its state dict, in float32
        raise ModelError(
            f"{arch} with {num_classes:,} classes has {total:,} parameters: building it twice in float32 needs more memory than this machine has"
        )
    if total > max_elements():
        raise ModelError(
            f"{arch} with {num_classes} classes has {total:,} parameters, more than the {max_elements():,} a .dcz holds "
            "(alexcompress --max-elements N raises the limit)"
        )
    with torch.random.fork_rng(devices=[]):  # seeded, without disturbing the caller's global RNG
        torch.manual_seed(seed)
        model = architecture.build(num_classes)
    return OrderedDict((k, v.detach().clone()) for k, v in model.state_dict().items())


def pretrained(arch: str = "alexnet") -> "OrderedDict[str, torch.Tensor]":
    """torchvision's pretrained weights for `arch` (AlexNet: IMAGENET1K_V1; others: DEFAULT), downloaded
    once into torch's cache. Offline, this fails fast with a ModelError saying what to do."""
    return get_arch(arch).pretrained_state()


def _torch_reason(text: str) -> str:
    """The informative sentence of one of torch.load's multi-paragraph errors."""
    boilerplate = ("Weights only load failed", "Check the documentation", "Please file an issue", "(1)", "(2)")
    for line in (line.strip() for line in text.splitlines()):
        if line and not line.startswith(boilerplate) and not line.endswith("WeightsUnpickler error:"):
            return line.split(". ")[0].rstrip(".")[:200]
    return " ".join(text.split())[:200] or "unknown error"


# --------------------------------------------------------------------------------------------- loading

_CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")


def _torch_load(source: "str | os.PathLike[str] | bytes", label: str) -> object:
    import torch

    # only ever called by read_model_file, after its checks of the path and of the archive
    handle: IO[bytes] | str | os.PathLike[str] = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notices (sparse invariants, pickle protocol) are not for users
            return torch.load(handle, map_location="cpu", weights_only=True)
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


def read_model_file(source: "str | os.PathLike[str] | bytes", label: str) -> object:
    """The object a `.pt` holds (path or bytes): through `ptfile`'s checked reader, which refuses hostile
    files; torch.load(weights_only=True) only for a bounded, well-formed file with globals beyond a plain
    state dict's (a checkpoint with extras)."""
    from alexcompress.models.ptfile import read_state_dict

    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise ModelError(f"{label}: empty input, expected a torch .pt file")
    else:
        if not os.path.exists(source):
            raise ModelError(f"{label}: no such file")
        if os.path.isdir(source):
            raise ModelError(f"{label}: is a directory, expected a torch .pt file")
        if os.path.getsize(source) == 0:
            raise ModelError(f"{label}: empty file, expected a torch .pt file")
    obj = read_state_dict(source, label)
    return obj if obj is not None else _torch_load(source, label)


def _read_any(source: "str | os.PathLike[str] | bytes", label: str) -> object:
    """What a model file holds, by its format: a safetensors file or index (sharded), else a `.pt`."""
    from alexcompress.fileio import is_regular, read_prefix
    from alexcompress.models import safetensors

    if isinstance(source, (bytes, bytearray)):
        return safetensors.loads(source, label) if safetensors.is_safetensors(bytes(source[:9])) else read_model_file(source, label)
    path = os.fspath(source)
    if safetensors.is_index(path) and is_regular(path):
        return safetensors.load_index(path, label)
    if is_regular(path) and (path.endswith(".safetensors") or safetensors.is_safetensors(read_prefix(path, 9))):
        return safetensors.load(path, label)
    return read_model_file(source, label)


def load_state_dict(source: "str | os.PathLike[str] | bytes", *, arch: str | None = None, name: str | None = None) -> Loaded:
    """Read a `.pt` file (path or bytes) into a checked state dict of tensors, with its architecture.

    Nothing is ever fully unpickled: a pickled module or arbitrary object is refused with a message saying
    how to re-save it as a state dict. `arch` None or "auto" detects it.
    """
    state, found, note = _read(source, arch, name)
    return Loaded(torch_state(state), found, note)


def load_arrays(source: "str | os.PathLike[str] | bytes", *, arch: str | None = None, name: str | None = None) -> Loaded:
    """Like `load_state_dict`, as numpy arrays (coded weights float32), without importing torch for a plain
    state dict."""
    return load_widened(source, arch=arch, name=name)[0]


def load_widened(
    source: "str | os.PathLike[str] | bytes", *, arch: str | None = None, name: str | None = None, widened: bool = True
) -> "tuple[Loaded, dict[str, str]]":
    """`load_arrays`, with the original dtype of each half-precision weight it widened (`widen`); with
    `widened=False`, every tensor as numpy arrays of its own dtype (nothing copied)."""
    state, found, note = _read(source, arch, name)
    if not widened:
        return Loaded(numpy_state(state), found, note), {}
    arrays, dtypes = widen(state, found)
    return Loaded(arrays, found, note), dtypes


def _read(source: "str | os.PathLike[str] | bytes", arch: str | None, name: str | None) -> Loaded:
    """A `.pt` or safetensors file's state dict as it was stored (tensors or arrays), matched to an
    architecture."""
    label = name or (os.fspath(source) if not isinstance(source, (bytes, bytearray)) else "<stdin>")
    state = _unwrap(_read_any(source, label), label)
    found, note = match_arch(state, arch, label)
    return Loaded(state, found, note)


def _unwrap(obj: object, label: str) -> "OrderedDict[str, torch.Tensor | np.ndarray]":
    for _ in range(3):  # {"state_dict": {"model": ...}} nests at most a little
        if isinstance(obj, Mapping) and not _all_arrays(obj):
            inner = next((obj[k] for k in _CHECKPOINT_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping):
        raise ModelError(
            f"{label}: holds a {type(obj).__name__}, not a state dict; save one with torch.save(model.state_dict(), 'model.pt')"
        )
    if not obj:
        raise ModelError(f"{label}: holds an empty state dict")
    from alexcompress.codec.container import MAX_TENSORS

    if len(obj) > MAX_TENSORS:  # refused now, not after minutes of work on 100,000 tensors
        raise ModelError(f"{label}: holds {len(obj):,} tensors, more than the {MAX_TENSORS:,} a .dcz holds")
    state: OrderedDict = OrderedDict()
    for key, value in obj.items():
        if not isinstance(key, str) or not is_array(value):
            raise ModelError(f"{label}: entry {_short(key)} is not a tensor; expected a state dict of tensors")
        if not isinstance(value, np.ndarray):
            _check_tensor(value, f"{label}: entry {_short(key)}")
        for prefix in ("module.", "_orig_mod."):  # DataParallel / torch.compile wrappers
            if key.startswith(prefix):
                key = key[len(prefix) :]
        state[key] = value
    return state


def _short(key: object) -> str:
    text = repr(key) if isinstance(key, str) else f"of type {type(key).__name__}"
    return text if len(text) <= 80 else text[:77] + "..."


_TORCH_DTYPES = ("float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool")


def _check_tensor(value: "torch.Tensor", where: str) -> None:
    """What torch.load can hand back but no stage can use: sparse, meta, quantized or exotic tensors, and
    views larger than their storage (densifying a stride-0 view is a memory bomb)."""
    import torch

    if value.layout != torch.strided:
        raise ModelError(f"{where} is a sparse tensor ({value.layout}); save dense tensors: tensor.to_dense()")
    if value.is_meta:
        raise ModelError(f"{where} is a meta tensor: it holds no data")
    if str(value.dtype).replace("torch.", "") not in _TORCH_DTYPES:
        raise ModelError(f"{where} has dtype {value.dtype}, which cannot be compressed or stored")
    if value.numel() and value.numel() * value.element_size() > value.untyped_storage().nbytes():
        raise ModelError(f"{where} is a view of {value.numel()} elements on a smaller storage (an expanded view)")


def _all_arrays(obj: Mapping) -> bool:
    return len(obj) > 0 and all(is_array(v) for v in obj.values())


def match_arch(state: Mapping[str, "torch.Tensor | np.ndarray"], arch: str | None, label: str = "model") -> tuple[str, str | None]:
    """The architecture of `state`: `arch` checked against it, or detected (None/"auto"); with the note
    to log about a detection."""
    if arch in (None, AUTO):
        found = detect(state)
        validate_state_dict(state, found.name, label)  # what detection does not look at: the number of classes, dtypes
        return found.name, found.reason
    validate_state_dict(state, arch, label)
    return arch, None


def num_classes_of(state: Mapping[str, "torch.Tensor | np.ndarray"], arch: str) -> int:
    return get_arch(arch).num_classes(state)


def validate_state_dict(state: Mapping[str, "torch.Tensor | np.ndarray"], arch: str, label: str = "model") -> int:
    """Check keys, shapes and dtypes against `arch`; returns num_classes (0 for `none`)."""
    architecture = get_arch(arch)
    if arch == NONE:
        if not layer_keys(architecture, state):  # an empty table and "0 / 0 weights" otherwise, and a file written
            dtypes = sorted({str(getattr(v, "dtype", "?")).replace("torch.", "") for v in state.values()})
            raise ModelError(f"{label}: no floating-point weight of 2 or more dimensions to compress (its tensors are {', '.join(dtypes)})")
        return 0
    try:
        num_classes = architecture.num_classes(state)
        check_num_classes(num_classes)
    except ModelError as exc:
        raise ModelError(f"{label}: {exc}") from None
    expected = architecture.shapes(num_classes)
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
            raise ModelError(f"{label}: {key} has shape {tuple(state[key].shape)}, expected {shape} for {arch}")
    for key in (k for k in expected if architecture.expects_floating(k)):
        if not is_floating(state[key]):
            raise ModelError(f"{label}: {key} has dtype {state[key].dtype}, expected a floating-point tensor")
    return num_classes


def _few(keys: list[str], limit: int = 4) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def widen(state: Mapping[str, "torch.Tensor | np.ndarray"], arch: str = "alexnet") -> "tuple[OrderedDict[str, np.ndarray], dict[str, str]]":
    """The state as contiguous numpy arrays, every coded weight in float32 (what the stages compute in);
    everything else in its own dtype (bfloat16 as `ml_dtypes.bfloat16`). Returns (arrays, the original dtype
    of each float16/bfloat16 weight widened, for `narrow`). No copy where an entry already is what it
    should be."""
    architecture = get_arch(arch)
    out: OrderedDict = OrderedDict()
    dtypes: dict[str, str] = {}
    for key, value in state.items():
        array = as_numpy(value)
        if is_floating(value) and is_compressible(architecture, key, value) and array.dtype != np.float32:
            half = next((name for name, dtype in HALF.items() if array.dtype == dtype), None)
            if half is not None:
                dtypes[key] = half
            array = array.astype(np.float32)
        out[key] = c_contiguous(array)
    return out, dtypes


def state_dict_bytes(state: Mapping[str, "torch.Tensor | np.ndarray"]) -> bytes:
    """Serialise a state dict as a `.pt` file image (torch's zip format, written without torch)."""
    from alexcompress.models.ptfile import write_state_dict

    buffer = io.BytesIO()
    write_state_dict(OrderedDict((k, as_numpy(v)) for k, v in state.items()), buffer)
    return buffer.getvalue()


def save_state_dict(state: Mapping[str, "torch.Tensor | np.ndarray"], handle: "IO[bytes]", arch: str | None = None) -> None:
    """Write a state dict as a `.pt` that torch.load(weights_only=True) reads and `arch`'s module loads
    (with the module versions torch keeps beside it): without importing torch (`ptfile`), or with
    torch.save for what that writer does not cover (bfloat16, files over 4 GiB)."""
    from alexcompress.models.ptfile import Unwritable, write_state_dict

    versions = get_arch(arch).versions() if arch is not None else {}
    if isinstance(state, LazyState):  # made once, whichever writer takes it
        state = OrderedDict(state.items())
    try:
        arrays = OrderedDict((k, as_numpy(v)) for k, v in state.items())  # TypeError: bfloat16 and kin
        write_state_dict(arrays, handle, versions)  # raises before writing a byte
        return
    except (Unwritable, TypeError):
        pass
    import torch

    tensors = torch_state(state)
    tensors._metadata = OrderedDict((prefix, {"version": v}) for prefix, v in versions.items())  # type: ignore[attr-defined]
    torch.save(tensors, handle)


class LazyState(Mapping[str, np.ndarray]):
    """A state dict whose tensors are made one at a time, as they are read (`make(key)`), each of the dtype
    and shape `table` announces ({key: (dtype or its name, shape)}, in order): what a stage working tensor by tensor
    returns, so that writing it to a safetensors file holds one tensor at a time. Reading an entry twice
    makes it twice.

    >>> lazy = LazyState({"w": ("float32", (2,))}, lambda key: np.zeros(2, np.float32))
    >>> list(lazy), lazy["w"].tolist()
    (['w'], [0.0, 0.0])
    """

    def __init__(self, table: "Mapping[str, tuple[str, tuple[int, ...]]]", make: "Callable[[str], np.ndarray]") -> None:
        self.table = dict(table)
        self._make = make

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self.table:
            raise KeyError(key)
        return self._make(key)

    def __iter__(self) -> "Iterator[str]":
        return iter(self.table)

    def __len__(self) -> int:
        return len(self.table)


def save_state(state: Mapping[str, "torch.Tensor | np.ndarray"], handle: "IO[bytes]", arch: str | None = None, path: str = "") -> None:
    """Write a state dict in the format `path`'s name asks for: `.safetensors` (tensors in their own dtypes,
    streamed tensor by tensor: a `LazyState` holds one at a time), else a torch `.pt` (`save_state_dict`);
    stdout is a `.pt`."""
    if path.endswith(".safetensors"):
        from alexcompress.models.safetensors import write, write_streaming

        if isinstance(state, LazyState):
            write_streaming(state.table, ((key, c_contiguous(state[key])) for key in state), handle, {"format": "pt"})
            return
        write(OrderedDict((k, as_numpy(v)) for k, v in state.items()), handle, {"format": "pt"})
        return
    save_state_dict(state, handle, arch)


def build_model(state: Mapping[str, "torch.Tensor | np.ndarray"], arch: str) -> "torch.nn.Module":
    """The module for `state`, weights loaded (strictly), in eval mode, in float32."""
    architecture = get_arch(arch)
    if not architecture.buildable:
        raise ModelError(
            f"this state dict is of no known architecture ({arch!r}): build your model and pass it, "
            "e.g. alexcompress.load(path, model=MyNet())"
        )
    model = architecture.build_empty(num_classes_of(state, arch))
    return load_into(model, state).float()  # a half-precision file runs as torchvision's float32 module


def load_into(
    model: "torch.nn.Module", state: Mapping[str, "torch.Tensor | np.ndarray"], *, own: "frozenset[str]" = frozenset(), copy: bool = True
) -> "torch.nn.Module":
    """Load `state` strictly into `model` (copies unless `copy=False`: the model never shares memory with
    the arrays it was given). `own`: the model's entries that `state` must not hold and need not fill (the
    sparse runtime's compressed buffers: a file naming one would overwrite it)."""
    tensors = OrderedDict((k, v.clone() if copy else v) for k, v in torch_state({k: v for k, v in state.items() if k not in own}).items())
    tensors._metadata = getattr(model.state_dict(), "_metadata", OrderedDict())  # type: ignore[attr-defined]
    on_meta = any(t.is_meta for t in (*model.parameters(), *model.buffers()))
    try:
        result = model.load_state_dict(tensors, strict=False, assign=on_meta)
    except RuntimeError as exc:
        raise ModelError(f"the state dict does not fit the model: {_torch_reason(str(exc))}") from None
    missing = [k for k in result.missing_keys if k not in own]
    unexpected = [*(k for k in state if k in own), *result.unexpected_keys]
    if missing or unexpected:
        detail = "; ".join(f"{what} {', '.join(keys[:3])}" for what, keys in (("missing", missing), ("unexpected", unexpected)) if keys)
        raise ModelError(f"the state dict does not fit the model: {detail}")
    if on_meta and any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        raise ModelError("the model keeps tensors that are not in the state dict (non-persistent buffers on meta)")
    return model.eval()


def resolve_arch(state: Mapping[str, object], arch: "str | Architecture | None") -> Architecture:
    """The architecture object for a library call: given by name, or detected from `state` (None/"auto")."""
    if isinstance(arch, Architecture):
        return arch
    return get_arch(detect(state).name if arch in (None, AUTO) else arch)
