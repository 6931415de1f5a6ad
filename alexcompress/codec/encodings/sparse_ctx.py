"""The `sparse_ctx` encoding: `sparse_huffman`'s entries (nonzeros and filler entries, at relative gaps of
`index_bits`), coded with context-modelled rANS (`alexcompress.codec.rans`) instead of Huffman. The weight symbols
come first and say which entries are fillers, so only the real entries' gaps are coded (a filler's gap is
always 2**index_bits).

Each stream's symbol is coded with the frequencies of the class of the stream's previous symbol: a trained
layer's consecutive nonzeros tend to share their sign and magnitude, and a gap tends to follow a gap of its
size. Frequencies are 14-bit integers, so a symbol costs its information, not a whole number of bits. The
writer chooses the classes (from a few candidates: none, by sign, by sign and magnitude, every symbol) and
the gap width that make the tensor smallest, and the container keeps this encoding only where it beats the
Huffman ones.

Sections, in order: codebook (k float32, strictly increasing, nonzero), value_model (classes over k + 1
symbols, the last the filler), gap_model (classes over 2**index_bits gap symbols), values (entries
symbols), gaps (nnz symbols): rANS streams. Fields: nnz, entries, index_bits, codebook_size, value_classes,
gap_classes, chunk, value_model_bytes, value_words, gap_model_bytes, gap_words. Lossless.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from alexcompress.codec import rans
from alexcompress.codec.encodings.base import (
    CODED_DTYPES,
    Deferred,
    EncodedTensor,
    LayerSummary,
    Plan,
    SectionReader,
    TensorEntry,
    field_int,
    numel_of,
)
from alexcompress.codec.encodings.sparse_huffman import (
    MAX_CODEBOOK,
    Coded,
    Quantized,
    Streams,
    checked_codebook,
    choose_index_bits,
    entries_to_nonzeros,
    scatter,
    sparse_summary,
    symbol_dtype,
)
from alexcompress.codec.sparse_index import MAX_INDEX_BITS, MIN_INDEX_BITS, relative_gaps
from alexcompress.errors import DczError

#: symbols per lane: a stream of n symbols is coded in ceil(n / CHUNK) lanes of CHUNK steps at most
CHUNK = rans.MAX_CHUNK
#: the nonzeros on which the gap width is chosen (the first ones of a larger tensor)
SAMPLE = 1 << 18


def value_candidates(codebook: np.ndarray, counts: np.ndarray, extra: bool) -> list[list[int]]:
    """Class boundaries worth trying over a codebook's symbols (+ one extra symbol, the filler or zero, last):
    none; by sign; by sign and 2, 4 or 8 magnitude classes a side (equal mass); every symbol its own class."""
    k = codebook.size
    first_positive = int(np.searchsorted(codebook, 0.0, side="right"))
    sign = [first_positive] if 0 < first_positive < k else []
    tail = [k] if extra and k else []
    out: list[list[int]] = [[]]
    for parts in (1, 2, 4, 8):
        out.append(
            rans.mass_boundaries(counts, 0, first_positive, parts) + sign + rans.mass_boundaries(counts, first_positive, k, parts) + tail
        )
    out.append(list(range(1, k + 1)))
    return out


def gap_candidates(counts: np.ndarray) -> list[list[int]]:
    """Class boundaries worth trying over gap symbols: none, adjacent or not, 2 to 8 classes of equal mass."""
    size = counts.size
    out: list[list[int]] = [[], [1] if size > 1 else []]
    for parts in (2, 4, 8):
        out.append(rans.mass_boundaries(counts, 0, size, parts))
    return out


def model_section(section: SectionReader, kind: str, classes: int, alphabet: int, where: str) -> rans.Model:
    return rans.Model.from_bytes(section(kind), classes, alphabet, f"{where} section {kind}")


class SparseContext(Coded):
    name = "sparse_ctx"
    dense = False
    section_kinds = ("codebook", "value_model", "gap_model", "values", "gaps")
    section_roles = {"codebook": "codebook", "value_model": "tables", "gap_model": "tables", "values": "codes", "gaps": "gaps"}
    fields = (
        "nnz",
        "entries",
        "index_bits",
        "codebook_size",
        "value_classes",
        "gap_classes",
        "chunk",
        "value_model_bytes",
        "value_words",
        "gap_model_bytes",
        "gap_words",
    )

    def check(self, row: Mapping[str, Any], dtype: str, shape: tuple[int, ...], where: str) -> tuple[dict[str, int], dict[str, int]]:
        if dtype not in CODED_DTYPES or not shape:
            raise DczError(f"{where}: sparse_ctx tensors must be float32, float16 or bfloat16 with at least one dimension")
        numel = numel_of(shape)
        nnz = field_int(row, "nnz", 0, numel, where)
        index_bits = field_int(row, "index_bits", MIN_INDEX_BITS, MAX_INDEX_BITS, where)
        k = field_int(row, "codebook_size", 1 if nnz else 0, min(MAX_CODEBOOK, nnz), where)
        entries = field_int(row, "entries", nnz, nnz + (numel >> index_bits), where)
        value_classes = field_int(row, "value_classes", 1, min(k + 1, rans.MAX_CLASSES), where)
        value_model_bytes = field_int(row, "value_model_bytes", *rans.Model.size_bounds(value_classes, k + 1), where)
        gap_classes = field_int(row, "gap_classes", 1, min(1 << index_bits, rans.MAX_CLASSES), where)
        gap_model_bytes = field_int(row, "gap_model_bytes", *rans.Model.size_bounds(gap_classes, 1 << index_bits), where)
        chunk = field_int(row, "chunk", 1, rans.MAX_CHUNK, where)
        value_words = field_int(row, "value_words", 0, entries, where)  # a symbol renormalises at most once
        gap_words = field_int(row, "gap_words", 0, nnz, where)
        fields = dict(
            nnz=nnz,
            entries=entries,
            index_bits=index_bits,
            codebook_size=k,
            value_classes=value_classes,
            gap_classes=gap_classes,
            value_model_bytes=value_model_bytes,
            gap_model_bytes=gap_model_bytes,
            chunk=chunk,
            value_words=value_words,
            gap_words=gap_words,
        )
        lengths = {
            "codebook": 4 * k,
            "value_model": value_model_bytes,
            "gap_model": gap_model_bytes,
            "values": rans.stream_length(entries, chunk, value_words),
            "gaps": rans.stream_length(nnz, chunk, gap_words),
        }
        return fields, lengths

    def plan(self, name: str, shape: tuple[int, ...], prepared: Quantized, index_bits: int | None = None) -> Plan:
        """The gap width and models that make the tensor smallest, by the models' estimate (their
        information content; the stream comes within a few bytes a lane of it)."""
        positions, codebook, codes = prepared.positions, prepared.codebook, prepared.codes
        k = codebook.size
        if index_bits is not None and not MIN_INDEX_BITS <= index_bits <= MAX_INDEX_BITS:
            raise DczError(f"index bits must be between {MIN_INDEX_BITS} and {MAX_INDEX_BITS}, got {index_bits}")
        if index_bits is None:
            index_bits = self._width(codebook, codes, positions)
        best = self._plan(codebook, codes, positions, index_bits)
        estimate, width, symbols, gaps, value_model, gap_model = best

        def write() -> EncodedTensor:
            values, gap_stream = rans.encode_streams([(symbols, value_model, CHUNK), (gaps, gap_model, CHUNK)])
            value_table, gap_table = value_model.to_bytes(), gap_model.to_bytes()
            payloads = [codebook.astype("<f4").tobytes(), value_table, gap_table, values, gap_stream]
            params = dict(
                nnz=int(positions.size),
                entries=int(symbols.size),
                index_bits=width,
                codebook_size=int(k),
                value_classes=value_model.classes,
                gap_classes=gap_model.classes,
                value_model_bytes=len(value_table),
                gap_model_bytes=len(gap_table),
                chunk=CHUNK,
                value_words=rans.words_of(values, symbols.size, CHUNK),
                gap_words=rans.words_of(gap_stream, gaps.size, CHUNK),
            )
            return EncodedTensor(TensorEntry(name, "float32", tuple(int(d) for d in shape), self.name, (), params), payloads)

        return Plan(4 * k + estimate, write)

    def _width(self, codebook: np.ndarray, codes: np.ndarray, positions: np.ndarray) -> int:
        """The gap width making the tensor smallest: from Huffman's best (fillers cost less here, so the
        optimum lies at or below it) each way while the estimate shrinks, judged on the first SAMPLE
        nonzeros of a large tensor (a prefix keeps the layout's structure)."""
        codes, positions = codes[:SAMPLE], positions[:SAMPLE]
        start = choose_index_bits(positions, np.bincount(codes, minlength=codebook.size))
        best = self._plan(codebook, codes, positions, start)
        for step in (-1, 1):
            width = start + step
            while MIN_INDEX_BITS <= width <= MAX_INDEX_BITS:
                candidate = self._plan(codebook, codes, positions, width)
                if candidate[0] >= best[0]:
                    break
                best, width = candidate, width + step
            if best[1] != start:  # it moved this way: the other cannot improve on it (one minimum)
                break
        return best[1]

    def _plan(self, codebook: np.ndarray, codes: np.ndarray, positions: np.ndarray, width: int) -> tuple:
        """(estimated bytes, width, value symbols, gap symbols, value model, gap model) at one gap width."""
        k = codebook.size
        streams = relative_gaps(positions, width)
        symbols = np.full(streams.gaps.size, k, dtype=symbol_dtype(k))  # symbol k is the filler
        symbols[streams.real] = codes
        value_joint = rans.transitions(symbols, k + 1, CHUNK)
        value_model, value_size = rans.choose(
            value_joint, value_candidates(codebook, value_joint.sum(axis=0), codes.size < symbols.size), symbols.size, CHUNK
        )
        gaps = streams.gaps[streams.real]  # a filler's gap is implied
        gap_joint = rans.transitions(gaps, 1 << width, CHUNK)
        gap_model, gap_size = rans.choose(gap_joint, gap_candidates(gap_joint.sum(axis=0)), gaps.size, CHUNK)
        return value_size + gap_size, width, symbols, gaps, value_model, gap_model

    def defer(self, entry: TensorEntry, section: SectionReader) -> Deferred:
        """The tensor's two streams, its tables checked, and what makes the tensor of their symbols."""
        codebook, specs = self._specs(entry, section)
        return Deferred(specs, lambda decoded: scatter(entry, *entries_to_nonzeros(entry, self._assemble(entry, codebook, *decoded))))

    def streams(self, entry: TensorEntry, section: SectionReader) -> Streams:
        """Both streams decoded (no code-length tables: rANS codes have none)."""
        codebook, specs = self._specs(entry, section)
        return self._assemble(entry, codebook, *rans.decode_streams(specs))

    def _specs(self, entry: TensorEntry, section: SectionReader) -> tuple[np.ndarray, list[tuple[Any, ...]]]:
        where = f"tensor {entry.name}"
        codebook = checked_codebook(section, where)
        value_model = model_section(section, "value_model", entry.value_classes, entry.codebook_size + 1, where)
        gap_model = model_section(section, "gap_model", entry.gap_classes, 1 << entry.index_bits, where)
        return codebook, [
            (section("values"), entry.entries, value_model, entry.chunk, f"{where} section values"),
            (section("gaps"), entry.nnz, gap_model, entry.chunk, f"{where} section gaps"),
        ]

    def _assemble(self, entry: TensorEntry, codebook: np.ndarray, codes: np.ndarray, real_gaps: np.ndarray) -> Streams:
        """The entries' streams as `sparse_huffman` has them: a filler's gap filled in."""
        filler = codes == entry.codebook_size
        real = entry.entries - int(np.count_nonzero(filler))
        if real != entry.nnz:
            raise DczError(f"tensor {entry.name}: decoded {real} nonzeros, header declares {entry.nnz}")
        gaps = np.full(entry.entries, (1 << entry.index_bits) - 1, dtype=np.int16)  # a filler spans 2**index_bits
        gaps[~filler] = real_gaps
        none = np.zeros(0, dtype=np.uint8)
        return Streams(codebook, none, none, codes, gaps)

    def nonzeros(self, entry: TensorEntry, section: SectionReader) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(flattened positions as int32, codebook index of each, codebook), validated."""
        return entries_to_nonzeros(entry, self.streams(entry, section))

    def summary(self, entry: TensorEntry) -> LayerSummary:
        return sparse_summary(entry, 8 * entry.section("values").length, 8 * entry.section("gaps").length)


ENCODING = SparseContext()
