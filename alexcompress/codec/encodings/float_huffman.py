"""The `float_huffman` encoding: a floating tensor that is not quantized, stored losslessly with its
exponents Huffman-coded (as DFloat11 stores bfloat16 weights: trained weights use a few dozen of the 256
exponents, so 8 exponent bits code in ~2-3) and its sign and mantissa bits as they are.

dtypes: `bfloat16` (a byte of sign and 7 mantissa bits per element) and `float32` (three bytes of sign and
23 mantissa bits). Sections, in order: exponent_lengths (256 bytes: the Huffman code length of each
exponent value, 0 = unused), exponents (the code stream, `exponent_bits` bits), rest (sign and mantissa,
little-endian, one per element in C order). Bit for bit: NaN payloads, infinities, signed zeros and
subnormals included.

>>> import ml_dtypes
>>> w = np.float32([0.5, -0.25, 0.125, 3.0, -0.0, np.inf]).astype(ml_dtypes.bfloat16)
>>> encoded = ENCODING.encode("w", w)
>>> back = ENCODING.decode(encoded.entry, dict(zip(ENCODING.section_kinds, map(memoryview, encoded.payloads))).__getitem__)
>>> back.view(np.uint16).tolist() == w.view(np.uint16).tolist()
True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from alexcompress.codec import huffman
from alexcompress.codec.encodings.base import DTYPES, EncodedTensor, LayerSummary, SectionReader, TensorEntry, field_int, numel_of
from alexcompress.errors import DczError

#: per dtype: (unsigned view, exponent shift, bytes of sign and mantissa per element)
LAYOUTS = {"bfloat16": (np.dtype("<u2"), 7, 1), "float32": (np.dtype("<u4"), 23, 3)}


def split(array: np.ndarray) -> tuple[str, np.ndarray, np.ndarray]:
    """(dtype name, exponent of each element as int64, its sign and mantissa bits as unsigned ints)."""
    name = next((n for n in LAYOUTS if DTYPES[n] == array.dtype.newbyteorder("<")), None)
    if name is None:
        raise DczError(f"float_huffman stores bfloat16 or float32, not {array.dtype}")
    unsigned, shift, _ = LAYOUTS[name]
    bits = np.ascontiguousarray(array).reshape(-1).view(unsigned)
    exponents = ((bits >> shift) & 0xFF).astype(np.int64)
    rest = (
        (bits & ((1 << shift) - 1)) | ((bits >> 8) & (1 << shift)) if name == "bfloat16" else (bits & 0x7FFFFF) | ((bits >> 8) & 0x800000)
    )
    return name, exponents, rest


class FloatHuffman:
    name = "float_huffman"
    section_kinds = ("exponent_lengths", "exponents", "rest")
    section_roles = {"exponent_lengths": "tables", "exponents": "codes", "rest": "raw"}
    fields = ("exponent_bits",)

    def check(self, row: Mapping[str, Any], dtype: str, shape: tuple[int, ...], where: str) -> tuple[dict[str, int], dict[str, int]]:
        if dtype not in LAYOUTS:
            raise DczError(f"{where}: float_huffman tensors must be bfloat16 or float32")
        numel = numel_of(shape)
        exponent_bits = field_int(row, "exponent_bits", numel, numel * huffman.MAX_CODE_LENGTH, where)
        lengths = {"exponent_lengths": 256, "exponents": (exponent_bits + 7) // 8, "rest": numel * LAYOUTS[dtype][2]}
        return {"exponent_bits": exponent_bits}, lengths

    def size(self, array: np.ndarray) -> int:
        """The section bytes `encode` would write (exact: Huffman lengths depend on the histogram only)."""
        name, exponents, _ = split(array)
        counts = np.bincount(exponents, minlength=256)
        bits = int((counts * huffman.code_lengths(counts).astype(np.int64)).sum())
        return 256 + (bits + 7) // 8 + exponents.size * LAYOUTS[name][2]

    def encode(self, name: str, array: np.ndarray, **options: Any) -> EncodedTensor:
        dtype, exponents, rest = split(array)
        lengths = huffman.code_lengths(np.bincount(exponents, minlength=256))
        if exponents.size and not lengths.any():  # one exponent value: a one-bit code for it
            lengths[int(exponents[0])] = 1
        data, bits = huffman.encode(exponents, lengths)
        width = LAYOUTS[dtype][2]
        packed = rest.astype("<u4").view(np.uint8).reshape(-1, 4)[:, :width] if rest.size else np.zeros((0, width), np.uint8)
        entry = TensorEntry(name, dtype, tuple(int(d) for d in array.shape), self.name, (), {"exponent_bits": bits})
        return EncodedTensor(entry, [lengths.astype(np.uint8).tobytes(), data, np.ascontiguousarray(packed).tobytes()])

    def decode(self, entry: TensorEntry, section: SectionReader) -> np.ndarray:
        where = f"tensor {entry.name}"
        lengths = np.frombuffer(section("exponent_lengths"), dtype=np.uint8)
        huffman.check_lengths(lengths, f"{where} section exponent_lengths")
        exponents = huffman.decode(bytes(section("exponents")), entry.exponent_bits, lengths, entry.numel, f"{where} section exponents")
        unsigned, shift, width = LAYOUTS[entry.dtype]
        raw = np.frombuffer(section("rest"), dtype=np.uint8).reshape(-1, width)
        rest = np.zeros((entry.numel, 4), dtype=np.uint8)
        rest[:, :width] = raw
        rest32 = rest.view("<u4").reshape(-1)
        sign = (rest32 >> shift) & 1
        mantissa = rest32 & ((1 << shift) - 1)
        total = 8 * unsigned.itemsize
        bits = (sign.astype(np.uint64) << (total - 1)) | (exponents.astype(np.uint64) << shift) | mantissa
        return bits.astype(unsigned).view(DTYPES[entry.dtype]).reshape(entry.shape)

    def summary(self, entry: TensorEntry) -> LayerSummary | None:
        return None


ENCODING = FloatHuffman()
