from __future__ import annotations

import base64
import hashlib
import struct

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from alexcompress.codec.container import parse_header, read_dcz, write_dcz
from alexcompress.codec.encodings import CODED_ENCODINGS, dense_ctx, dense_huffman, encode_coded, raw, sparse_ctx, sparse_huffman
from alexcompress.errors import DczError
from tests.fuzz_dcz import resign, split

encode_raw, encode_sparse, encode_dense = raw.ENCODING.encode, sparse_huffman.ENCODING.encode, dense_huffman.ENCODING.encode


def quantized_array(rng, shape, density, bits):
    n = int(np.prod(shape))
    codebook = np.unique(rng.normal(size=2**bits).astype(np.float32))
    codebook = codebook[codebook != 0]
    values = codebook[rng.integers(0, codebook.size, n)]
    mask = rng.random(n) < density
    return np.where(mask, values, 0).astype(np.float32).reshape(shape)


def roundtrip(arrays, index_bits=None, encoder=None):
    encoder = encoder or (lambda name, a: encode_sparse(name, a, index_bits))
    tensors = [encoder(f"t{i}.weight", a) for i, a in enumerate(arrays)]
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


@settings(max_examples=100, deadline=None)
@given(
    shape=st.lists(st.integers(1, 40), min_size=1, max_size=4),
    density=st.sampled_from([0.0, 0.05, 0.3, 0.6, 0.9, 1.0]),
    bits=st.integers(1, 8),
    seed=st.integers(0, 2**16),
)
def test_dense_and_chosen_encodings_round_trip(shape, density, bits, seed):
    a = quantized_array(np.random.default_rng(seed), tuple(shape), density, bits)
    sizes = {}
    for name, encoding in CODED_ENCODINGS.items():
        _, header = roundtrip([a], encoder=encoding.encode)
        sizes[name] = header.tensors[0].nbytes
        assert header.tensors[0].nnz == np.count_nonzero(a)
    _, chosen = roundtrip([a], encoder=encode_coded)
    _, paper = roundtrip([a], encoder=lambda n, x: encode_coded(n, x, coder="huffman"))
    if a.size > 4096 and np.count_nonzero(a) < 0.25 * a.size:  # dense layouts are not tried
        sizes = {name: size for name, size in sizes.items() if not CODED_ENCODINGS[name].dense}
        assert paper.tensors[0].encoding == "sparse_huffman"
    # the smallest by the coders' size estimates (rANS's are within a few bytes a lane), never bigger than
    # the paper's coder alone, whose sizes are exact
    assert chosen.tensors[0].nbytes <= min(sizes.values()) * 1.01 + 8
    assert chosen.tensors[0].nbytes <= paper.tensors[0].nbytes
    assert paper.tensors[0].nbytes == min(sizes[n] for n in ("sparse_huffman", "dense_huffman") if n in sizes)


def dense_file():
    a = quantized_array(np.random.default_rng(5), (20, 30), 0.8, 3)
    return write_dcz([encode_dense("w.weight", a)], arch="alexnet", num_classes=10, producer="t", options={})


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda h: h["tensors"][0].update(nnz=601), "nnz"),
        (lambda h: h["tensors"][0].update(code_bits=599), "code_bits"),
        (lambda h: h["tensors"][0].update(codebook_size=257), "codebook_size"),
        (lambda h: h["tensors"][0]["sections"].pop(), "sections"),
        (lambda h: h["tensors"][0].update(nnz=h["tensors"][0]["nnz"] - 1), "decoded .* nonzeros, header declares"),
    ],
)
def test_hostile_dense_fields_are_refused(mutate, message):
    with pytest.raises(DczError, match=message):
        read_dcz(rebuild(dense_file(), mutate))


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
    with pytest.raises(DczError, match="the model is not quantized: quantize it first"):
        encode_sparse("fc6", a)


def small_file():
    a = quantized_array(np.random.default_rng(3), (20, 30), 0.2, 4)
    return write_dcz(
        [encode_sparse("w.weight", a), encode_raw("w.bias", np.ones(4, np.float32))],
        arch="alexnet",
        num_classes=10,
        producer="t",
        options={},
    )


@pytest.mark.parametrize("make", [small_file, dense_file])
def test_every_flipped_byte_is_caught(make):
    data = make()
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
    header, body = split(data)
    mutate(header)
    return resign(header, body, fix_sections=False)


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


# Written by alexcompress 0.1.0 (before the encodings moved into their own modules): the reader of today must
# decode files of every earlier release. Tensors: two sparse (index widths auto and 2), a float32 bias, an
# int64 scalar.
FILE_V0_1 = base64.b64decode(
    "iURDWg0KGgoBAAAAUgUAAETqtrl7ImFyY2giOiJhbGV4bmV0IiwiZm9ybWF0IjoiZGN6IiwibnVtX2NsYXNzZXMiOjEwLCJvcHRp"
    "b25zIjp7fSwicHJvZHVjZXIiOiJhbGV4Y29tcHJlc3MgMC4xLjAiLCJ0ZW5zb3JzIjpbeyJjb2RlX2JpdHMiOjEzNCwiY29kZWJv"
    "b2tfc2l6ZSI6NCwiZHR5cGUiOiJmbG9hdDMyIiwiZW5jb2RpbmciOiJzcGFyc2VfaHVmZm1hbiIsImVudHJpZXMiOjU5LCJnYXBf"
    "Yml0cyI6MTEyLCJpbmRleF9iaXRzIjoyLCJuYW1lIjoiY29udi53ZWlnaHQiLCJubnoiOjQwLCJzZWN0aW9ucyI6W3siY3JjMzIi"
    "OjEzODM0MDc3NTMsImtpbmQiOiJjb2RlYm9vayIsImxlbmd0aCI6MTYsIm9mZnNldCI6MH0seyJjcmMzMiI6Mzk3OTEyNTcwMywi"
    "a2luZCI6ImNvZGVfbGVuZ3RocyIsImxlbmd0aCI6NSwib2Zmc2V0IjoxNn0seyJjcmMzMiI6MzU3NTc2MTU2Mywia2luZCI6Imdh"
    "cF9sZW5ndGhzIiwibGVuZ3RoIjo0LCJvZmZzZXQiOjIxfSx7ImNyYzMyIjozNTEyMjMzMTU3LCJraW5kIjoiY29kZXMiLCJsZW5n"
    "dGgiOjE3LCJvZmZzZXQiOjI1fSx7ImNyYzMyIjoyNTY4MDY1NTE0LCJraW5kIjoiZ2FwcyIsImxlbmd0aCI6MTQsIm9mZnNldCI6"
    "NDJ9XSwic2hhcGUiOls2LDMsMywzXX0seyJkdHlwZSI6ImZsb2F0MzIiLCJlbmNvZGluZyI6InJhdyIsIm5hbWUiOiJjb252LmJp"
    "YXMiLCJzZWN0aW9ucyI6W3siY3JjMzIiOjI0NDc4NzIwMjMsImtpbmQiOiJkYXRhIiwibGVuZ3RoIjoyNCwib2Zmc2V0Ijo1Nn1d"
    "LCJzaGFwZSI6WzZdfSx7ImNvZGVfYml0cyI6NjUsImNvZGVib29rX3NpemUiOjIsImR0eXBlIjoiZmxvYXQzMiIsImVuY29kaW5n"
    "Ijoic3BhcnNlX2h1ZmZtYW4iLCJlbnRyaWVzIjo1NiwiZ2FwX2JpdHMiOjY4LCJpbmRleF9iaXRzIjoyLCJuYW1lIjoiZmMud2Vp"
    "Z2h0Iiwibm56Ijo5LCJzZWN0aW9ucyI6W3siY3JjMzIiOjI0MjQzODEzMjAsImtpbmQiOiJjb2RlYm9vayIsImxlbmd0aCI6OCwi"
    "b2Zmc2V0Ijo4MH0seyJjcmMzMiI6MzExOTgwMDE2OCwia2luZCI6ImNvZGVfbGVuZ3RocyIsImxlbmd0aCI6Mywib2Zmc2V0Ijo4"
    "OH0seyJjcmMzMiI6MzU3NTc2MTU2Mywia2luZCI6ImdhcF9sZW5ndGhzIiwibGVuZ3RoIjo0LCJvZmZzZXQiOjkxfSx7ImNyYzMy"
    "IjoyMTkyMDczNjAsImtpbmQiOiJjb2RlcyIsImxlbmd0aCI6OSwib2Zmc2V0Ijo5NX0seyJjcmMzMiI6MTI3NzYyMDU1Mywia2lu"
    "ZCI6ImdhcHMiLCJsZW5ndGgiOjksIm9mZnNldCI6MTA0fV0sInNoYXBlIjpbNCw1NF19LHsiZHR5cGUiOiJpbnQ2NCIsImVuY29k"
    "aW5nIjoicmF3IiwibmFtZSI6Im4iLCJzZWN0aW9ucyI6W3siY3JjMzIiOjE4Nzc0NjQ2ODgsImtpbmQiOiJkYXRhIiwibGVuZ3Ro"
    "Ijo4LCJvZmZzZXQiOjExM31dLCJzaGFwZSI6W119XX0AAAC/AACAvgAAAD4AAEA/AwICAwICAwMB96NTd/macLmSi7jaxq15UESc"
    "sc12Qy9OM2bzaOlTegAAAAAAAIA/AAAAQAAAQEAAAIBAAACgQAAAwL8AAABAAgIBAgMDAQCAAOBJMwABAACAAPwZkEAAIAcAAAAA"
    "AAAA"
)


def test_a_file_written_by_version_0_1_still_decodes():
    header, tensors = read_dcz(FILE_V0_1)
    assert header.producer == "alexcompress 0.1.0" and list(tensors) == ["conv.weight", "conv.bias", "fc.weight", "n"]
    weights = tensors["conv.weight"].tobytes() + tensors["fc.weight"].tobytes()
    assert hashlib.sha256(weights).hexdigest() == "ec30d27b67814b2205538e5c0602eb84ea28008269703751e57ed501d225ac2f"
    assert np.count_nonzero(tensors["conv.weight"]) == 40 and np.count_nonzero(tensors["fc.weight"]) == 9
    assert tensors["conv.bias"].tolist() == [0, 1, 2, 3, 4, 5] and tensors["n"].dtype == np.int64 and int(tensors["n"]) == 7


def context_file(dense: bool) -> bytes:
    rng = np.random.default_rng(6)
    if dense:
        tensor = dense_ctx.ENCODING.encode("w.weight", quantized_array(rng, (20, 30), 0.8, 3))
    else:
        tensor = sparse_ctx.ENCODING.encode("w.weight", quantized_array(rng, (40, 50), 0.2, 3), index_bits=3)
    return write_dcz([tensor], arch="none", num_classes=0, producer="t", options={})


def test_context_files_round_trip_and_summarise():
    for dense in (False, True):
        header, tensors = read_dcz(context_file(dense))
        summary = CODED_ENCODINGS[header.tensors[0].encoding].summary(header.tensors[0])
        assert summary.nnz == np.count_nonzero(tensors["w.weight"]) and summary.bytes_file == header.tensors[0].nbytes


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda t: t.update(value_classes=65), "value_classes"),
        (lambda t: t.update(value_classes=0), "value_classes"),
        (lambda t: t.update(chunk=0), "chunk"),
        (lambda t: t.update(chunk=4097), "chunk"),
        (lambda t: t.update(chunk=1), "length"),  # a lane per symbol: the section no longer holds their states
        (lambda t: t.update(value_words=10**9), "value_words"),
        (lambda t: t.update(value_words=t["value_words"] - 1), "length"),
        (lambda t: t.update(codebook_size=t["codebook_size"] - 1), "codebook_size|length"),
    ],
)
def test_hostile_context_fields_are_refused(dense, mutate, message):
    with pytest.raises(DczError, match=message):
        read_dcz(rebuild(context_file(dense), lambda h: mutate(h["tensors"][0])))


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda t: t.update(gap_classes=9), "gap_classes"),  # 2**3 gap symbols
        (lambda t: t.update(index_bits=13), "index_bits"),
        (lambda t: t.update(gap_words=t["entries"] + 1), "gap_words"),
        (lambda t: t.update(entries=t["entries"] + 1), "ends before its last symbol|corrupt"),
    ],
)
def test_hostile_sparse_context_fields_are_refused(mutate, message):
    with pytest.raises(DczError, match=message):
        read_dcz(rebuild(context_file(False), lambda h: mutate(h["tensors"][0])))
