"""The `.dcz` container (format version 1; docs/FORMAT.md is the specification): writer and reader.

Layout: a 20-byte preamble (magic, version, flags, header length, header CRC-32), a JSON header holding the
tensor table, then the sections, contiguous and exactly filling the file. Needs only numpy and bitarray.
The reader validates every header field against the file size with Python integers (no overflow) before it
allocates anything, and checks every section's CRC-32 before decoding it.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from . import huffman
from .errors import DczError
from .sparse import MAX_INDEX_BITS, MIN_INDEX_BITS, gap_histogram, positions_from_gaps, relative_gaps, stream_histograms

MAGIC = b"\x89DCZ\r\n\x1a\n"
VERSION = 1
PREAMBLE = struct.Struct("<8sHHII")  # magic, version, flags, header length, CRC-32 of the header
MAX_HEADER_BYTES = 1 << 20
MAX_TENSORS = 4096
MAX_NAME_LENGTH = 256
MAX_DIMS = 8
MAX_TOTAL_ELEMENTS = 1 << 28  # 1 GiB of float32 once decoded: VGG-16 (138M weights) fits, a bomb does not
MAX_CODEBOOK = 256
SPARSE_KINDS = ("codebook", "code_lengths", "gap_lengths", "codes", "gaps")
DTYPES = {"float32": "<f4", "float64": "<f8", "float16": "<f2", "int64": "<i8", "int32": "<i4", "uint8": "u1", "bool": "|b1"}


@dataclass(frozen=True)
class Section:
    kind: str
    offset: int  # from the first byte after the header
    length: int
    crc32: int


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    encoding: str  # "raw" or "sparse_huffman"
    sections: tuple[Section, ...]
    nnz: int = 0
    entries: int = 0
    index_bits: int = 0
    codebook_size: int = 0
    code_bits: int = 0
    gap_bits: int = 0

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return sum(s.length for s in self.sections)

    def section(self, kind: str) -> Section:
        return next(s for s in self.sections if s.kind == kind)


@dataclass(frozen=True)
class DczHeader:
    arch: str
    num_classes: int
    producer: str
    options: dict[str, Any]
    tensors: tuple[TensorEntry, ...]
    header_bytes: int  # preamble + JSON header
    file_size: int

    @property
    def data_start(self) -> int:
        return self.header_bytes


@dataclass
class EncodedTensor:
    entry: TensorEntry
    payloads: list[bytes] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------ writer


def choose_index_bits(positions: np.ndarray, code_counts: np.ndarray) -> int:
    """The gap width minimising this tensor's coded size (both streams and their tables), from histograms."""
    if positions.size == 0:
        return MIN_INDEX_BITS
    gap_values, gap_counts = gap_histogram(positions)
    best, best_bits = MIN_INDEX_BITS, None
    for width in range(MIN_INDEX_BITS, MAX_INDEX_BITS + 1):
        gap_hist, n_fillers = stream_histograms(gap_values, gap_counts, width)
        code_hist = np.append(code_counts, n_fillers)
        bits = _coded_bits(gap_hist) + _coded_bits(code_hist) + 8 * ((1 << width) + code_hist.size)
        if best_bits is None or bits < best_bits:
            best, best_bits = width, bits
    return best


def _coded_bits(histogram: np.ndarray) -> int:
    return int((histogram * huffman.code_lengths(histogram).astype(np.int64)).sum())


def encode_sparse(name: str, values: np.ndarray, index_bits: int | None = None) -> EncodedTensor:
    """Encode one quantized float32 tensor: codebook of its distinct nonzeros, Huffman-coded codes and gaps."""
    flat = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
    positions = np.flatnonzero(flat)
    nonzero_values = flat[positions]
    if not np.isfinite(nonzero_values).all():
        raise DczError(f"{name}: contains NaN or infinite weights, which cannot be encoded")
    codebook = np.unique(nonzero_values)  # a sort; then codes by binary search (cheaper than argsort)
    codes = np.searchsorted(codebook, nonzero_values)
    k = codebook.size
    if k > MAX_CODEBOOK:
        raise DczError(
            f"{name}: {k} distinct nonzero values, more than the {MAX_CODEBOOK} a codebook holds; "
            "the model is not quantized: run 'alexcompress quantize' first"
        )
    code_counts = np.bincount(codes, minlength=k)
    if index_bits is None:
        index_bits = choose_index_bits(positions, code_counts)
    if not MIN_INDEX_BITS <= index_bits <= MAX_INDEX_BITS:
        raise DczError(f"index bits must be between {MIN_INDEX_BITS} and {MAX_INDEX_BITS}, got {index_bits}")
    streams = relative_gaps(positions, index_bits)
    symbols = np.full(streams.gaps.size, k, dtype=np.int64)  # symbol k is the filler
    symbols[streams.real] = codes
    code_lengths = huffman.code_lengths(np.bincount(symbols, minlength=k + 1))
    gap_lengths = huffman.code_lengths(np.bincount(streams.gaps, minlength=1 << index_bits))
    code_bytes, code_bits = huffman.encode(symbols, code_lengths)
    gap_bytes, gap_bits = huffman.encode(streams.gaps, gap_lengths)
    payloads = [codebook.astype("<f4").tobytes(), code_lengths.tobytes(), gap_lengths.tobytes(), code_bytes, gap_bytes]
    entry = TensorEntry(
        name, "float32", tuple(int(d) for d in values.shape), "sparse_huffman", (),
        nnz=int(positions.size), entries=int(symbols.size), index_bits=index_bits,
        codebook_size=int(k), code_bits=code_bits, gap_bits=gap_bits,
    )
    return EncodedTensor(entry, payloads)


def encode_raw(name: str, values: np.ndarray) -> EncodedTensor:
    dtype = next((n for n, code in DTYPES.items() if np.dtype(code) == values.dtype.newbyteorder("<")), None)
    if dtype is None:
        raise DczError(f"{name}: dtype {values.dtype} cannot be stored in a .dcz")
    payload = np.asarray(values, dtype=DTYPES[dtype]).tobytes(order="C")
    return EncodedTensor(TensorEntry(name, dtype, tuple(int(d) for d in values.shape), "raw", ()), [payload])


def write_dcz(tensors: list[EncodedTensor], *, arch: str, num_classes: int, producer: str, options: Mapping[str, Any]) -> bytes:
    """Assemble encoded tensors into a complete `.dcz` file image."""
    table = []
    offset = 0
    chunks: list[bytes] = []
    for tensor in tensors:
        kinds = SPARSE_KINDS if tensor.entry.encoding == "sparse_huffman" else ("data",)
        sections = []
        for kind, payload in zip(kinds, tensor.payloads, strict=True):
            sections.append({"kind": kind, "offset": offset, "length": len(payload), "crc32": zlib.crc32(payload)})
            offset += len(payload)
            chunks.append(payload)
        row: dict[str, Any] = {
            "name": tensor.entry.name,
            "dtype": tensor.entry.dtype,
            "shape": list(tensor.entry.shape),
            "encoding": tensor.entry.encoding,
        }
        if tensor.entry.encoding == "sparse_huffman":
            for key in ("nnz", "entries", "index_bits", "codebook_size", "code_bits", "gap_bits"):
                row[key] = getattr(tensor.entry, key)
        row["sections"] = sections
        table.append(row)
    header = {
        "format": "dcz",
        "arch": arch,
        "num_classes": num_classes,
        "producer": producer,
        "options": dict(options),
        "tensors": table,
    }
    header_bytes = json.dumps(header, separators=(",", ":"), sort_keys=True, allow_nan=False).encode("utf-8")
    if len(header_bytes) > MAX_HEADER_BYTES:
        raise DczError(f"header of {len(header_bytes)} bytes exceeds the {MAX_HEADER_BYTES}-byte limit")
    preamble = PREAMBLE.pack(MAGIC, VERSION, 0, len(header_bytes), zlib.crc32(header_bytes))
    return b"".join([preamble, header_bytes, *chunks])


# ------------------------------------------------------------------------------------------------ reader


def is_dcz(prefix: bytes) -> bool:
    return prefix[: len(MAGIC)] == MAGIC


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
        obj = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise DczError(f"header: not valid JSON ({exc})") from None
    return _validate_header(obj, end, size)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed")


def _get(obj: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in obj:
        raise DczError(f"{where}: missing field {key!r}")
    value = obj[key]
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise DczError(f"{where}: field {key!r} must be an integer")
    if not isinstance(value, kind):
        raise DczError(f"{where}: field {key!r} must be of type {kind.__name__}")
    return value


def _int_in(obj: Mapping[str, Any], key: str, low: int, high: int, where: str) -> int:
    value = _get(obj, key, int, where)
    if not low <= value <= high:
        raise DczError(f"{where}: {key} = {value} is outside [{low}, {high}]")
    return value


def _validate_header(obj: Any, data_start: int, file_size: int) -> DczHeader:
    if not isinstance(obj, dict):
        raise DczError("header: not a JSON object")
    if obj.get("format") != "dcz":
        raise DczError("header: field 'format' must be \"dcz\"")
    arch = _get(obj, "arch", str, "header")
    num_classes = _int_in(obj, "num_classes", 1, 1_000_000, "header")
    producer = _get(obj, "producer", str, "header")
    options = _get(obj, "options", dict, "header")
    rows = _get(obj, "tensors", list, "header")
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
        name = _get(row, "name", str, where)
        if not 0 < len(name) <= MAX_NAME_LENGTH or name in names:
            raise DczError(f"{where}: empty, overlong or duplicate name {name[:MAX_NAME_LENGTH]!r}")
        names.add(name)
        where = f"tensor {name}"
        dtype = _get(row, "dtype", str, where)
        if dtype not in DTYPES:
            raise DczError(f"{where}: unknown dtype {dtype!r}")
        shape_list = _get(row, "shape", list, where)
        if len(shape_list) > MAX_DIMS or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= 1 << 31 for d in shape_list):
            raise DczError(f"{where}: shape must be at most {MAX_DIMS} non-negative integers")
        shape = tuple(shape_list)
        numel = 1
        for d in shape:
            numel *= d
        total_elements += numel
        if total_elements > MAX_TOTAL_ELEMENTS:
            raise DczError(f"{where}: the tensors hold more than {MAX_TOTAL_ELEMENTS} elements in all")
        encoding = _get(row, "encoding", str, where)
        sections_list = _get(row, "sections", list, where)
        if encoding == "raw":
            expected = {"data": numel * np.dtype(DTYPES[dtype]).itemsize}
            extra: dict[str, int] = {}
        elif encoding == "sparse_huffman":
            if dtype != "float32" or not shape:
                raise DczError(f"{where}: sparse_huffman tensors must be float32 with at least one dimension")
            extra, expected = _sparse_fields(row, numel, where)
        else:
            raise DczError(f"{where}: unknown encoding {encoding!r}")
        if len(sections_list) != len(expected):
            raise DczError(f"{where}: expected {len(expected)} sections, found {len(sections_list)}")
        sections = []
        for kind, section in zip(expected, sections_list):
            swhere = f"{where} section {kind}"
            if not isinstance(section, dict) or section.get("kind") != kind:
                raise DczError(f"{swhere}: missing, or sections out of order")
            s_offset = _get(section, "offset", int, swhere)
            s_length = _get(section, "length", int, swhere)
            crc = _int_in(section, "crc32", 0, 0xFFFFFFFF, swhere)
            if s_offset != offset:
                raise DczError(f"{swhere}: offset {s_offset} leaves a hole or overlaps (expected {offset})")
            if s_length != expected[kind]:
                raise DczError(f"{swhere}: length {s_length} does not match its declared content ({expected[kind]} bytes)")
            offset += s_length
            if offset > data_size:
                raise DczError(f"{swhere}: runs {offset - data_size} bytes past the end of the file (truncated?)")
            sections.append(Section(kind, s_offset, s_length, crc))
        tensors.append(TensorEntry(name, dtype, shape, encoding, tuple(sections), **extra))
    if offset != data_size:
        raise DczError(f"layout: {data_size - offset} trailing bytes after the last section")
    return DczHeader(arch, num_classes, producer, options, tuple(tensors), data_start, file_size)


def _sparse_fields(row: Mapping[str, Any], numel: int, where: str) -> tuple[dict[str, int], dict[str, int]]:
    nnz = _int_in(row, "nnz", 0, numel, where)
    index_bits = _int_in(row, "index_bits", MIN_INDEX_BITS, MAX_INDEX_BITS, where)
    k = _int_in(row, "codebook_size", 1 if nnz else 0, min(MAX_CODEBOOK, nnz), where)
    # each filler advances by 2**index_bits and every entry stays inside the tensor
    entries = _int_in(row, "entries", nnz, nnz + (numel >> index_bits), where)
    low, high = (entries, entries * huffman.MAX_CODE_LENGTH)
    code_bits = _int_in(row, "code_bits", low, high, where)
    gap_bits = _int_in(row, "gap_bits", low, high, where)
    extra = dict(nnz=nnz, entries=entries, index_bits=index_bits, codebook_size=k, code_bits=code_bits, gap_bits=gap_bits)
    expected = {
        "codebook": 4 * k,
        "code_lengths": k + 1,
        "gap_lengths": 1 << index_bits,
        "codes": (code_bits + 7) // 8,
        "gaps": (gap_bits + 7) // 8,
    }
    return extra, expected


def section_bytes(header: DczHeader, data: bytes | memoryview, section: Section, where: str) -> memoryview:
    """A section's bytes, CRC-checked."""
    start = header.data_start + section.offset
    view = memoryview(data)[start : start + section.length]
    if len(view) != section.length:
        raise DczError(f"{where} section {section.kind}: truncated")
    if zlib.crc32(view) != section.crc32:
        raise DczError(f"{where} section {section.kind}: CRC-32 mismatch (the file is damaged)")
    return view


def read_code_tables(header: DczHeader, data: bytes | memoryview, entry: TensorEntry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The codebook and both code-length tables of a sparse tensor, validated."""
    where = f"tensor {entry.name}"
    codebook = np.frombuffer(section_bytes(header, data, entry.section("codebook"), where), dtype="<f4")
    if codebook.size and (not np.isfinite(codebook).all() or (codebook == 0).any() or (np.diff(codebook) <= 0).any()):
        raise DczError(f"{where} section codebook: values must be finite, nonzero and strictly increasing")
    code_lengths = np.frombuffer(section_bytes(header, data, entry.section("code_lengths"), where), dtype=np.uint8)
    gap_lengths = np.frombuffer(section_bytes(header, data, entry.section("gap_lengths"), where), dtype=np.uint8)
    huffman.check_lengths(code_lengths, f"{where} section code_lengths")
    huffman.check_lengths(gap_lengths, f"{where} section gap_lengths")
    return codebook, code_lengths, gap_lengths


@dataclass(frozen=True)
class DecodedStreams:
    """A sparse tensor's tables and its two Huffman streams, decoded and validated."""

    codebook: np.ndarray
    code_lengths: np.ndarray
    gap_lengths: np.ndarray
    codes: np.ndarray  # weight symbols per entry; codebook_size is the filler
    gaps: np.ndarray  # stored gap symbols per entry (gap - 1)


def decode_streams(header: DczHeader, data: bytes | memoryview, entry: TensorEntry) -> DecodedStreams:
    """Both streams of a sparse tensor: what decoding, `info --verbose` and `report` all start from."""
    where = f"tensor {entry.name}"
    codebook, code_lengths, gap_lengths = read_code_tables(header, data, entry)
    codes = huffman.decode(
        bytes(section_bytes(header, data, entry.section("codes"), where)), entry.code_bits, code_lengths, entry.entries, f"{where} section codes"
    )
    gaps = huffman.decode(
        bytes(section_bytes(header, data, entry.section("gaps"), where)), entry.gap_bits, gap_lengths, entry.entries, f"{where} section gaps"
    )
    return DecodedStreams(codebook, code_lengths, gap_lengths, codes, gaps)


def decode_tensor(header: DczHeader, data: bytes | memoryview, entry: TensorEntry) -> np.ndarray:
    """One tensor as a numpy array of its dtype and shape (the container's only allocation of its size)."""
    where = f"tensor {entry.name}"
    if entry.encoding == "raw":
        raw = section_bytes(header, data, entry.section("data"), where)
        return np.frombuffer(raw, dtype=DTYPES[entry.dtype]).astype(DTYPES[entry.dtype].replace("<", "="), copy=True).reshape(entry.shape)
    streams = decode_streams(header, data, entry)
    codebook, symbols, gaps = streams.codebook, streams.codes, streams.gaps
    filler = symbols == entry.codebook_size
    if int(entry.entries - np.count_nonzero(filler)) != entry.nnz:
        raise DczError(f"{where}: decoded {entry.entries - int(np.count_nonzero(filler))} nonzeros, header declares {entry.nnz}")
    if entry.entries and filler[-1]:
        raise DczError(f"{where}: the entry stream ends with a filler")
    positions = positions_from_gaps(gaps, filler)
    if positions.size and int(positions[-1]) >= entry.numel:
        raise DczError(f"{where}: a gap places a weight at position {int(positions[-1])}, outside the tensor of {entry.numel}")
    out = np.zeros(entry.numel, dtype=np.float32)
    out[positions] = codebook[symbols[~filler]]
    return out.reshape(entry.shape)


def read_dcz(data: bytes | memoryview) -> tuple[DczHeader, dict[str, np.ndarray]]:
    """Parse and fully decode a `.dcz` file image: (header, tensors by name, in file order)."""
    header = parse_header(data)
    return header, {entry.name: decode_tensor(header, data, entry) for entry in header.tensors}
