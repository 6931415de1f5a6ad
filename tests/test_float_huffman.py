"""The lossless float encoding (`float_huffman`, DFloat11's idea): bit for bit, smaller where exponents are
few, refused in one line when damaged, and `encode --lossless-floats` through the command line."""

from __future__ import annotations

import json
import subprocess
import sys
import zlib

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from alexcompress.codec.container import PREAMBLE, parse_header, read_dcz
from alexcompress.codec.encodings import encode_stored
from alexcompress.codec.encodings.float_huffman import ENCODING
from alexcompress.errors import DczError
from alexcompress.models import safetensors
from alexcompress.models.dcz import decode_arrays, encode

CLI = [sys.executable, "-m", "alexcompress"]


def _sections(encoded):
    return dict(zip(ENCODING.section_kinds, map(memoryview, encoded.payloads))).__getitem__


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["bfloat16", "float32"]), st.lists(st.integers(0, 2**32 - 1), max_size=300), st.booleans())
def test_any_bit_pattern_comes_back_bit_for_bit(dtype, words, bell):
    if bell:  # trained-like weights: few exponents
        array = np.random.default_rng(len(words)).normal(0, 0.02, len(words)).astype(np.float32)
    else:  # anything: NaN payloads, infinities, subnormals, signed zeros
        array = np.array(words, dtype=np.uint32).view(np.float32)
    if dtype == "bfloat16":
        array = (array.view(np.uint32) >> 16).astype(np.uint16).view(ml_dtypes.bfloat16)
    encoded = ENCODING.encode("w", array)
    assert sum(map(len, encoded.payloads)) == ENCODING.size(array)
    back = ENCODING.decode(encoded.entry, _sections(encoded))
    assert back.dtype == array.dtype and np.array_equal(back.view(np.uint8), array.view(np.uint8))


def test_trained_like_bfloat16_takes_about_eleven_bits_a_weight():
    weights = np.random.default_rng(0).normal(0, 0.02, 1 << 16).astype(ml_dtypes.bfloat16)
    exponents = (weights.view(np.uint16) >> 7) & 0xFF
    p = np.bincount(exponents, minlength=256) / exponents.size
    entropy = -(p[p > 0] * np.log2(p[p > 0])).sum()
    bits = 8 * ENCODING.size(weights) / weights.size
    assert 8 + entropy <= bits <= 8 + entropy + 0.1 and bits < 11.5  # the exponent's entropy, plus the table
    assert encode_stored("w", weights, lossless=True).entry.encoding == "float_huffman"
    assert encode_stored("w", weights).entry.encoding == "raw"


def _tampered(data: bytes, edit) -> bytes:
    header_length = PREAMBLE.unpack_from(data, 0)[3]
    header = json.loads(data[PREAMBLE.size : PREAMBLE.size + header_length])
    body = bytearray(data[PREAMBLE.size + header_length :])
    edit(header, body)
    raw = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    for tensor in header["tensors"]:
        for section in tensor["sections"]:
            section["crc32"] = zlib.crc32(body[section["offset"] : section["offset"] + section["length"]])
    raw = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    return PREAMBLE.pack(*PREAMBLE.unpack_from(data, 0)[:3], len(raw), zlib.crc32(raw)) + raw + bytes(body)


def _lengths(tensor):
    return next(s for s in tensor["sections"] if s["kind"] == "exponent_lengths")


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda h, b: h["tensors"][0].update(exponent_bits=h["tensors"][0]["exponent_bits"] + 8), "length"),
        (
            lambda h, b: b.__setitem__(
                slice(_lengths(h["tensors"][0])["offset"], _lengths(h["tensors"][0])["offset"] + 4), b"\x01\x01\x01\x01"
            ),
            "kraft",
        ),
        (lambda h, b: h["tensors"][0].update(dtype="float16"), "bfloat16 or float32"),
    ],
    ids=["a wrong bit count", "an over-full code", "a dtype it does not store"],
)
def test_a_damaged_tensor_is_refused_in_one_line(edit, words):
    weights = np.random.default_rng(1).normal(0, 0.02, (64, 64)).astype(ml_dtypes.bfloat16)
    data = encode({"w.weight": weights, "b": np.ones(3, np.float32)}, arch="none", lossless=True)
    assert parse_header(data).tensors[0].encoding == "float_huffman"
    with pytest.raises(DczError) as info:
        read_dcz(_tampered(data, edit))
    assert words in str(info.value).lower() and "\n" not in str(info.value)


def test_encode_lossless_floats_stores_an_unquantized_checkpoint_bit_for_bit(tmp_path):
    rng = np.random.default_rng(2)
    state = {f"layers.{i}.weight": rng.normal(0, 0.02, (128, 96)).astype(ml_dtypes.bfloat16) for i in range(3)}
    state["norm.weight"] = np.ones(96, dtype=np.float32)
    state["step"] = np.array(7, dtype=np.int64)
    with open(tmp_path / "m.safetensors", "wb") as handle:
        safetensors.write(state, handle)
    refused = subprocess.run([*CLI, "encode", tmp_path / "m.safetensors", "-o", tmp_path / "x.dcz"], capture_output=True, text=True)
    assert refused.returncode == 1 and "--lossless-floats" in refused.stderr
    done = subprocess.run(
        [*CLI, "encode", tmp_path / "m.safetensors", "--lossless-floats", "-o", tmp_path / "m.dcz", "-q"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    data = (tmp_path / "m.dcz").read_bytes()
    back, _ = decode_arrays(data)
    assert all(back[k].dtype == v.dtype and back[k].tobytes() == v.tobytes() for k, v in state.items())
    weights = sum(v.nbytes for k, v in state.items() if k.startswith("layers"))
    coded = sum(t.nbytes for t in parse_header(data).tensors if t.encoding == "float_huffman")
    assert coded < 0.75 * weights  # 16 bits -> about 11
