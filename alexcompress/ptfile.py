"""torch's zip `.pt` format without importing torch: a reader (fast path) and a writer for plain state dicts.

`torch.save` writes a zip archive holding `<root>/data.pkl` (a pickle) and one raw record per storage,
`<root>/data/<key>`. This reader unpickles with a whitelist of exactly the globals a plain state dict uses
(OrderedDict, torch's storage types, `_rebuild_tensor_v2`), so nothing but numpy arrays can come out of it,
and reads each storage straight into a numpy array. Anything else (legacy non-zip files, other globals,
big-endian archives, damage) makes it return None: the caller then uses `torch.load(weights_only=True)`,
which gives the authoritative error. Skipping `import torch` saves ~2 s and ~650 MB per process.

The writer produces what `torch.save` would for a dict of tensors (protocol-2 pickle, stored records
aligned to 64 bytes so that `torch.load(mmap=True)` works), so the stages of a shell pipeline never import
torch either. The tests load its output with `torch.load(weights_only=True)` across dtypes and shapes.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, BinaryIO, Optional

import numpy as np

STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class _Unsupported(Exception):
    pass


class _StorageType:
    def __init__(self, name: str) -> None:
        self.dtype = STORAGE_DTYPES[name]


def _rebuild_tensor(storage: np.ndarray, offset: int, size: tuple, stride: tuple, *rest: Any) -> np.ndarray:
    if not isinstance(storage, np.ndarray) or not all(isinstance(v, int) and v >= 0 for v in (offset, *size, *stride)):
        raise _Unsupported
    if len(size) != len(stride):
        raise _Unsupported
    count = 1
    for d in size:
        count *= d
    if count == 0:
        return np.zeros(size, dtype=storage.dtype)
    last = offset + sum((d - 1) * s for d, s in zip(size, stride))
    if last >= storage.size:
        raise _Unsupported
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
    def __init__(self, data: bytes, archive: zipfile.ZipFile, root: str) -> None:
        super().__init__(io.BytesIO(data))
        self.archive, self.root = archive, root
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
            raise _Unsupported
        _, storage_type, key, _location, numel = pid
        if key in self.storages:
            return self.storages[key]
        if not isinstance(key, str) or not isinstance(numel, int):
            raise _Unsupported
        info = self.archive.getinfo(f"{self.root}/data/{key}")
        dtype = storage_type.dtype
        if info.file_size != numel * dtype.itemsize or info.compress_type != zipfile.ZIP_STORED:
            raise _Unsupported
        array = np.empty(numel, dtype=dtype)
        view = memoryview(array).cast("B")
        # torch stores records uncompressed: read them straight from the file into the array (no zipfile
        # buffering, no intermediate bytes), then check the zip's CRC-32 as zipfile would
        handle = self.archive.fp
        handle.seek(info.header_offset)
        local = handle.read(30)
        if len(local) != 30 or local[:4] != b"PK\x03\x04":
            raise _Unsupported
        name_length, extra_length = struct.unpack("<HH", local[26:30])
        handle.seek(info.header_offset + 30 + name_length + extra_length)
        if handle.readinto(view) != len(view) or zlib.crc32(view) != info.CRC:
            raise _Unsupported
        self.storages[key] = array
        return array


def read_state_dict(source: "str | os.PathLike[str] | bytes") -> Optional["OrderedDict[str, Any]"]:
    """The top-level object of a zip `.pt` (a path or the file's bytes) as numpy arrays in (nested) dicts,
    or None if this fast path cannot read it exactly (the caller then falls back to torch.load)."""
    try:
        with zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pickles) != 1:
                return None
            root = pickles[0].split("/")[0]
            names = set(archive.namelist())
            if f"{root}/byteorder" in names and archive.read(f"{root}/byteorder") != b"little":
                return None
            return _Unpickler(archive.read(pickles[0]), archive, root).load()
    except Exception:  # any surprise: let torch.load decide, and word the error
        return None


# ------------------------------------------------------------------------------------------------ writer

STORAGE_NAMES = {dtype.str.replace("=", "<").replace("|", ""): name for name, dtype in STORAGE_DTYPES.items()}
ALIGNMENT = 64  # torch aligns record data so that torch.load(mmap=True) can map it
_ZIP_LIMIT = 0xFFFFFFFF  # no ZIP64 here: larger files go through torch.save


class Unwritable(Exception):
    """The state dict holds something this writer does not produce (the caller uses torch.save)."""


def _storage_name(array: np.ndarray) -> str:
    code = array.dtype.newbyteorder("<").str if array.dtype.byteorder == "=" else array.dtype.str
    name = STORAGE_NAMES.get(code.replace("|", ""))
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
    Raises `Unwritable` for dtypes torch's storages do not cover or files past the zip32 limit.

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
    records += [(f"archive/data/{i}", memoryview(a).cast("B") if a.size else b"") for i, a in enumerate(arrays)]
    records += [("archive/version", b"3\n")]
    if sum(len(data) for _, data in records) + ALIGNMENT * len(records) * 2 > _ZIP_LIMIT:
        raise Unwritable("larger than 4 GiB")
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
