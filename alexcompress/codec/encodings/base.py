"""What every tensor encoding shares: the table entry the container reads, the encoded form it writes, the
Table-4 summary a lossy coder reports, and the checked integer fields of a header row."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import ml_dtypes
import numpy as np

from alexcompress.errors import DczError

#: dtype names of the format and their little-endian numpy dtypes (bfloat16 is `ml_dtypes`' numpy dtype:
#: numpy has none of its own)
DTYPES: dict[str, np.dtype] = {
    "float32": np.dtype("<f4"),
    "float64": np.dtype("<f8"),
    "float16": np.dtype("<f2"),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "int64": np.dtype("<i8"),
    "int32": np.dtype("<i4"),
    "int16": np.dtype("<i2"),
    "int8": np.dtype("i1"),
    "uint8": np.dtype("u1"),
    "bool": np.dtype("|b1"),
}
#: the dtypes a coded (quantized) weight may have: its codebook is float32 values the dtype holds exactly,
#: and it decodes to its own dtype
CODED_DTYPES = ("float32", "float16", "bfloat16")


def dtype_name(dtype: np.dtype) -> str | None:
    """The format's name of a numpy dtype (either byte order), or None if the format has none."""
    little = dtype.newbyteorder("<") if dtype.byteorder == ">" else dtype
    return next((name for name, known in DTYPES.items() if known == little), None)


@dataclass(frozen=True)
class Section:
    kind: str
    offset: int  # from the first byte after the header
    length: int
    crc32: int


@dataclass(frozen=True)
class TensorEntry:
    """One row of the tensor table. `params` holds the encoding's own integer fields (e.g. `nnz`), also
    readable as attributes."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    encoding: str
    sections: tuple[Section, ...]
    params: Mapping[str, int] = field(default_factory=dict)

    def __getattr__(self, name: str) -> int:
        params = self.__dict__.get("params", {})
        if name in params:
            return params[name]
        raise AttributeError(name)

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


@dataclass
class EncodedTensor:
    entry: TensorEntry
    payloads: list[bytes] = field(default_factory=list)  # one per section kind, in the encoding's order


@dataclass(frozen=True)
class Plan:
    """How an encoding would store one tensor: its section bytes (exact for Huffman codes, the model's
    estimate for rANS) and the work that writes it, so the writer encodes only what can win."""

    size: int
    write: Callable[[], EncodedTensor]


@dataclass(frozen=True)
class Deferred:
    """A tensor whose decoding waits for its rANS streams (`rans.decode_streams`' (bytes, symbols, model,
    chunk, what) each), so that the container decodes every such stream of a file in one vectorised loop;
    `finish` turns their symbols into the tensor."""

    streams: list[tuple[Any, ...]]
    finish: Callable[[list[np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class LayerSummary:
    """One coded layer as in the paper's Table 4 (everything from the header, nothing decoded)."""

    weights: int
    nnz: int
    entries: int  # nonzeros plus filler entries
    codebook_size: int
    index_bits: int
    weight_bits_fixed: int
    weight_bits_coded: float  # average code length per entry
    index_bits_coded: float
    bytes_fixed: int  # the same layer at fixed-width codes and indices (computed, not written)
    bytes_file: int  # this layer's sections in the file


#: a section's CRC-checked bytes, by kind
SectionReader = Callable[[str], memoryview]


class TensorEncoding(Protocol):
    """A way of storing one tensor in a `.dcz`. Adding a coder is one module implementing this and one line
    in `encodings/__init__.py`."""

    name: str
    section_kinds: tuple[str, ...]
    #: what each section holds, for the bytes-by-part tables and plots: codes, gaps, codebook, tables, raw
    section_roles: Mapping[str, str]
    #: the integer header fields of this encoding, in the order they are written
    fields: tuple[str, ...]

    def check(self, row: Mapping[str, Any], dtype: str, shape: tuple[int, ...], where: str) -> tuple[dict[str, int], dict[str, int]]:
        """Validate the row's own fields against the tensor; returns (fields, exact byte length per section)."""

    def encode(self, name: str, array: np.ndarray, **options: Any) -> EncodedTensor: ...

    def decode(self, entry: TensorEntry, section: SectionReader) -> np.ndarray:
        """The tensor, of its dtype and shape; a DczError for anything inconsistent."""

    def summary(self, entry: TensorEntry) -> LayerSummary | None:
        """Table-4 figures of a coded layer, or None for tensors stored as they are."""


class CodedEncoding(TensorEncoding, Protocol):
    """A way of storing a quantized weight: everything the writer, the sparse runtime, `info --verbose` and
    `report` call. Register its name in `encodings.CODERS`."""

    #: True where every element has a symbol (no index stream): the writer tries it only on dense-enough
    #: tensors, never with a forced index width
    dense: bool

    def plan(self, name: str, shape: tuple[int, ...], prepared: Any, index_bits: int | None = None) -> Plan:
        """The size this encoding would take for a quantized tensor (`sparse_huffman.prepare`'s form) and
        the writer of it; `index_bits` only for the sparse layouts."""

    def nonzeros(self, entry: TensorEntry, section: SectionReader) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(flattened positions, codebook index of each, codebook): the tensor without its zeros, validated."""

    def streams(self, entry: TensorEntry, section: SectionReader) -> Any:
        """The decoded streams (codebook, codes, gaps and, for Huffman codes, their code lengths)."""


def field(obj: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    """A header field of type `kind` (an int is never a bool), or one error naming it."""
    if key not in obj:
        raise DczError(f"{where}: missing field {key!r}")
    value = obj[key]
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise DczError(f"{where}: field {key!r} must be an integer")
    if not isinstance(value, kind):
        raise DczError(f"{where}: field {key!r} must be of type {kind.__name__}")
    return value


def field_int(row: Mapping[str, Any], key: str, low: int, high: int, where: str) -> int:
    """An integer header field within [low, high], checked with Python ints before anything is allocated."""
    value = field(row, key, int, where)
    if not low <= value <= high:
        raise DczError(f"{where}: {key} = {value} is outside [{low}, {high}]")
    return value


def numel_of(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
