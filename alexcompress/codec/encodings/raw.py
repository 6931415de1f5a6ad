"""The `raw` encoding: a tensor's bytes as they are (little-endian, C order). Biases, norms and buffers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from alexcompress.codec.encodings.base import DTYPES, EncodedTensor, LayerSummary, SectionReader, TensorEntry, dtype_name, numel_of
from alexcompress.errors import DczError


class Raw:
    name = "raw"
    section_kinds = ("data",)
    section_roles = {"data": "raw"}
    fields: tuple[str, ...] = ()

    def check(self, row: Mapping[str, Any], dtype: str, shape: tuple[int, ...], where: str) -> tuple[dict[str, int], dict[str, int]]:
        return {}, {"data": numel_of(shape) * DTYPES[dtype].itemsize}

    def encode(self, name: str, array: np.ndarray, **options: Any) -> EncodedTensor:
        dtype = dtype_name(array.dtype)
        if dtype is None:
            raise DczError(f"{name}: dtype {array.dtype} cannot be stored in a .dcz")
        payload = np.asarray(array, dtype=DTYPES[dtype]).tobytes(order="C")
        return EncodedTensor(TensorEntry(name, dtype, tuple(int(d) for d in array.shape), self.name, ()), [payload])

    def decode(self, entry: TensorEntry, section: SectionReader) -> np.ndarray:
        dtype = DTYPES[entry.dtype]
        return np.frombuffer(section("data"), dtype=dtype).astype(dtype.newbyteorder("="), copy=True).reshape(entry.shape)

    def summary(self, entry: TensorEntry) -> LayerSummary | None:
        return None


ENCODING = Raw()
