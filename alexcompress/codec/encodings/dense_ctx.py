"""The `dense_ctx` encoding: `dense_huffman`'s symbols (one per element, zero a symbol of its own), coded with
context-modelled rANS (`alexcompress.codec.rans`): each symbol with the frequencies of the class of the previous
element's symbol, so runs of zeros and of same-signed weights cost what they carry.

Sections, in order: codebook (k float32, strictly increasing, nonzero), value_model (classes over k + 1
symbols, the last for zero), values (an rANS stream). Fields: nnz, codebook_size, value_classes, chunk,
value_model_bytes, value_words. Lossless.
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
from alexcompress.codec.encodings.dense_huffman import dense_summary, symbols_to_nonzeros
from alexcompress.codec.encodings.sparse_ctx import CHUNK, model_section, value_candidates
from alexcompress.codec.encodings.sparse_huffman import MAX_CODEBOOK, Coded, Quantized, Streams, checked_codebook, scatter, symbol_dtype
from alexcompress.errors import DczError


class DenseContext(Coded):
    name = "dense_ctx"
    dense = True
    section_kinds = ("codebook", "value_model", "values")
    section_roles = {"codebook": "codebook", "value_model": "tables", "values": "codes"}
    fields = ("nnz", "codebook_size", "value_classes", "chunk", "value_model_bytes", "value_words")

    def check(self, row: Mapping[str, Any], dtype: str, shape: tuple[int, ...], where: str) -> tuple[dict[str, int], dict[str, int]]:
        if dtype not in CODED_DTYPES or not shape:
            raise DczError(f"{where}: dense_ctx tensors must be float32, float16 or bfloat16 with at least one dimension")
        numel = numel_of(shape)
        nnz = field_int(row, "nnz", 0, numel, where)
        k = field_int(row, "codebook_size", 1 if nnz else 0, min(MAX_CODEBOOK, nnz), where)
        value_classes = field_int(row, "value_classes", 1, min(k + 1, rans.MAX_CLASSES), where)
        value_model_bytes = field_int(row, "value_model_bytes", *rans.Model.size_bounds(value_classes, k + 1), where)
        chunk = field_int(row, "chunk", 1, rans.MAX_CHUNK, where)
        value_words = field_int(row, "value_words", 0, numel, where)
        fields = dict(
            nnz=nnz, codebook_size=k, value_classes=value_classes, chunk=chunk, value_model_bytes=value_model_bytes, value_words=value_words
        )
        lengths = {
            "codebook": 4 * k,
            "value_model": value_model_bytes,
            "values": rans.stream_length(numel, chunk, value_words),
        }
        return fields, lengths

    def plan(self, name: str, shape: tuple[int, ...], prepared: Quantized, index_bits: int | None = None) -> Plan:
        """The model that makes the tensor smallest, and its estimated size."""
        positions, codebook, size = prepared.positions, prepared.codebook, prepared.size
        k = codebook.size
        symbols = np.full(size, k, dtype=symbol_dtype(k))
        symbols[positions] = prepared.codes
        joint = rans.transitions(symbols, k + 1, CHUNK)
        model, estimate = rans.choose(joint, value_candidates(codebook, joint.sum(axis=0), positions.size < size), size, CHUNK)

        def write() -> EncodedTensor:
            values = rans.encode(symbols, model, CHUNK)
            words = rans.words_of(values, size, CHUNK)
            table = model.to_bytes()
            params = dict(
                nnz=int(positions.size),
                codebook_size=int(k),
                value_classes=model.classes,
                chunk=CHUNK,
                value_model_bytes=len(table),
                value_words=words,
            )
            entry = TensorEntry(name, "float32", tuple(int(d) for d in shape), self.name, (), params)
            return EncodedTensor(entry, [codebook.astype("<f4").tobytes(), table, values])

        return Plan(4 * k + estimate, write)

    def defer(self, entry: TensorEntry, section: SectionReader) -> Deferred:
        """The tensor's stream, its table checked, and what makes the tensor of its symbols."""
        codebook, spec = self._spec(entry, section)
        return Deferred([spec], lambda decoded: scatter(entry, *symbols_to_nonzeros(entry, self._assemble(codebook, decoded[0]))))

    def streams(self, entry: TensorEntry, section: SectionReader) -> Streams:
        """The symbol stream decoded (every element's symbol; k is zero); no gap stream, no code lengths."""
        codebook, spec = self._spec(entry, section)
        return self._assemble(codebook, rans.decode_streams([spec])[0])

    def _spec(self, entry: TensorEntry, section: SectionReader) -> tuple[np.ndarray, tuple[Any, ...]]:
        where = f"tensor {entry.name}"
        codebook = checked_codebook(section, where)
        model = model_section(section, "value_model", entry.value_classes, entry.codebook_size + 1, where)
        return codebook, (section("values"), entry.numel, model, entry.chunk, f"{where} section values")

    def _assemble(self, codebook: np.ndarray, codes: np.ndarray) -> Streams:
        none = np.zeros(0, dtype=np.uint8)
        return Streams(codebook, none, none, codes, none.astype(codes.dtype), extra_symbol="zero")

    def nonzeros(self, entry: TensorEntry, section: SectionReader) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(flattened positions as int32, codebook index of each, codebook), validated."""
        return symbols_to_nonzeros(entry, self.streams(entry, section))

    def summary(self, entry: TensorEntry) -> LayerSummary:
        return dense_summary(entry, 8 * entry.section("values").length)


ENCODING = DenseContext()
