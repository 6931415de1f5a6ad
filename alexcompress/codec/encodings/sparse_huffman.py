"""The `sparse_huffman` encoding (paper §2-§4): a quantized tensor as its codebook, the Huffman-coded code
of every nonzero, and the Huffman-coded relative gaps between nonzeros (with filler entries for long gaps).

Sections, in order: codebook (k float32, strictly increasing, nonzero), code_lengths (k + 1 bytes, the last
for the filler symbol), gap_lengths (2**index_bits bytes), codes, gaps. Fields: nnz, entries, index_bits,
codebook_size, code_bits, gap_bits. Lossless: the codebook is the tensor's distinct nonzero values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from alexcompress.codec import huffman
from alexcompress.codec.encodings.base import (
    CODED_DTYPES,
    DTYPES,
    EncodedTensor,
    LayerSummary,
    Plan,
    SectionReader,
    TensorEntry,
    field_int,
    numel_of,
)
from alexcompress.codec.sparse_index import (
    MAX_INDEX_BITS,
    MIN_INDEX_BITS,
    PIECE,
    distinct_upto,
    flat_nonzero,
    gap_histogram,
    gather,
    positions_from_gaps,
    rank,
    relative_gaps,
    stream_histograms,
)
from alexcompress.errors import DczError

MAX_CODEBOOK = 256


@dataclass(frozen=True)
class Streams:
    """A sparse tensor's tables and its two Huffman streams, decoded and validated."""

    codebook: np.ndarray
    code_lengths: np.ndarray
    gap_lengths: np.ndarray
    codes: np.ndarray  # weight symbols per entry; codebook_size is the filler
    gaps: np.ndarray  # stored gap symbols per entry (gap - 1)
    extra_symbol: str = "filler"  # what symbol codebook_size stands for


def quantized_codes(name: str, nonzero_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(codebook, codes): the sorted distinct nonzero values (float32) and each value's index in them (uint8);
    a DczError for NaN or infinite weights, or more distinct values than a codebook holds."""
    pieces = [nonzero_values[start : start + PIECE] for start in range(0, nonzero_values.size, PIECE)]
    if not all(np.isfinite(piece).all() for piece in pieces):
        raise DczError(f"{name}: contains NaN or infinite weights, which cannot be encoded")
    codebook = distinct_upto(nonzero_values, MAX_CODEBOOK)
    if codebook.size > MAX_CODEBOOK:
        distinct = np.unique(nonzero_values).size  # the message's count
        raise DczError(
            f"{name}: {distinct} distinct nonzero values, more than the {MAX_CODEBOOK} a codebook holds; "
            "the model is not quantized: quantize it first (or store it as it is: encode --lossless-floats)"
        )
    return codebook, rank(codebook, nonzero_values).astype(np.uint8, copy=False)


def symbol_dtype(k: int) -> type:
    """The entry symbols of a codebook of k values and one more symbol (filler or zero): a byte each below
    256 values."""
    return np.uint8 if k < 256 else np.uint16


@dataclass(frozen=True)
class Quantized:
    """A quantized tensor as every coded encoding starts from: its nonzeros' flattened positions, the sorted
    distinct nonzero values (the codebook) and each nonzero's index in it."""

    size: int
    positions: np.ndarray
    codebook: np.ndarray
    codes: np.ndarray


def prepare(name: str, array: np.ndarray) -> Quantized:
    """What every coded encoding needs from `array` (float32 or half precision, whose values float32 holds
    exactly), computed once (`encodings.encode_coded` shares it): int32 positions and uint8 codes, about
    2.5 bytes a nonzero, and no float32 copy of the tensor."""
    flat = np.ascontiguousarray(array).reshape(-1)
    positions = flat_nonzero(flat)
    codebook, codes = quantized_codes(name, gather(flat, positions, np.float32))
    return Quantized(flat.size, positions, codebook, codes)


def checked_codebook(section: SectionReader, where: str) -> np.ndarray:
    """The `codebook` section every coded encoding has, validated."""
    codebook = np.frombuffer(section("codebook"), dtype="<f4")
    if codebook.size and (not np.isfinite(codebook).all() or (codebook == 0).any() or (np.diff(codebook) <= 0).any()):
        raise DczError(f"{where} section codebook: values must be finite, nonzero and strictly increasing")
    return codebook


def codebook_and_lengths(section: SectionReader, where: str) -> tuple[np.ndarray, np.ndarray]:
    """The `codebook` and `code_lengths` sections both Huffman encodings share, validated."""
    codebook = checked_codebook(section, where)
    code_lengths = np.frombuffer(section("code_lengths"), dtype=np.uint8)
    huffman.check_lengths(code_lengths, f"{where} section code_lengths")
    return codebook, code_lengths


def scatter(entry: TensorEntry, positions: np.ndarray, symbols: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """The dense tensor, of the entry's dtype, from its nonzeros (what `nonzeros()` returns): the coded
    encodings' decode. A half-precision tensor's codebook must hold values of its dtype, exactly."""
    dtype = DTYPES[entry.dtype]
    values = codebook.astype(dtype)
    if dtype != np.float32 and not np.array_equal(values.astype(np.float32), codebook):
        raise DczError(f"tensor {entry.name} section codebook: values that {entry.dtype} does not hold exactly")
    out = np.zeros(entry.numel, dtype=dtype)
    out[positions] = values[symbols]
    return out.reshape(entry.shape)


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


def fixed_code_bits(codebook_size: int) -> int:
    return max(1, math.ceil(math.log2(codebook_size))) if codebook_size else 0


class Coded:
    """What every coded encoding derives the same way: `encode` is its `plan` written, `decode` its
    `nonzeros` scattered into the dense tensor."""

    def encode(
        self, name: str, array: np.ndarray, index_bits: int | None = None, prepared: Quantized | None = None, **options: Any
    ) -> EncodedTensor:
        """One quantized float32 tensor in this encoding (`index_bits` for the sparse layouts only)."""
        return self.plan(name, array.shape, prepared or prepare(name, array), index_bits).write()  # type: ignore[attr-defined]

    def decode(self, entry: TensorEntry, section: SectionReader) -> np.ndarray:
        return scatter(entry, *self.nonzeros(entry, section))  # type: ignore[attr-defined]


class SparseHuffman(Coded):
    name = "sparse_huffman"
    dense = False
    section_kinds = ("codebook", "code_lengths", "gap_lengths", "codes", "gaps")
    section_roles = {"codebook": "codebook", "code_lengths": "tables", "gap_lengths": "tables", "codes": "codes", "gaps": "gaps"}
    fields = ("nnz", "entries", "index_bits", "codebook_size", "code_bits", "gap_bits")

    def check(self, row: Mapping[str, Any], dtype: str, shape: tuple[int, ...], where: str) -> tuple[dict[str, int], dict[str, int]]:
        if dtype not in CODED_DTYPES or not shape:
            raise DczError(f"{where}: sparse_huffman tensors must be float32, float16 or bfloat16 with at least one dimension")
        numel = numel_of(shape)
        nnz = field_int(row, "nnz", 0, numel, where)
        index_bits = field_int(row, "index_bits", MIN_INDEX_BITS, MAX_INDEX_BITS, where)
        k = field_int(row, "codebook_size", 1 if nnz else 0, min(MAX_CODEBOOK, nnz), where)
        # each filler advances by 2**index_bits and every entry stays inside the tensor
        entries = field_int(row, "entries", nnz, nnz + (numel >> index_bits), where)
        low, high = entries, entries * huffman.MAX_CODE_LENGTH
        code_bits = field_int(row, "code_bits", low, high, where)
        gap_bits = field_int(row, "gap_bits", low, high, where)
        fields = dict(nnz=nnz, entries=entries, index_bits=index_bits, codebook_size=k, code_bits=code_bits, gap_bits=gap_bits)
        lengths = {
            "codebook": 4 * k,
            "code_lengths": k + 1,
            "gap_lengths": 1 << index_bits,
            "codes": (code_bits + 7) // 8,
            "gaps": (gap_bits + 7) // 8,
        }
        return fields, lengths

    def plan(self, name: str, shape: tuple[int, ...], prepared: Quantized, index_bits: int | None = None) -> Plan:
        """The exact size from the streams' histograms (Huffman code lengths depend on nothing else)."""
        positions, codebook, codes = prepared.positions, prepared.codebook, prepared.codes
        k = codebook.size
        code_counts = np.bincount(codes, minlength=k)
        if index_bits is None:
            index_bits = choose_index_bits(positions, code_counts)
        if not MIN_INDEX_BITS <= index_bits <= MAX_INDEX_BITS:
            raise DczError(f"index bits must be between {MIN_INDEX_BITS} and {MAX_INDEX_BITS}, got {index_bits}")
        gap_hist, n_fillers = stream_histograms(*gap_histogram(positions), index_bits)
        code_hist = np.append(code_counts, n_fillers)
        code_lengths, gap_lengths = huffman.code_lengths(code_hist), huffman.code_lengths(gap_hist)
        code_bits = int((code_hist * code_lengths.astype(np.int64)).sum())
        gap_bits = int((gap_hist * gap_lengths.astype(np.int64)).sum())
        size = 4 * k + (k + 1) + (1 << index_bits) + (code_bits + 7) // 8 + (gap_bits + 7) // 8

        def write() -> EncodedTensor:
            streams = relative_gaps(positions, index_bits)
            symbols = np.full(streams.gaps.size, k, dtype=symbol_dtype(k))  # symbol k is the filler
            symbols[streams.real] = codes
            code_bytes, code_bits = huffman.encode(symbols, code_lengths)
            gap_bytes, gap_bits = huffman.encode(streams.gaps, gap_lengths)
            payloads = [codebook.astype("<f4").tobytes(), code_lengths.tobytes(), gap_lengths.tobytes(), code_bytes, gap_bytes]
            params = dict(
                nnz=int(positions.size),
                entries=int(symbols.size),
                index_bits=index_bits,
                codebook_size=int(k),
                code_bits=code_bits,
                gap_bits=gap_bits,
            )
            return EncodedTensor(TensorEntry(name, "float32", tuple(int(d) for d in shape), self.name, (), params), payloads)

        return Plan(size, write)

    def tables(self, entry: TensorEntry, section: SectionReader) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The codebook and both code-length tables, validated."""
        where = f"tensor {entry.name}"
        codebook, code_lengths = codebook_and_lengths(section, where)
        gap_lengths = np.frombuffer(section("gap_lengths"), dtype=np.uint8)
        huffman.check_lengths(gap_lengths, f"{where} section gap_lengths")
        return codebook, code_lengths, gap_lengths

    def streams(self, entry: TensorEntry, section: SectionReader) -> Streams:
        """Both streams decoded: what decoding, `info --verbose` and `report` all start from."""
        where = f"tensor {entry.name}"
        codebook, code_lengths, gap_lengths = self.tables(entry, section)
        codes = huffman.decode(bytes(section("codes")), entry.code_bits, code_lengths, entry.entries, f"{where} section codes")
        gaps = huffman.decode(bytes(section("gaps")), entry.gap_bits, gap_lengths, entry.entries, f"{where} section gaps")
        return Streams(codebook, code_lengths, gap_lengths, codes, gaps)

    def nonzeros(self, entry: TensorEntry, section: SectionReader) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(flattened positions as int32, codebook index of each, codebook): the tensor without its zeros,
        validated - what both the dense decoder and the sparse runtime build from."""
        return entries_to_nonzeros(entry, self.streams(entry, section))

    def summary(self, entry: TensorEntry) -> LayerSummary:
        return sparse_summary(entry, entry.code_bits, entry.gap_bits)


def entries_to_nonzeros(entry: TensorEntry, streams: Streams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A sparse layout's decoded entries (weight symbols with fillers, gap symbols) as (positions, codebook
    index of each, codebook), every rule of the layout checked."""
    where = f"tensor {entry.name}"
    symbols = streams.codes
    filler = symbols == entry.codebook_size
    real = entry.entries - int(np.count_nonzero(filler))
    if real != entry.nnz:
        raise DczError(f"{where}: decoded {real} nonzeros, header declares {entry.nnz}")
    if entry.entries and filler[-1]:
        raise DczError(f"{where}: the entry stream ends with a filler")
    last = int(np.sum(streams.gaps, dtype=np.int64)) + streams.gaps.size - 1  # the last entry's position
    if last >= entry.numel:
        raise DczError(f"{where}: a gap places a weight at position {last}, outside the tensor of {entry.numel}")
    # checked above: every partial sum is below numel, which the container keeps under 2**31
    positions = positions_from_gaps(streams.gaps, filler, dtype=np.int32 if entry.numel < 1 << 31 else np.int64)
    return positions, symbols[~filler], streams.codebook


def sparse_summary(entry: TensorEntry, code_bits: float, gap_bits: float) -> LayerSummary:
    """Table 4's figures of a sparse layout whose two streams take these many bits."""
    wbits = fixed_code_bits(entry.codebook_size)
    per_entry = 1 / entry.entries if entry.entries else 0.0
    return LayerSummary(
        weights=entry.numel,
        nnz=entry.nnz,
        entries=entry.entries,
        codebook_size=entry.codebook_size,
        index_bits=entry.index_bits,
        weight_bits_fixed=wbits,
        weight_bits_coded=code_bits * per_entry,
        index_bits_coded=gap_bits * per_entry,
        bytes_fixed=math.ceil(entry.entries * (wbits + entry.index_bits) / 8) + 4 * entry.codebook_size,
        bytes_file=entry.nbytes,
    )


ENCODING = SparseHuffman()
