"""safetensors files in and out, without torch: single files and sharded checkpoints (an index JSON naming
the shard of each tensor), every dtype the `.dcz` stores (bfloat16 as `ml_dtypes.bfloat16`).

The format (huggingface/safetensors): a u64 little-endian header length N, N bytes of UTF-8 JSON (an object:
each tensor's `dtype`, `shape` and `data_offsets` [begin, end) from the first byte after the header, and an
optional `__metadata__` object of strings), then the data. The reader checks the whole layout with Python
integers before it maps anything: the header within `MAX_HEADER_BYTES` and nested at most 4 deep, each
tensor's byte span exactly its shape times its item size, spans in bounds, neither overlapping nor leaving
holes, and ending exactly at the end of the file. Tensors are then views of a copy-on-write memory map:
reading a checkpoint costs address space, not memory, and the stages may work on them in place without
touching the file.

>>> import io, numpy as np
>>> buffer = io.BytesIO()
>>> write({"w": np.arange(6, dtype=np.float32).reshape(2, 3)}, buffer)
>>> state = loads(buffer.getvalue(), "x.safetensors")
>>> state["w"].tolist()
[[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO

import numpy as np

from alexcompress import jsontext
from alexcompress.codec.encodings import DTYPES, dtype_name
from alexcompress.errors import ModelError
from alexcompress.fileio import read_file

#: the safetensors dtype codes this reader and writer know, and the `.dcz` dtype each is
CODES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
}
NAMES = {name: code for code, name in CODES.items()}
MAX_HEADER_BYTES = 16 << 20  # ~100 bytes a tensor: 4,096 tensors take ~0.5 MB (the reference reader allows 100 MB)
MAX_NESTING = 4  # {tensor: {"shape": [...]}} nests 3 deep
MAX_DIMS = 8
MAX_INDEX_BYTES = 16 << 20
INDEX_SUFFIX = ".safetensors.index.json"
LENGTH = struct.Struct("<Q")


def is_safetensors(prefix: bytes) -> bool:
    """`prefix` (at least 9 bytes) starts like a safetensors file: a plausible header length, then `{`."""
    return len(prefix) >= 9 and 2 <= LENGTH.unpack_from(prefix)[0] <= MAX_HEADER_BYTES and prefix[8:9] == b"{"


def is_index(path: str) -> bool:
    return path.endswith(INDEX_SUFFIX)


# ------------------------------------------------------------------------------------------------ reader


def _layout(data: Any, size: int, label: str) -> "tuple[list[tuple[str, str, tuple[int, ...], int]], int]":
    """The checked table: (name, dtype, shape, absolute offset) per tensor in file order, and the data start."""
    if size < LENGTH.size:
        raise ModelError(f"{label}: {size} bytes, too short for a safetensors file (truncated?)")
    (length,) = LENGTH.unpack_from(data)
    if length > MAX_HEADER_BYTES:
        raise ModelError(f"{label}: declares a safetensors header of {length:,} bytes, more than {MAX_HEADER_BYTES:,}")
    start = LENGTH.size + length
    if start > size:
        raise ModelError(f"{label}: the safetensors header runs past the end of the file (truncated?)")
    try:
        header = jsontext.loads(bytes(data[LENGTH.size : start]).rstrip(b" "), MAX_NESTING)
    except ValueError as exc:
        raise ModelError(f"{label}: safetensors header: {exc}") from None
    if not isinstance(header, dict):
        raise ModelError(f"{label}: the safetensors header is not a JSON object")
    from alexcompress.codec.container import MAX_NAME_LENGTH, MAX_TENSORS

    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ModelError(f"{label}: safetensors __metadata__ must be an object of strings")
    if len(header) > MAX_TENSORS:
        raise ModelError(f"{label}: holds {len(header):,} tensors, more than the {MAX_TENSORS:,} a .dcz holds")
    rows = []
    for name, row in header.items():
        where = f"{label}: tensor {name[:MAX_NAME_LENGTH]!r}"
        if not 0 < len(name) <= MAX_NAME_LENGTH:
            raise ModelError(f"{label}: a tensor name of {len(name)} characters (1 to {MAX_NAME_LENGTH})")
        if not isinstance(row, dict) or set(row) != {"dtype", "shape", "data_offsets"}:
            raise ModelError(f"{where}: expected exactly dtype, shape and data_offsets")
        dtype, shape, offsets = row["dtype"], row["shape"], row["data_offsets"]
        if dtype not in CODES:
            raise ModelError(f"{where}: dtype {str(dtype)[:16]!r} is not one of {', '.join(CODES)}")
        if not (isinstance(shape, list) and len(shape) <= MAX_DIMS and all(_count(d) for d in shape)):
            raise ModelError(f"{where}: shape must be at most {MAX_DIMS} non-negative integers")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_count(o) for o in offsets) and offsets[0] <= offsets[1]):
            raise ModelError(f"{where}: data_offsets must be two integers [begin, end], begin <= end")
        numel = 1
        for d in shape:
            numel *= d
        if offsets[1] - offsets[0] != numel * DTYPES[CODES[dtype]].itemsize:
            raise ModelError(
                f"{where}: data_offsets span {offsets[1] - offsets[0]:,} bytes, its shape {shape} needs {numel * DTYPES[CODES[dtype]].itemsize:,}"
            )
        rows.append((offsets[0], offsets[1], name, CODES[dtype], tuple(shape)))
    rows.sort()
    end = 0
    for begin, stop, name, _, _ in rows:
        if begin != end:
            raise ModelError(
                f"{label}: tensor {name!r}'s data {'overlaps another' if begin < end else 'leaves a hole before it'} (data_offsets {begin}, expected {end})"
            )
        end = stop
    from alexcompress.codec.container import max_elements

    total = sum((stop - begin) // DTYPES[dtype].itemsize for begin, stop, _, dtype, _ in rows)
    if total > max_elements():
        raise ModelError(
            f"{label}: holds {total:,} elements, more than {max_elements():,} (alexcompress --max-elements N raises the limit)"
        )
    if start + end != size:
        problem = (
            "runs past the end of the file (truncated?)"
            if start + end > size
            else f"is followed by {size - start - end:,} bytes of nothing"
        )
        raise ModelError(f"{label}: the tensors' data {problem}")
    return [(name, dtype, shape, start + begin) for begin, _, name, dtype, shape in rows], start


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 62


def _arrays(buffer: Any, table: "list[tuple[str, str, tuple[int, ...], int]]", order: "list[str]") -> "OrderedDict[str, np.ndarray]":
    by_name = {name: (dtype, shape, offset) for name, dtype, shape, offset in table}
    out: OrderedDict[str, np.ndarray] = OrderedDict()
    for name in order:
        dtype, shape, offset = by_name[name]
        numel = int(np.prod(shape, dtype=np.int64)) if shape else 1
        out[name] = np.frombuffer(buffer, dtype=DTYPES[dtype], count=numel, offset=offset).reshape(shape)
    return out


def loads(data: "bytes | bytearray", label: str) -> "OrderedDict[str, np.ndarray]":
    """A safetensors file image (e.g. read from a pipe) as arrays: views of `data` (writable if it is a
    bytearray)."""
    table, _ = _layout(data, len(data), label)
    return _arrays(data, table, _header_order(data))


def load(path: str, label: str | None = None) -> "OrderedDict[str, np.ndarray]":
    """A safetensors file as arrays, views of a copy-on-write map of it, in the header's order."""
    label = label or path
    size = os.path.getsize(path)
    head = read_file(path, lambda handle: handle.read(min(size, LENGTH.size + MAX_HEADER_BYTES)))
    table, start = _layout(head, size, label)
    if size == start:
        return _arrays(b"", table, _header_order(head))
    with open(path, "rb") as handle:
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)
    return _arrays(mapped, table, _header_order(head))


def release(array: np.ndarray) -> None:
    """Give back the pages of a memory map that `array` views (after its last use: reading it again reads
    the file again), so that a model read tensor by tensor stays out of memory. Anything else: nothing."""
    base: Any = array
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None) if not isinstance(base, memoryview) else base.obj
    if base is None or not hasattr(base, "madvise") or array.nbytes == 0:
        return
    start = array.__array_interface__["data"][0] - np.frombuffer(base, dtype=np.uint8, count=0).__array_interface__["data"][0]
    page = mmap.PAGESIZE
    first, last = (start + page - 1) // page * page, (start + array.nbytes) // page * page  # pages wholly its own
    if last > first:
        base.madvise(mmap.MADV_DONTNEED, first, last - first)


def _header_order(data: Any) -> "list[str]":
    (length,) = LENGTH.unpack_from(data)
    names = json.loads(bytes(data[LENGTH.size : LENGTH.size + length]))  # checked by _layout: order only
    return [name for name in names if name != "__metadata__"]


def load_index(path: str, label: str | None = None) -> "OrderedDict[str, np.ndarray]":
    """A sharded checkpoint from its index JSON (`{"weight_map": {tensor: shard file}}`): every shard a plain
    file name beside the index, every tensor in the shard the index names, no tensor twice or unlisted."""
    label = label or path
    raw = read_file(path, lambda handle: handle.read(MAX_INDEX_BYTES + 1))
    if len(raw) > MAX_INDEX_BYTES:
        raise ModelError(f"{label}: an index of more than {MAX_INDEX_BYTES:,} bytes")
    try:
        index = jsontext.loads(raw, MAX_NESTING)
    except ValueError as exc:
        raise ModelError(f"{label}: {exc}") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map or not all(isinstance(v, str) for v in weight_map.values()):
        raise ModelError(f"{label}: not a safetensors index (no weight_map of tensor names to shard files)")
    folder = os.path.dirname(path)
    shards = list(dict.fromkeys(weight_map.values()))
    state: OrderedDict[str, np.ndarray] = OrderedDict()
    for shard in shards:  # every name checked before any shard is opened
        if os.path.basename(shard) != shard or shard in ("", ".", ".."):
            raise ModelError(f"{label}: shard {shard[:80]!r} is not a file name beside the index")
    for shard in shards:
        part = load(os.path.join(folder, shard), f"{label}: shard {shard}")
        wanted = {name for name, file in weight_map.items() if file == shard}
        if set(part) != wanted:
            odd = sorted(set(part) ^ wanted)
            raise ModelError(f"{label}: shard {shard} and the index disagree on {len(odd)} tensors ({', '.join(odd[:3])})")
        state.update(part)
    from alexcompress.codec.container import MAX_TENSORS

    if len(state) > MAX_TENSORS:
        raise ModelError(f"{label}: holds {len(state):,} tensors, more than the {MAX_TENSORS:,} a .dcz holds")
    return OrderedDict((name, state[name]) for name in weight_map)


# ------------------------------------------------------------------------------------------------ writer


def header(table: "Mapping[str, tuple[np.dtype, tuple[int, ...]]]", metadata: "Mapping[str, str] | None" = None) -> bytes:
    """The length-prefixed header for tensors of these (dtype, shape), in this order, padded with spaces to
    8 bytes (as the reference writer does, so that the data starts aligned)."""
    rows: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for name, (dtype, shape) in table.items():
        code = dtype_name(dtype)
        if code is None:
            raise ModelError(f"{name}: dtype {dtype} cannot be stored in a safetensors file")
        size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        rows[name] = {"dtype": NAMES[code], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(rows, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return LENGTH.pack(len(text)) + text


def write(state: "Mapping[str, np.ndarray]", handle: BinaryIO, metadata: "Mapping[str, str] | None" = None) -> None:
    """`state` as a safetensors file, tensor after tensor (each written as it is: nothing is joined)."""
    handle.write(header({name: (array.dtype, array.shape) for name, array in state.items()}, metadata))
    for array in state.values():
        _write_array(array, handle)


def write_streaming(
    table: "Mapping[str, tuple[str, tuple[int, ...]]]",
    arrays: "Iterator[tuple[str, np.ndarray]]",
    handle: BinaryIO,
    metadata: "Mapping[str, str] | None" = None,
) -> None:
    """A safetensors file whose header comes from `table` ({name: (dtype or its name, shape)}, in order) and whose
    tensors come one at a time from `arrays` ((name, array) in the same order): only one is ever held."""
    dtypes = {name: DTYPES.get(dtype) or np.dtype(dtype) for name, (dtype, _) in table.items()}  # a name or a dtype
    handle.write(header({name: (dtypes[name], shape) for name, (_, shape) in table.items()}, metadata))
    names = iter(table)
    for name, array in arrays:
        expected = next(names, None)
        shape = table[name][1] if name in table else ()
        if name != expected or array.dtype != dtypes[name] or tuple(array.shape) != tuple(shape):
            raise ModelError(f"{name}: not the tensor the header announced")
        _write_array(array, handle)


#: the most bytes a shard of a sharded output holds (the Hugging Face writer's default), unless one tensor
#: alone is larger
SHARD_BYTES = 5 * 10**9


def shard_plan(
    table: "Mapping[str, tuple[Any, tuple[int, ...]]]", index: str, max_bytes: int = SHARD_BYTES
) -> "list[tuple[str, list[str]]]":
    """The shards of a checkpoint whose index is `index` (`NAME.safetensors.index.json`): [(file name, the
    tensors it holds)], tensors in `table`'s order ({name: (dtype or its name, shape)}), each shard as many
    as fit in `max_bytes` (a larger tensor alone), named `NAME-00001-of-0000N.safetensors` as the Hugging
    Face writer names them.

    >>> shard_plan({"a": ("float32", (100,)), "b": ("float32", (100,)), "c": ("bfloat16", (8,))}, "m.safetensors.index.json", 500)
    [('m-00001-of-00002.safetensors', ['a']), ('m-00002-of-00002.safetensors', ['b', 'c'])]
    """
    groups: list[list[str]] = []
    size = 0
    for name, (dtype, shape) in table.items():
        nbytes = int(np.prod(shape, dtype=np.int64)) * (DTYPES.get(dtype) or np.dtype(dtype)).itemsize
        if not groups or (size + nbytes > max_bytes and groups[-1]):
            groups.append([])
            size = 0
        groups[-1].append(name)
        size += nbytes
    stem = os.path.basename(index)[: -len(INDEX_SUFFIX)] if is_index(index) else os.path.basename(index)
    return [(f"{stem}-{i:05d}-of-{len(groups):05d}.safetensors", names) for i, names in enumerate(groups, 1)]


def index_text(plan: "list[tuple[str, list[str]]]", total_size: int) -> bytes:
    """The index JSON of a sharded checkpoint (`load_index` reads it back)."""
    weight_map = {name: shard for shard, names in plan for name in names}
    return json.dumps({"metadata": {"total_size": total_size}, "weight_map": weight_map}, indent=2).encode("utf-8") + b"\n"


def _write_array(array: np.ndarray, handle: BinaryIO) -> None:
    flat = np.ascontiguousarray(array).reshape(-1)
    little = flat.astype(flat.dtype.newbyteorder("<")) if flat.dtype.byteorder == ">" else flat
    view = little.view(np.uint8)
    for start in range(0, view.size, 1 << 24):  # chunks: a signal can interrupt a large write between them
        handle.write(memoryview(view[start : start + (1 << 24)]))
