from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alexcompress.container import (
    MAGIC,
    PREAMBLE,
    encode_raw,
    encode_sparse,
    parse_header,
    read_dcz,
    write_dcz,
)
from alexcompress.errors import DczError


def quantized_array(rng, shape, density, bits):
    n = int(np.prod(shape))
    codebook = np.unique(rng.normal(size=2**bits).astype(np.float32))
    codebook = codebook[codebook != 0]
    values = codebook[rng.integers(0, codebook.size, n)]
    mask = rng.random(n) < density
    return np.where(mask, values, 0).astype(np.float32).reshape(shape)


def roundtrip(arrays, index_bits=None):
    tensors = [encode_sparse(f"t{i}.weight", a, index_bits) for i, a in enumerate(arrays)]
    tensors.append(encode_raw("t.bias", np.arange(3, dtype=np.float32)))
    data = write_dcz(tensors, arch="alexnet", num_classes=10, producer="test", options={})
    header, out = read_dcz(data)
    for i, a in enumerate(arrays):
        got = out[f"t{i}.weight"]
        assert got.shape == a.shape and got.dtype == np.float32
        assert np.array_equal(got.view(np.uint32), a.view(np.uint32))  # bit for bit, -0.0 aside
    assert out["t.bias"].tolist() == [0.0, 1.0, 2.0]
    assert header.file_size == len(data)
    return data, header


@settings(max_examples=150, deadline=None)
@given(
    shape=st.lists(st.integers(1, 40), min_size=1, max_size=4),
    density=st.sampled_from([0.0, 0.001, 0.05, 0.3, 0.9, 1.0]),
    bits=st.integers(1, 8),
    index_bits=st.one_of(st.none(), st.integers(1, 12)),
    seed=st.integers(0, 2**16),
)
def test_sparse_round_trip(shape, density, bits, index_bits, seed):
    roundtrip([quantized_array(np.random.default_rng(seed), tuple(shape), density, bits)], index_bits)


def test_edge_cases_one_nonzero_fully_dense_long_gaps():
    rng = np.random.default_rng(0)
    one = np.zeros(10_000, np.float32)
    one[-1] = 0.5  # a gap of 10,000 with 1-bit indices: thousands of fillers
    dense = quantized_array(rng, (50, 50), 1.0, 3)
    empty = np.zeros((3, 4), np.float32)
    _, header = roundtrip([one, dense, empty], index_bits=1)
    assert header.tensors[0].entries - header.tensors[0].nnz == (10_000 - 1) // 2
    roundtrip([one, dense, empty])


def test_auto_width_is_no_worse_than_any_fixed_width():
    a = quantized_array(np.random.default_rng(1), (300, 300), 0.09, 5)
    auto = len(write_dcz([encode_sparse("w", a)], arch="alexnet", num_classes=1, producer="t", options={}))
    for width in range(1, 13):
        fixed = len(write_dcz([encode_sparse("w", a, width)], arch="alexnet", num_classes=1, producer="t", options={}))
        assert auto <= fixed + 1, width


def test_unquantized_tensor_points_to_quantize():
    a = np.random.default_rng(0).normal(size=(30, 30)).astype(np.float32)
    with pytest.raises(DczError, match="not quantized: run 'alexcompress quantize' first"):
        encode_sparse("fc6", a)


def small_file():
    a = quantized_array(np.random.default_rng(3), (20, 30), 0.2, 4)
    return write_dcz([encode_sparse("w.weight", a), encode_raw("w.bias", np.ones(4, np.float32))], arch="alexnet", num_classes=10, producer="t", options={})


def test_every_flipped_byte_is_caught():
    data = small_file()
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x40
        with pytest.raises(DczError):
            read_dcz(bytes(bad))


def test_every_truncation_and_trailing_bytes_are_caught():
    data = small_file()
    for cut in range(len(data)):
        with pytest.raises(DczError):
            read_dcz(data[:cut])
    with pytest.raises(DczError, match="trailing bytes"):
        read_dcz(data + b"\0")


def rebuild(data, mutate):
    """Re-sign a header after `mutate` edits it: tests the validation behind the CRC."""
    _, _, _, length, _ = PREAMBLE.unpack_from(data)
    header = json.loads(data[PREAMBLE.size : PREAMBLE.size + length])
    mutate(header)
    raw = json.dumps(header).encode()
    return PREAMBLE.pack(MAGIC, 1, 0, len(raw), zlib.crc32(raw)) + raw + data[PREAMBLE.size + length :]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda h: h["tensors"][0].update(shape=[2**31, 2**31]), "elements in all"),
        (lambda h: h["tensors"][0].update(nnz=10**9), "nnz"),
        (lambda h: h["tensors"][0].update(code_bits=10**12), "code_bits"),
        (lambda h: h["tensors"][0].update(encoding="zstd"), "unknown encoding"),
        (lambda h: h["tensors"][0]["sections"][1].update(offset=5), "hole or overlaps"),
        (lambda h: h["tensors"][0].update(index_bits=13), "index_bits"),
        (lambda h: h.update(tensors=h["tensors"] * 2), "duplicate name"),
        (lambda h: h["tensors"][0].update(shape="big"), "shape"),
        (lambda h: h.pop("arch"), "missing field 'arch'"),
    ],
)
def test_hostile_header_fields_are_refused_before_allocation(mutate, message):
    with pytest.raises(DczError, match=message):
        read_dcz(rebuild(small_file(), mutate))


def test_version_flags_and_magic():
    data = small_file()
    with pytest.raises(DczError, match="unsupported format version 2"):
        parse_header(data[:8] + struct.pack("<H", 2) + data[10:])
    with pytest.raises(DczError, match="unknown flags"):
        parse_header(data[:10] + struct.pack("<H", 1) + data[12:])
    with pytest.raises(DczError, match="bad magic"):
        parse_header(b"PK\x03\x04" + data[4:])


def test_header_has_no_timestamps_and_is_deterministic():
    assert small_file() == small_file()
