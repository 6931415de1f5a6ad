"""torch's zip `.pt` format without importing torch: the reader every model file goes through, and a writer.

`torch.save` writes a zip archive holding `<root>/data.pkl` (a pickle) and one raw record per storage,
`<root>/data/<key>`. Before anything is unpickled the reader checks what the file can justify: a zip whose
records are all stored (torch never compresses: a deflated record is a zip bomb), a pickle of bounded size
whose opcodes are pre-scanned by an abstract interpreter (memo indices within reach, nesting depth bounded:
a deeply nested key would overflow the C stack while hashing), storage records of exactly their declared
size, tensor views inside their storage (a stride-0 view would be copied densely). Hostile input is a
ModelError; nothing is allocated beyond a small multiple of the file's size.

The unpickler whitelists exactly the globals a plain state dict uses (OrderedDict, torch's storage types,
`_rebuild_tensor_v2`), so nothing but numpy arrays can come out of it. A file that passes every check but
uses other globals (a checkpoint with extras) makes `read_state_dict` return None: the caller then uses
`torch.load(weights_only=True)` on a file already known to be bounded. Skipping `import torch` saves
~2 s and ~650 MB per process.

The writer produces what `torch.save` would for a dict of tensors (protocol-2 pickle, stored records
aligned to 64 bytes so that `torch.load(mmap=True)` works), so the stages of a shell pipeline never import
torch either. The tests load its output with `torch.load(weights_only=True)` across dtypes and shapes.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import struct
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, BinaryIO, Optional

import ml_dtypes
import numpy as np

from alexcompress.errors import ModelError

STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),  # numpy has no bfloat16 of its own
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}
MAX_PICKLE_BYTES = 64 << 20  # a state dict's pickle is a few hundred bytes per tensor
MAX_NESTING = 64  # a state dict nests ~5 deep; a checkpoint with optimizer state ~10
#: 8 records per tensor of the largest model a .dcz holds (4,096 tensors): a training checkpoint keeps the
#: model twice (current and best), the optimizer's state and the masks. More is refused at the zip directory,
#: before 100,000 tiny records take seconds to unpickle
MAX_RECORDS = 1 << 15
ZIP_MAGIC = b"PK\x03\x04"


class _Unsupported(Exception):
    """Valid and bounded, but beyond this reader (other globals): torch.load(weights_only=True) decides."""


class _Hostile(Exception):
    """Something no torch.save writes and no reader should allocate for."""


class _StorageType:
    def __init__(self, name: str) -> None:
        self.name, self.dtype = name, STORAGE_DTYPES[name]


def _rebuild_tensor(storage: np.ndarray, offset: int, size: tuple, stride: tuple, *rest: Any) -> np.ndarray:
    if not isinstance(storage, np.ndarray) or not isinstance(size, tuple) or not isinstance(stride, tuple):
        raise _Hostile("a tensor without a storage, size or stride")
    if not all(type(v) is int and v >= 0 for v in (offset, *size, *stride)) or len(size) != len(stride):
        raise _Hostile("a tensor with a negative or malformed size, stride or offset")
    count = 1
    for d in size:
        count *= d
    if count == 0:
        return np.zeros(size, dtype=storage.dtype)
    last = offset + sum((d - 1) * s for d, s in zip(size, stride))
    if last >= storage.size:
        raise _Hostile(f"a tensor view reaches element {last} of a storage of {storage.size}")
    if count > storage.size:  # an expanded (stride-0) view: copying it densely is a memory bomb
        raise _Hostile(f"a tensor of {count} elements viewing a storage of {storage.size} (an expanded view)")
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size, strides=[s * itemsize for s in stride], writeable=False)
    contiguous = list(stride) == _c_strides(size)
    if contiguous and offset == 0 and count == storage.size:
        return storage.reshape(size)  # the common case: the tensor is its whole storage, no copy
    return np.array(view, copy=True)


def _c_strides(size: tuple) -> list[int]:
    strides, step = [], 1
    for d in reversed(size):
        strides.append(step)
        step *= max(d, 1)
    return list(reversed(strides))


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, root: str, buffer: Optional[bytearray] = None) -> None:
        super().__init__(io.BytesIO(data))
        self.archive, self.root, self.buffer = archive, root, buffer
        self.storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        raise _Unsupported(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> np.ndarray:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise _Hostile("a persistent id that is not a storage")
        _, storage_type, key, _location, numel = pid
        if not isinstance(key, str) or type(numel) is not int or numel < 0:
            raise _Hostile("a storage with a malformed key or size")
        if key in self.storages:
            return self.storages[key]
        try:
            info = self.archive.getinfo(f"{self.root}/data/{key}")
        except KeyError:
            raise _Hostile(f"storage {key[:40]!r} has no record in the archive") from None
        dtype = storage_type.dtype
        if info.file_size != numel * dtype.itemsize:
            raise _Hostile(f"storage {key[:40]!r} declares {numel} elements but its record holds {info.file_size} bytes")
        # torch stores records uncompressed: read them straight into the array (no zipfile buffering, no
        # intermediate bytes) - or, from a writable in-memory file (a pipe read into a bytearray), take a
        # view of it without copying - then check the zip's CRC-32 as zipfile would
        handle = self.archive.fp
        handle.seek(info.header_offset)
        local = handle.read(30)
        if len(local) != 30 or local[:4] != ZIP_MAGIC:
            raise _Hostile(f"storage {key[:40]!r}: damaged zip record")
        name_length, extra_length = struct.unpack("<HH", local[26:30])
        start = info.header_offset + 30 + name_length + extra_length
        if self.buffer is not None:
            if start + info.file_size > len(self.buffer):
                raise _Hostile(f"storage {key[:40]!r}: truncated")
            array = np.frombuffer(self.buffer, dtype=dtype, count=numel, offset=start)
            view = memoryview(array.view(np.uint8)) if numel else memoryview(b"")
            if zlib.crc32(view) != info.CRC:
                raise _Hostile(f"storage {key[:40]!r}: damaged (CRC-32 mismatch)")
        else:
            array = np.empty(numel, dtype=dtype)
            view = memoryview(array.view(np.uint8))
            handle.seek(start)
            if handle.readinto(view) != len(view) or zlib.crc32(view) != info.CRC:
                raise _Hostile(f"storage {key[:40]!r}: truncated or damaged (CRC-32 mismatch)")
        self.storages[key] = array
        return array


_CONTAINER_OPS = {"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"}
_PUT_OPS, _GET_OPS = {"PUT", "BINPUT", "LONG_BINPUT"}, {"GET", "BINGET", "LONG_BINGET"}


def prescan(data: bytes) -> None:
    """Run the pickle's opcodes on an abstract stack of nesting depths, before any unpickler sees them.

    Refuses (with `_Hostile`) memo indices beyond the number of opcodes so far (the C unpickler sizes its memo
    table by the largest index), references to memo slots never written, and objects nested deeper than
    MAX_NESTING (hashing or comparing a deeply nested key recurses in C and overflows the stack). Cost:
    one pass, memory proportional to the stack and memo, both bounded by the pickle's size.
    """
    mark = pickletools.markobject
    depths: list[int] = []
    marks: list[int] = []
    memo: dict[int, int] = {}
    try:
        for count, (op, arg, _) in enumerate(pickletools.genops(data), start=1):
            name = op.name
            if name == "MARK":
                marks.append(len(depths))
                continue
            if name in _PUT_OPS or name == "MEMOIZE":
                index = len(memo) if name == "MEMOIZE" else arg
                if not depths or index > count:
                    raise _Hostile("a pickle memo index far beyond its size (a memory bomb)")
                memo[index] = depths[-1]
                continue
            if name in _GET_OPS:
                if arg not in memo:
                    raise _Hostile("a pickle that reads a memo slot it never wrote")
                depths.append(memo[arg])
                continue
            before = op.stack_before
            if mark in before:
                if not marks:
                    raise _Hostile("a pickle that closes a mark it never opened")
                cut = marks.pop()
                below = before.index(mark)
                if cut < below:
                    raise _Hostile("a pickle whose stack runs dry")
                consumed = depths[cut - below :]
                del depths[cut - below :]
            else:
                if len(depths) < len(before):
                    raise _Hostile("a pickle whose stack runs dry")
                consumed = depths[len(depths) - len(before) :]
                del depths[len(depths) - len(before) :]
            if name == "DUP":
                depths.extend(consumed * 2)
                continue
            if not consumed:
                depth = 0
            elif name in _CONTAINER_OPS:
                depth = max(consumed[0], 1 + max(consumed[1:], default=0))
            else:
                depth = 1 + max(consumed)
            if depth > MAX_NESTING:
                raise _Hostile(f"objects nested more than {MAX_NESTING} deep (a crash or memory bomb)")
            depths.extend([depth] * len(op.stack_after))
    except _Hostile:
        raise
    except Exception as exc:  # genops: unknown opcode, truncated argument, ...
        raise _Hostile(f"a malformed pickle ({' '.join(str(exc).split())[:120]})") from None


def read_state_dict(source: "str | os.PathLike[str] | bytes", label: str = "model") -> Optional["OrderedDict[str, Any]"]:
    """The top-level object of a zip `.pt` (a path or the file's bytes) as numpy arrays in (nested) dicts.

    A ModelError for anything that is not a torch zip archive or that the checks above refuse; None for a
    bounded, well-formed file whose pickle uses globals beyond a plain state dict's (the caller may then
    use torch.load(weights_only=True) on it).
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source)
    except OSError as exc:  # the file itself (permissions, I/O); zipfile's own complaints are not OSErrors
        raise ModelError(f"{label}: cannot read ({exc.strerror or exc})") from None
    except Exception:  # BadZipFile, NotImplementedError (odd versions), ValueError, EOFError, struct.error...
        raise ModelError(f"{label}: {_not_a_zip(source)}") from None
    try:
        with archive:
            return _read_archive(archive, label, source if isinstance(source, bytearray) else None)
    except _Hostile as exc:
        raise ModelError(f"{label}: {exc}") from None
    except _Unsupported:
        return None
    except ModelError:
        raise
    except Exception as exc:  # anything the unpickler or zipfile raise on damage
        raise ModelError(f"{label}: not a readable torch file, or truncated ({' '.join(str(exc).split())[:160]})") from None


def _not_a_zip(source: "str | os.PathLike[str] | bytes") -> str:
    if isinstance(source, (bytes, bytearray)):
        prefix = source[:4]
    else:
        with open(source, "rb") as handle:
            prefix = handle.read(4)
    if prefix == ZIP_MAGIC:
        return "not a readable torch file, or truncated (a damaged zip archive)"
    if prefix[:1] == b"\x80" or prefix[:1] == b"(":
        return (
            "a torch file in the legacy format (torch < 1.6) or a plain pickle, which is never unpickled here; "
            "load it with a current torch and re-save it: torch.save(model.state_dict(), 'model.pt')"
        )
    return "not a readable torch file (not a zip archive)"


def check_archive(source: "str | os.PathLike[str] | bytes", label: str = "file") -> None:
    """Every check `read_state_dict` makes before unpickling (a torch zip archive, stored records, a bounded
    pickle whose opcodes pass `prescan`), for a file that `torch.load(weights_only=True)` reads next (a
    training checkpoint: optimizer state and RNG states beyond a state dict). A ModelError otherwise."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source)
    except OSError as exc:
        raise ModelError(f"{label}: cannot read ({exc.strerror or exc})") from None
    except Exception:
        raise ModelError(f"{label}: {_not_a_zip(source)}") from None
    try:
        with archive:
            _checked_pickle(archive, label)
    except _Hostile as exc:
        raise ModelError(f"{label}: {exc}") from None
    except _Unsupported as exc:
        raise ModelError(f"{label}: not readable here ({exc})") from None
    except ModelError:
        raise
    except Exception as exc:  # zipfile's own complaints on damage (a bad CRC-32, a truncated record)
        raise ModelError(f"{label}: not a readable torch file, or truncated ({' '.join(str(exc).split())[:160]})") from None


def _read_archive(archive: zipfile.ZipFile, label: str, buffer: Optional[bytearray] = None) -> Any:
    data, root = _checked_pickle(archive, label)
    return _Unpickler(data, archive, root, buffer).load()


def _checked_pickle(archive: zipfile.ZipFile, label: str) -> "tuple[bytes, str]":
    """The archive's data.pkl, and its root folder, once the archive and the pickle's opcodes pass."""
    infos = archive.infolist()
    if len(infos) > MAX_RECORDS:
        raise _Hostile(
            f"a zip archive of {len(infos):,} records, more than {MAX_RECORDS:,} (a model a .dcz holds has at most 4,096 tensors)"
        )
    pickles = [i for i in infos if i.filename.endswith("/data.pkl") and i.filename.count("/") == 1]
    if any(
        i.filename.endswith("/constants.pkl") and i.filename.count("/") == 1 for i in infos
    ):  # before the zip checks: it compresses code
        raise ModelError(
            f"{label}: a TorchScript archive (torch.jit.save), not a state dict; "
            "save one with torch.save(torch.jit.load(path).state_dict(), 'model.pt')"
        )
    if len(pickles) != 1:
        raise ModelError(f"{label}: not a readable torch file (a zip archive without a torch data.pkl record)")
    for info in infos:
        if info.compress_type != zipfile.ZIP_STORED:
            raise _Hostile(f"record {info.filename[:60]!r} is compressed, which torch.save never does (a zip bomb?)")
    if pickles[0].file_size > MAX_PICKLE_BYTES:
        raise _Hostile(f"a data.pkl of {pickles[0].file_size} bytes, more than {MAX_PICKLE_BYTES} (a state dict needs a few KB)")
    root = pickles[0].filename.split("/")[0]
    names = {i.filename for i in infos}
    if f"{root}/byteorder" in names and archive.read(f"{root}/byteorder") != b"little":
        raise _Unsupported("big-endian archive")
    data = archive.read(pickles[0])
    prescan(data)
    return data, root


# ------------------------------------------------------------------------------------------------ writer

ALIGNMENT = 64  # torch aligns record data so that torch.load(mmap=True) can map it
_ZIP_LIMIT = 0xFFFFFFFF  # no ZIP64 here: larger files go through torch.save


class Unwritable(Exception):
    """The state dict holds something this writer does not produce (the caller uses torch.save)."""


def c_bytes(array: np.ndarray) -> np.ndarray:
    """An array's bytes in C order, as uint8 (a view where it can be; any dtype, bfloat16 included)."""
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8)


def _storage_name(array: np.ndarray) -> str:
    little = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
    name = next((name for name, dtype in STORAGE_DTYPES.items() if dtype == little), None)
    if name is None:
        raise Unwritable(f"dtype {array.dtype}")
    return name


class _Pickle:
    """Just enough protocol-2 pickle opcodes to spell a state dict the way torch.save does."""

    def __init__(self) -> None:
        self.out = bytearray(b"\x80\x02")

    def glob(self, module: str, name: str) -> None:
        self.out += b"c" + module.encode() + b"\n" + name.encode() + b"\n"

    def text(self, value: str) -> None:
        data = value.encode("utf-8")
        self.out += b"X" + struct.pack("<I", len(data)) + data

    def int(self, value: int) -> None:
        if 0 <= value < 256:
            self.out += b"K" + bytes([value])
        elif 0 <= value < 65536:
            self.out += b"M" + struct.pack("<H", value)
        elif -(2**31) <= value < 2**31:
            self.out += b"J" + struct.pack("<i", value)
        else:
            data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
            self.out += b"\x8a" + bytes([len(data)]) + data

    def tuple_of_ints(self, values: "tuple[int, ...]") -> None:
        self.out += b"("
        for v in values:
            self.int(v)
        self.out += b"t"


def _pickle(keys: list[str], arrays: list[np.ndarray], versions: Mapping[str, int]) -> bytes:
    p = _Pickle()
    p.glob("collections", "OrderedDict")
    p.out += b")R("
    for index, (key, array) in enumerate(zip(keys, arrays)):
        p.text(key)
        p.glob("torch._utils", "_rebuild_tensor_v2")
        p.out += b"(("  # the argument tuple, then the persistent id of the storage
        p.text("storage")
        p.glob("torch", _storage_name(array))
        p.text(str(index))
        p.text("cpu")
        p.int(array.size)
        p.out += b"tQ"
        p.int(0)  # storage offset
        p.tuple_of_ints(tuple(int(d) for d in array.shape))
        p.tuple_of_ints(tuple(s // array.itemsize for s in array.strides) if array.size else _zero_strides(array.shape))
        p.out += b"\x89"  # requires_grad False
        p.glob("collections", "OrderedDict")
        p.out += b")Rt"  # empty backward hooks; close the argument tuple
        p.out += b"R"
    p.out += b"u"
    if versions:  # state_dict()._metadata: {prefix: {"version": v}}, set on the OrderedDict by BUILD
        p.out += b"}"
        p.text("_metadata")
        p.glob("collections", "OrderedDict")
        p.out += b")R("
        for prefix, version in versions.items():
            p.text(prefix)
            p.out += b"}"
            p.text("version")
            p.int(version)
            p.out += b"s"
        p.out += b"usb"
    p.out += b"."
    return bytes(p.out)


def _zero_strides(shape: "tuple[int, ...]") -> "tuple[int, ...]":
    return tuple(_c_strides(tuple(int(d) for d in shape)))


def write_state_dict(state: "Mapping[str, np.ndarray]", handle: BinaryIO, versions: "Mapping[str, int] | None" = None) -> None:
    """Write `state` (numpy arrays) to `handle` as a `.pt` file that torch.load(weights_only=True) reads.

    `versions` are the module versions torch keeps as the state dict's `_metadata`. Streams to non-seekable
    outputs (pipes) too: sizes and CRCs are computed before anything is written.
    Raises `Unwritable` for dtypes torch's storages do not cover or files past the zip32 limits (4 GiB,
    65,535 records).

    >>> import io, numpy as np
    >>> buffer = io.BytesIO()
    >>> write_state_dict({"w": np.arange(6, dtype=np.float32).reshape(2, 3)}, buffer)
    >>> read_state_dict(buffer.getvalue())["w"].tolist()
    [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    """
    keys = list(state)
    arrays = [np.require(np.asarray(state[k]), requirements="C") for k in keys]
    arrays = [a.astype(a.dtype.newbyteorder("<")) if a.dtype.byteorder == ">" else a for a in arrays]
    records: list[tuple[str, Any]] = [("archive/data.pkl", _pickle(keys, arrays, versions or {}))]
    records += [
        ("archive/.format_version", b"1"),
        ("archive/.storage_alignment", str(ALIGNMENT).encode()),
        ("archive/byteorder", b"little"),
    ]
    records += [(f"archive/data/{i}", memoryview(c_bytes(a)) if a.size else b"") for i, a in enumerate(arrays)]
    records += [("archive/version", b"3\n")]
    if sum(len(data) for _, data in records) + ALIGNMENT * len(records) * 2 > _ZIP_LIMIT:
        raise Unwritable("larger than 4 GiB")
    if len(records) > 0xFFFF:  # a zip32 directory counts records in 16 bits
        raise Unwritable(f"{len(records)} records")
    offset = 0
    central = bytearray()
    for name, data in records:
        encoded = name.encode()
        crc = zlib.crc32(data)
        pad = -(offset + 30 + len(encoded) + 4) % ALIGNMENT
        extra = struct.pack("<HH", 0x4246, pad) + b"Z" * pad  # 'FB' padding field, as torch's writer uses
        local = struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0x800, 0, 0, 0, crc, len(data), len(data), len(encoded), len(extra))
        handle.write(local + encoded + extra)
        handle.write(data)
        central += (
            struct.pack(
                "<4s6H3I5H2I", b"PK\x01\x02", 20, 20, 0x800, 0, 0, 0, crc, len(data), len(data), len(encoded), 0, 0, 0, 0, 0, offset
            )
            + encoded
        )
        offset += len(local) + len(encoded) + len(extra) + len(data)
    handle.write(bytes(central))
    handle.write(struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, len(records), len(records), len(central), offset, 0))
