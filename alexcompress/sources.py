"""What a MODEL argument may be, resolved into arrays or a module: a `.pt` or `.dcz` file, `-` (stdin), a
pipe, FIFO or device (read once, sniffed on the way), or a keyword: `random[:SEED[:CLASSES]]` (a seeded
random-init model, offline) or `pretrained` (torchvision's weights). An existing file always wins over a
keyword of the same name; `arch` None or "auto" detects the architecture (keywords default to
`DEFAULT_ARCH`).

>>> source = read_model("random:0:10")
>>> source.arch, source.state["classifier.6.weight"].shape
('alexnet', (10, 4096))
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO, Optional, cast

from alexcompress.errors import AlexCompressError
from alexcompress.fileio import STDIO, check_output, default_output, is_regular, read_file, read_prefix, read_upto

if TYPE_CHECKING:
    import numpy as np
    import torch

    from alexcompress.runtime.sparse import RuntimePlan

#: the architecture of the model keywords when none is given (`--arch`)
DEFAULT_ARCH = "alexnet"
STDIN_LABEL = "<stdin>"

_RANDOM = re.compile(r"random(?::(\d+))?(?::(\d+))?")


@dataclass
class ModelInput:
    """A model as numpy arrays (coded weights float32), whatever its source. The `api` stages work on these
    arrays in place (a model read from a file is not needed twice); copy `state` first to keep it."""

    state: "dict[str, np.ndarray]"
    arch: str
    label: str  # the file name, `<stdin>` or the keyword: what messages call it
    note: Optional[str] = None  # how the architecture was detected, for the log
    #: the original dtype of each half-precision weight the stages work on in float32: what they write
    dtypes: "dict[str, str]" = field(default_factory=dict)


@dataclass
class InferenceModel:
    """A model to run: a module in eval mode, dense or built from its compressed form."""

    module: "torch.nn.Module"
    label: str
    outputs: int
    notes: list[str] = field(default_factory=list)


def label_of(spec: str) -> str:
    return STDIN_LABEL if spec == STDIO else spec


def is_keyword(spec: str) -> bool:
    """`spec` names a model keyword, not a file (an existing file of that name wins)."""
    return spec != STDIO and not os.path.exists(spec) and (spec == "pretrained" or _RANDOM.fullmatch(spec) is not None)


def keyword_arch(arch: Optional[str]) -> str:
    """The architecture a keyword builds: `arch`, or `DEFAULT_ARCH` when none (or "auto") is given."""
    return arch if arch not in (None, "auto") else DEFAULT_ARCH


def keyword_stem(spec: str, arch: Optional[str]) -> Optional[str]:
    """`alexnet-random`, `resnet50-pretrained`: output names for model keywords; None for files."""
    if not is_keyword(spec):
        return None
    return f"{keyword_arch(arch)}-{'pretrained' if spec == 'pretrained' else 'random'}"


def plan_output(spec: str, arch: Optional[str], output: Optional[str], suffix: str, force: bool) -> str:
    """The output path (given, or derived from MODEL), refused before any work if it would clobber."""
    target = output if output is not None else default_output(spec, suffix, keyword_stem(spec, arch))
    check_output(target, inputs=(spec,), force=force)
    return target


def read_input(path: str, what: str = "input") -> bytes:
    """All bytes of a regular file; of stdin (`-`), a pipe, FIFO or device: read once, sniffed on the way."""
    if path == STDIO:
        if sys.stdin is None:
            raise AlexCompressError(f"{what} is '-' but stdin is closed")
        if sys.stdin.isatty():
            raise AlexCompressError(f"{what} is '-' but nothing is piped into stdin")
        return read_stream(sys.stdin.buffer, STDIN_LABEL)
    return read_file(path, lambda handle: handle.read() if is_regular(path) else read_stream(handle, path))


def read_stream(handle: BinaryIO, label: str) -> bytes:
    """A model from a stream, read once: refused at its first bytes unless it starts like a `.dcz` or a zip
    `.pt`; a `.dcz` is read no further than its header declares (plus one byte to notice trailing data). A
    `.pt` comes back as a bytearray, so its tensors can be views into it rather than copies."""
    from alexcompress.codec.container import MAGIC, read_dcz_stream
    from alexcompress.models.safetensors import is_safetensors

    head = read_upto(handle, len(MAGIC))
    if not head:
        raise AlexCompressError(f"{label}: empty input, expected a .dcz, a torch .pt or a safetensors file")
    if head == MAGIC:
        return read_dcz_stream(handle, head)
    if len(head) == len(MAGIC):
        head += read_upto(handle, 1)
    # a zip's directory is at its end, a safetensors file is views of its data: either is read whole, into
    # one writable buffer
    if head[:4] == b"PK\x03\x04" or is_safetensors(head):
        data = bytearray(head)
        while chunk := handle.read(1 << 24):
            data += chunk
        return data  # type: ignore[return-value]
    if head[:1] == b"\x80":
        raise AlexCompressError(
            f"{label}: a plain pickle or a legacy (torch < 1.6) file, which is never unpickled here; re-save it with a current torch.save"
        )
    raise AlexCompressError(f"{label}: not a .dcz, a torch .pt or a safetensors file (it starts with {head.hex(' ')})")


def is_dcz_file(spec: str) -> bool:
    """`spec` is a regular file that starts like a `.dcz` (sniffing a pipe would consume it)."""
    from alexcompress.codec.container import MAGIC, is_dcz

    return not is_keyword(spec) and spec != STDIO and is_regular(spec) and is_dcz(read_prefix(spec, len(MAGIC)))


def read_dcz(spec: str, what: str = "FILE", *, mapped: bool = False) -> bytes:
    """The bytes of a `.dcz` file (or stdin), refused in one line if they are anything else. With `mapped`, a
    regular file comes back memory-mapped (read-only, its pages read as they are touched): for decoders that
    go tensor by tensor and give each tensor's pages back (`container.release_sections`)."""
    from alexcompress.codec.container import MAGIC, is_dcz

    if mapped and spec != STDIO and is_regular(spec) and is_dcz(read_prefix(spec, len(MAGIC))):
        import mmap

        def mapping(handle: BinaryIO) -> bytes:
            return mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)  # type: ignore[return-value]

        return read_file(spec, mapping)
    data = read_input(spec, what)
    if not is_dcz(data):
        raise AlexCompressError(f"{spec}: not a .dcz file (bad magic number)")
    return data


def read_model(spec: str, arch: Optional[str] = None, *, widened: bool = True) -> ModelInput:
    """Resolve a MODEL argument into numpy arrays (torch is imported only where a source needs it); coded
    half-precision weights in float32 (their dtypes in `dtypes`), or with `widened=False` every tensor as
    the source holds it (a safetensors file's: views of its memory map), for `api.compress` to stream."""
    from alexcompress.codec.container import MAGIC, is_dcz
    from alexcompress.models.architecture import AUTO
    from alexcompress.models.archs import get_arch
    from alexcompress.models.dcz import decode_arrays
    from alexcompress.models.state import load_widened, numpy_state, pretrained, random_model, widen

    if arch not in (None, AUTO):
        get_arch(arch)  # an unknown name fails before anything is read
    if is_keyword(spec):
        name = keyword_arch(arch)
        match = _RANDOM.fullmatch(spec)
        if match:
            seed, classes = int(match.group(1) or 0), int(match.group(2) or 1000)
            from alexcompress.models.state import MAX_SEED

            if seed > MAX_SEED:
                raise AlexCompressError(f"{spec}: the seed must be at most {MAX_SEED}")
            return ModelInput(numpy_state(random_model(name, classes, seed)), name, spec)
        return ModelInput(numpy_state(pretrained(name)), name, spec)
    label = label_of(spec)
    # a regular file is sniffed and read by path; stdin, pipes, FIFOs and devices are read once, in full
    streamed = spec == STDIO or not is_regular(spec)
    data: Any = read_input(spec, "MODEL") if streamed or is_dcz(read_prefix(spec, len(MAGIC))) else None
    if data is not None and is_dcz(data):
        decoded, found = decode_arrays(data)
        if arch not in (None, AUTO, found):
            raise AlexCompressError(f"{label}: holds a {found} model, not {arch}")
        state, dtypes = widen(decoded, found) if widened else (decoded, {})
        return ModelInput(state, found, label, dtypes=dtypes)
    loaded, dtypes = load_widened(data if data is not None else spec, arch=arch, name=label, widened=widened)
    return ModelInput(cast("dict[str, np.ndarray]", loaded.state), loaded.arch, label, loaded.note, dtypes)


def inference_model(spec: str, arch: Optional[str] = None, sparse: Optional[bool] = None) -> InferenceModel:
    """MODEL as a module to run: from its compressed form (`sparse`, default for a .dcz) or dense."""
    from alexcompress.models.architecture import AUTO
    from alexcompress.models.state import build_model, num_classes_of

    if sparse is None:
        sparse = not is_keyword(spec) and (spec == STDIO or not is_regular(spec) or is_dcz_file(spec))
    if not sparse:
        source = read_model(spec, arch)
        notes = [source.note] if source.note else []
        return InferenceModel(build_model(source.state, source.arch), source.label, num_classes_of(source.state, source.arch), notes)
    from alexcompress.codec.container import is_dcz
    from alexcompress.runtime.sparse import load_sparse

    label = label_of(spec)
    if is_keyword(spec):
        raise AlexCompressError(f"{spec}: --sparse runs a .dcz file; a model keyword is dense (use --dense or compress it first)")
    data = read_input(spec, "MODEL")
    if not is_dcz(data):
        raise AlexCompressError(f"{label}: --sparse runs a .dcz file, and this is a .pt (encode it first, or use --dense)")
    module = load_sparse(data)
    plan = cast("RuntimePlan", module.runtime_plan)
    if arch not in (None, AUTO, plan.arch):
        raise AlexCompressError(f"{label}: holds a {plan.arch} model, not {arch}")
    return InferenceModel(module, label, plan.outputs, [plan.describe()])
