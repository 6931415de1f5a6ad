"""The `raw` encoding: a tensor's bytes as they are (little-endian, C order). Biases, norms and buffers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from alexcompress.codec.encodings.base import DTYPES, EncodedTensor, LayerSummary, SectionReader, TensorEntry, numel_of
from alexcompress.errors import DczError


class Raw:
    name = "raw"
    section_kinds = ("data",)
    section_roles = {"data": "raw"}
    fields: tuple[str, ...] = ()

    def check(self, row: Mapping[str, Any], dtype: str, shape: tuple[int, ...], where: str) -> tuple[dict[str, int], dict[str, int]]:
        return {}, {"data": numel_of(shape) * np.dtype(DTYPES[dtype]).itemsize}

    def encode(self, name: str, array: np.ndarray, **options: Any) -> EncodedTensor:
        dtype = next((n for n, code in DTYPES.items() if np.dtype(code) == array.dtype.newbyteorder("<")), None)
        if dtype is None:
            raise DczError(f"{name}: dtype {array.dtype} cannot be stored in a .dcz")
        payload = np.asarray(array, dtype=DTYPES[dtype]).tobytes(order="C")
        return EncodedTensor(TensorEntry(name, dtype, tuple(int(d) for d in array.shape), self.name, ()), [payload])

    def decode(self, entry: TensorEntry, section: SectionReader) -> np.ndarray:
        code = DTYPES[entry.dtype]
        return np.frombuffer(section("data"), dtype=code).astype(code.replace("<", "="), copy=True).reshape(entry.shape)

    def summary(self, entry: TensorEntry) -> LayerSummary | None:
        return None


ENCODING = Raw()
