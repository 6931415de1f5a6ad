"""The `.dcz` container (format version 1; docs/FORMAT.md is the specification): framing only.

Layout: a 20-byte preamble (magic, version, flags, header length, header CRC-32), a JSON header holding the
tensor table, then the sections, contiguous and exactly filling the file. What a tensor's sections hold is
its encoding's business (`alexcompress.codec.encodings`): this module checks the layout, with Python integers and
against the file size, before anything is allocated, and each section's CRC-32 before it is handed over.
Needs only numpy and bitarray.
"""

from __future__ import annotations

import io
import json
import shutil
import struct
import zlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from alexcompress import jsontext
from alexcompress.codec.encodings import DTYPES, EncodedTensor, Section, TensorEntry, get_encoding
from alexcompress.codec.encodings.base import field, field_int
from alexcompress.errors import DczError
from alexcompress.fileio import read_upto

MAGIC = b"\x89DCZ\r\n\x1a\n"
VERSION = 1
PREAMBLE = struct.Struct("<8sHHII")  # magic, version, flags, header length, CRC-32 of the header
MAX_HEADER_BYTES = 1 << 20
MAX_HEADER_NESTING = 32  # a header nests 5 deep (tensors, a tensor, its sections, a section, options)
MAX_TENSORS = 4096
MAX_NAME_LENGTH = 256
MAX_DIMS = 8
#: the elements a file may declare in all unless the user raises it (`alexcompress --max-elements N`): a
#: 7 B-parameter model fits. Memory is bounded tensor by tensor (a reader allocates what the header declares
#: for the tensor at hand, and section lengths are checked against the file first); this bounds the total
#: work and output a small file may ask for
DEFAULT_MAX_ELEMENTS = 1 << 33
_limits = {"elements": DEFAULT_MAX_ELEMENTS}


def max_elements() -> int:
    """The current limit on the elements a file declares in all."""
    return _limits["elements"]


def set_max_elements(limit: int) -> None:
    """Raise or lower the limit for this process (`alexcompress --max-elements N`)."""
    if not 1 <= limit <= 1 << 48:
        raise DczError(f"--max-elements must be between 1 and {1 << 48:,}, got {limit:,}")
    _limits["elements"] = limit


MAX_NUM_CLASSES = 1_000_000


@dataclass(frozen=True)
class DczHeader:
    arch: str
    num_classes: int  # 0 for a state dict of no known architecture
    producer: str
    options: dict[str, Any]
    tensors: tuple[TensorEntry, ...]
    header_bytes: int  # preamble + JSON header
    file_size: int

    @property
    def data_start(self) -> int:
        return self.header_bytes


# ------------------------------------------------------------------------------------------------ writer


def write_dcz(tensors: list[EncodedTensor], *, arch: str, num_classes: int, producer: str, options: Mapping[str, Any]) -> bytes:
    """Assemble encoded tensors into a complete `.dcz` file image (`DczWriter`, in memory)."""
    writer = DczWriter(io.BytesIO())
    for tensor in tensors:
        writer.add(tensor)
    output = io.BytesIO()
    writer.finish(output, arch=arch, num_classes=num_classes, producer=producer, options=options)
    return output.getvalue()


#: a spool keeps sections in memory up to this size, then spills them to a temporary file
SPOOL_IN_MEMORY = 64 << 20


@dataclass
class Spooled:
    """A `.dcz` assembled by a `DczWriter` and not yet written: its header (as a reader parses it), and
    `write(handle)`, which writes the file from the spool (as often as asked)."""

    header: DczHeader
    write: Callable[[BinaryIO], None]

    @property
    def payload(self) -> Callable[[BinaryIO], None]:
        """What `fileio.write_output` writes: the file, from the spool."""
        return self.write

    @property
    def data(self) -> bytes:
        """The whole file in memory (for small models and tests; `payload` streams it)."""
        buffer = io.BytesIO()
        self.write(buffer)
        return buffer.getvalue()


def spool() -> BinaryIO:
    """Where a `DczWriter` keeps sections: memory, then a temporary file past `SPOOL_IN_MEMORY`."""
    import tempfile

    return tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # type: ignore[return-value]


class DczWriter:
    """A `.dcz` assembled tensor by tensor: each tensor's sections go to `spool` (a temporary file, or memory)
    as it is added, and only its table row is kept; `finish` writes the preamble and header, then copies the
    sections behind them. Memory: the table, whatever the model's size. The same tensors give the same bytes
    as `write_dcz`."""

    def __init__(self, spool: BinaryIO) -> None:
        self.spool = spool
        self.rows: list[dict[str, Any]] = []
        self.offset = 0

    def add(self, tensor: EncodedTensor) -> None:
        encoding = get_encoding(tensor.entry.encoding)
        sections = []
        for kind, payload in zip(encoding.section_kinds, tensor.payloads, strict=True):
            sections.append({"kind": kind, "offset": self.offset, "length": len(payload), "crc32": zlib.crc32(payload)})
            self.offset += len(payload)
            self.spool.write(payload)
        row: dict[str, Any] = {
            "name": tensor.entry.name,
            "dtype": tensor.entry.dtype,
            "shape": list(tensor.entry.shape),
            "encoding": tensor.entry.encoding,
        }
        for key in encoding.fields:
            row[key] = tensor.entry.params[key]
        row["sections"] = sections
        self.rows.append(row)

    def header(self, *, arch: str, num_classes: int, producer: str, options: Mapping[str, Any]) -> tuple[bytes, DczHeader]:
        """The preamble and header, and the header as a reader parses them (the reader's limits are the
        writer's: never write a file that would be refused)."""
        table = {
            "format": "dcz",
            "arch": arch,
            "num_classes": num_classes,
            "producer": producer,
            "options": dict(options),
            "tensors": self.rows,
        }
        header_bytes = json.dumps(table, separators=(",", ":"), sort_keys=True, allow_nan=False).encode("utf-8")
        head = PREAMBLE.pack(MAGIC, VERSION, 0, len(header_bytes), zlib.crc32(header_bytes)) + header_bytes
        try:
            parsed = parse_header(head, len(head) + self.offset)
        except DczError as exc:
            raise DczError(f"cannot store this model in a .dcz: {exc}") from None
        return head, parsed

    def spooled(self, **fields: Any) -> Spooled:
        """The file as it stands, to be written later (`Spooled`); the writer keeps its spool."""
        head, parsed = self.header(**fields)
        return Spooled(parsed, lambda handle: self.write(handle, head))

    def finish(self, handle: BinaryIO, **fields: Any) -> DczHeader:
        """Write the whole file to `handle`: preamble, header, then the spooled sections."""
        head, parsed = self.header(**fields)
        self.write(handle, head)
        return parsed

    def write(self, handle: BinaryIO, head: bytes) -> None:
        """`head` (what `header` made), then the spooled sections; as often as asked."""
        handle.write(head)
        self.spool.seek(0)
        shutil.copyfileobj(self.spool, handle, 1 << 20)


# ------------------------------------------------------------------------------------------------ reader


def is_dcz(prefix: bytes) -> bool:
    return prefix[: len(MAGIC)] == MAGIC


def read_dcz_stream(handle: Any, head: bytes) -> bytes:
    """A `.dcz` from a pipe, FIFO or device, reading no further than the header declares (plus one byte, so
    that trailing data is noticed). Malformed headers are returned short, for `parse_header` to word."""

    data = head + read_upto(handle, PREAMBLE.size - len(head))
    if len(data) < PREAMBLE.size:
        return data
    header_length = PREAMBLE.unpack_from(data, 0)[3]
    if header_length > MAX_HEADER_BYTES:
        return data
    data += read_upto(handle, header_length)
    try:
        rows = jsontext.loads(bytes(data[PREAMBLE.size :]), MAX_HEADER_NESTING).get("tensors", [])
        total = sum(int(section["length"]) for row in rows for section in row["sections"])
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        return data  # parse_header says what is wrong with it
    if not 0 <= total <= 8 * max_elements() + MAX_TENSORS * (1 << 20):  # elements of at most 8 bytes, and tables
        return data
    return data + read_upto(handle, total) + read_upto(handle, 1)


def parse_header(data: bytes | memoryview, file_size: int | None = None) -> DczHeader:
    """Validate the preamble, the header and the whole section layout; decode nothing yet.

    `data` must hold at least the preamble and header; `file_size` defaults to len(data).
    """
    size = len(data) if file_size is None else file_size
    if size < PREAMBLE.size or len(data) < PREAMBLE.size:
        raise DczError(f"preamble: file of {size} bytes is too short to be a .dcz (truncated?)")
    magic, version, flags, header_length, header_crc = PREAMBLE.unpack_from(data, 0)
    if magic != MAGIC:
        raise DczError("preamble: bad magic number, not a .dcz file")
    if version != VERSION:
        raise DczError(f"preamble: unsupported format version {version} (this reader knows version {VERSION})")
    if flags != 0:
        raise DczError(f"preamble: unknown flags 0x{flags:04x}")
    if header_length > MAX_HEADER_BYTES:
        raise DczError(f"header: declared length {header_length} exceeds the {MAX_HEADER_BYTES}-byte limit")
    end = PREAMBLE.size + header_length
    if end > size or end > len(data):
        raise DczError(f"header: declared length {header_length} runs past the end of the file (truncated?)")
    raw = bytes(data[PREAMBLE.size : end])
    if zlib.crc32(raw) != header_crc:
        raise DczError("header: CRC-32 mismatch (the file is damaged)")
    try:
        obj = jsontext.loads(raw, MAX_HEADER_NESTING)
    except ValueError as exc:
        raise DczError(f"header: {exc}") from None
    return _validate_header(obj, end, size)


def _validate_header(obj: Any, data_start: int, file_size: int) -> DczHeader:
    if not isinstance(obj, dict):
        raise DczError("header: not a JSON object")
    if obj.get("format") != "dcz":
        raise DczError("header: field 'format' must be \"dcz\"")
    arch = field(obj, "arch", str, "header")
    num_classes = field_int(obj, "num_classes", 0, MAX_NUM_CLASSES, "header")
    producer = field(obj, "producer", str, "header")
    options = field(obj, "options", dict, "header")
    rows = field(obj, "tensors", list, "header")
    if len(rows) > MAX_TENSORS:
        raise DczError(f"header: {len(rows)} tensors exceed the limit of {MAX_TENSORS}")
    data_size = file_size - data_start
    offset = 0
    total_elements = 0
    names: set[str] = set()
    tensors = []
    for i, row in enumerate(rows):
        where = f"tensor #{i}"
        if not isinstance(row, dict):
            raise DczError(f"{where}: not a JSON object")
        name = field(row, "name", str, where)
        if not 0 < len(name) <= MAX_NAME_LENGTH or name in names:
            raise DczError(f"{where}: empty, overlong or duplicate name {name[:MAX_NAME_LENGTH]!r}")
        names.add(name)
        where = f"tensor {name}"
        dtype = field(row, "dtype", str, where)
        if dtype not in DTYPES:
            raise DczError(f"{where}: unknown dtype {dtype!r}")
        shape_list = field(row, "shape", list, where)
        if len(shape_list) > MAX_DIMS or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= 1 << 31 for d in shape_list):
            raise DczError(f"{where}: shape must be at most {MAX_DIMS} non-negative integers")
        shape = tuple(shape_list)
        numel = 1
        for d in shape:
            numel *= d
        total_elements += numel
        if total_elements > max_elements():
            raise DczError(
                f"{where}: the tensors hold more than {max_elements():,} elements in all (alexcompress --max-elements N raises the limit)"
            )
        encoding = field(row, "encoding", str, where)
        sections_list = field(row, "sections", list, where)
        try:
            coder = get_encoding(encoding)
        except DczError:
            raise DczError(f"{where}: unknown encoding {encoding!r}") from None
        params, expected = coder.check(row, dtype, shape, where)
        if len(sections_list) != len(expected):
            raise DczError(f"{where}: expected {len(expected)} sections, found {len(sections_list)}")
        sections = []
        for kind, section in zip(expected, sections_list):
            swhere = f"{where} section {kind}"
            if not isinstance(section, dict) or section.get("kind") != kind:
                raise DczError(f"{swhere}: missing, or sections out of order")
            s_offset = field(section, "offset", int, swhere)
            s_length = field(section, "length", int, swhere)
            crc = field_int(section, "crc32", 0, 0xFFFFFFFF, swhere)
            if s_offset != offset:
                raise DczError(f"{swhere}: offset {s_offset} leaves a hole or overlaps (expected {offset})")
            if s_length != expected[kind]:
                raise DczError(f"{swhere}: length {s_length} does not match its declared content ({expected[kind]} bytes)")
            offset += s_length
            if offset > data_size:
                raise DczError(f"{swhere}: runs {offset - data_size} bytes past the end of the file (truncated?)")
            sections.append(Section(kind, s_offset, s_length, crc))
        tensors.append(TensorEntry(name, dtype, shape, encoding, tuple(sections), params))
    if offset != data_size:
        raise DczError(f"layout: {data_size - offset} trailing bytes after the last section")
    return DczHeader(arch, num_classes, producer, options, tuple(tensors), data_start, file_size)


def section_bytes(header: DczHeader, data: bytes | memoryview, section: Section, where: str) -> memoryview:
    """A section's bytes, CRC-checked."""
    start = header.data_start + section.offset
    view = memoryview(data)[start : start + section.length]
    if len(view) != section.length:
        raise DczError(f"{where} section {section.kind}: truncated")
    if zlib.crc32(view) != section.crc32:
        raise DczError(f"{where} section {section.kind}: CRC-32 mismatch (the file is damaged)")
    return view


def section_reader(header: DczHeader, data: bytes | memoryview, entry: TensorEntry):
    """A function returning each of `entry`'s sections by kind, CRC-checked, for its encoding."""
    where = f"tensor {entry.name}"
    return lambda kind: section_bytes(header, data, entry.section(kind), where)


def decode_tensors(header: DczHeader, data: bytes | memoryview) -> "OrderedDict[str, np.ndarray]":
    """Every tensor as a numpy array, in file order. Tensors whose encoding defers to rANS streams
    (`Deferred`) are decoded together: all their streams advance in one vectorised loop."""
    from alexcompress.codec import rans

    done: dict[str, np.ndarray] = {}
    deferred = []
    for entry in header.tensors:
        coder = get_encoding(entry.encoding)
        defer = getattr(coder, "defer", None)
        if defer is None:
            done[entry.name] = coder.decode(entry, section_reader(header, data, entry))
        else:
            deferred.append((entry.name, defer(entry, section_reader(header, data, entry))))
    symbols = rans.decode_streams([spec for _, plan in deferred for spec in plan.streams])
    first = 0
    for name, plan in deferred:
        done[name] = plan.finish(symbols[first : first + len(plan.streams)])
        first += len(plan.streams)
    return OrderedDict((entry.name, done[entry.name]) for entry in header.tensors)


def decode_one(header: DczHeader, data: bytes | memoryview, entry: TensorEntry) -> np.ndarray:
    """One tensor, alone (a decoder writing tensors as it goes holds one at a time)."""
    from alexcompress.codec import rans

    coder = get_encoding(entry.encoding)
    defer = getattr(coder, "defer", None)
    if defer is None:
        return coder.decode(entry, section_reader(header, data, entry))
    plan = defer(entry, section_reader(header, data, entry))
    return plan.finish(rans.decode_streams(plan.streams))


def release_sections(header: DczHeader, data: Any, entry: TensorEntry) -> None:
    """Give back the pages of a memory-mapped file image (`mmap.mmap`) holding `entry`'s sections, once it
    is decoded, so that a decoder going tensor by tensor keeps no more of the file in memory than a tensor's
    (touched again, they are read again). Any other image: nothing."""
    import mmap

    if not isinstance(data, mmap.mmap) or not entry.sections:
        return
    page = mmap.PAGESIZE
    first = header.data_start + min(section.offset for section in entry.sections)
    last = header.data_start + max(section.offset + section.length for section in entry.sections)
    start, stop = first // page * page, min(len(data), -(-last // page) * page)
    if stop > start:
        data.madvise(mmap.MADV_DONTNEED, start, stop - start)


def streams_of(header: DczHeader, data: bytes | memoryview, entry: TensorEntry) -> Any:
    """The decoded streams of a coded tensor (codebook, codes, gaps, code lengths), or None for an
    encoding that has none (`raw`)."""
    coder = get_encoding(entry.encoding)
    streams = getattr(coder, "streams", None)
    return streams(entry, section_reader(header, data, entry)) if streams is not None else None


def read_dcz(data: bytes | memoryview) -> tuple[DczHeader, dict[str, np.ndarray]]:
    """Parse and fully decode a `.dcz` file image: (header, tensors by name, in file order)."""
    header = parse_header(data)
    return header, dict(decode_tensors(header, data))
