from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from alexcompress.codec import rans
from alexcompress.errors import DczError


def coded(symbols: np.ndarray, alphabet: int, boundaries: list[int], chunk: int) -> tuple[bytes, rans.Model]:
    model, _ = rans.fit(rans.transitions(symbols, alphabet, chunk), boundaries)
    return rans.encode(symbols, model, chunk), model


@settings(max_examples=200, deadline=None)
@given(
    alphabet=st.integers(1, 40),
    n=st.integers(0, 3000),
    chunk=st.sampled_from([1, 2, 7, 64, 500, 4096]),
    skew=st.floats(0.0, 3.0),
    data=st.data(),
)
def test_any_stream_round_trips(alphabet, n, chunk, skew, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    p = np.exp(-skew * np.arange(alphabet))
    symbols = rng.choice(alphabet, n, p=p / p.sum())
    boundaries = sorted(data.draw(st.sets(st.integers(1, max(1, alphabet - 1)), max_size=min(alphabet - 1, 8)))) if alphabet > 1 else []
    stream, model = coded(symbols, alphabet, boundaries, chunk)
    back = rans.decode(stream, n, model, chunk, "s")
    assert back.dtype == np.int16 and back.tolist() == symbols.tolist()
    assert len(stream) == 4 * rans.lanes(n, chunk) + 2 * ((len(stream) - 4 * rans.lanes(n, chunk)) // 2)
    assert (len(stream) - 4 * rans.lanes(n, chunk)) // 2 <= n  # one word per symbol at most


@settings(max_examples=100, deadline=None)
@given(counts=st.lists(st.integers(0, 10**9), min_size=1, max_size=300))
def test_quantized_frequencies_sum_exactly_and_keep_every_symbol(counts):
    counts = np.array(counts)
    freqs = rans.quantize_counts(counts)
    assert int(freqs.sum()) == rans.TOTAL
    if counts.any():
        assert ((freqs > 0) == (counts > 0)).all()


def test_a_context_model_codes_below_the_memoryless_entropy():
    """Signs that persist (a trained layer's runs of same-signed weights) cost less than their entropy."""
    rng = np.random.default_rng(0)
    flips = rng.random(200_000) < 0.1
    symbols = np.cumsum(flips) % 2 * 2 + rng.integers(0, 2, flips.size)  # symbols 0,1 negative, 2,3 positive
    memoryless = 200_000 * 2 / 8  # four equally frequent symbols: 2 bits each
    by_sign, _ = coded(symbols, 4, [2], rans.MAX_CHUNK)
    alone, _ = coded(symbols, 4, [], rans.MAX_CHUNK)
    assert len(alone) == pytest.approx(memoryless, rel=0.01)
    entropy = 200_000 * (1 + (-(0.1 * np.log2(0.1) + 0.9 * np.log2(0.9)))) / 8  # one magnitude bit + the flip's
    assert len(by_sign) < 1.01 * entropy < 0.8 * memoryless  # 1%: lane states, 14-bit frequencies


def stream_case():
    rng = np.random.default_rng(3)
    symbols = rng.integers(0, 5, 10_000)
    stream, model = coded(symbols, 5, [2], 1000)
    return symbols, stream, model


def test_damaged_streams_are_refused():
    symbols, stream, model = stream_case()
    lanes = 4 * rans.lanes(symbols.size, 1000)
    cases = {
        "truncated": stream[:-2],
        "a word too many": stream + b"\x00\x00",
        "odd length": stream + b"\x00",
        "a state below 2^16": b"\x00\x00\x00\x00" + stream[4:],
        "no states": stream[: lanes - 4],
    }
    for what, data in cases.items():
        with pytest.raises(DczError):
            rans.decode(data, symbols.size, model, 1000, what)
    with pytest.raises(DczError, match="empty stream"):
        rans.decode(b"\x00", 0, model, 1000, "s")


def test_flipped_words_never_decode_silently_to_the_same_length_wrong_stream_unnoticed():
    """A changed word either raises or ends in another state: the final-state check catches it (CRCs guard
    the file; this guards the decoder against a valid-CRC forgery reaching it)."""
    symbols, stream, model = stream_case()
    caught = 0
    for offset in range(40, len(stream) - 1, 97):
        damaged = bytearray(stream)
        damaged[offset] ^= 0x5A
        try:
            back = rans.decode(bytes(damaged), symbols.size, model, 1000, "s")
        except DczError:
            caught += 1
        else:
            assert back.size == symbols.size
    assert caught >= 0.95 * len(range(40, len(stream) - 1, 97))


def model_bytes(boundaries: list[int], freqs: list[int]) -> bytes:
    return np.array(boundaries, "<u2").tobytes() + rans.varints(np.array(freqs))


@pytest.mark.parametrize(
    "data, classes, alphabet, message",
    [
        (model_bytes([], [rans.TOTAL - 1, 0]), 1, 2, "sum to"),
        (model_bytes([0], [rans.TOTAL, 0, rans.TOTAL, 0]), 2, 2, "boundaries"),  # boundary 0: outside [1, 2)
        (model_bytes([2], [rans.TOTAL, 0, rans.TOTAL, 0]), 2, 2, "boundaries"),  # boundary 2: past the alphabet
        (model_bytes([2, 1], [rans.TOTAL, 0, 0] * 3), 3, 3, "boundaries"),  # not increasing
        (model_bytes([], [rans.TOTAL, 0, 0]), 1, 2, "exactly 2 frequencies"),
        (model_bytes([], [rans.TOTAL, 0]) + b"\x00", 1, 2, "exactly 2 frequencies"),  # a byte too many
        (b"\xff\xff\xff\x7f\x00", 1, 2, "varint"),  # a 4-byte varint
        (b"\x80\x00\x80\x80\x01", 1, 2, "varint"),  # 0 written in two bytes
        (b"\x80\x80", 1, 2, "exactly 2 frequencies"),  # cut off
    ],
)
def test_hostile_models_are_refused(data, classes, alphabet, message):
    with pytest.raises(DczError, match=message):
        rans.Model.from_bytes(data, classes, alphabet, "m")


def test_a_valid_model_reads_back():
    model = rans.Model.from_bytes(model_bytes([1], [rans.TOTAL, 0, 1, rans.TOTAL - 1]), 2, 2, "m")
    assert model.class_of().tolist() == [0, 1] and model.freqs.tolist() == [[rans.TOTAL, 0], [1, rans.TOTAL - 1]]
    assert rans.Model.from_bytes(model.to_bytes(), 2, 2, "m").freqs.tolist() == model.freqs.tolist()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 2**21 - 1), max_size=50))
def test_varints_round_trip(values):
    data = np.frombuffer(rans.varints(np.array(values, dtype=np.int64)), dtype=np.uint8)
    assert rans.read_varints(data, len(values), "v").tolist() == values


def test_too_many_classes_are_refused_before_any_table_is_built():
    with pytest.raises(DczError, match="classes"):
        rans.Model.from_bytes(b"\x00" * rans.Model.size_bounds(65, 65)[0], 65, 65, "m")


@pytest.mark.parametrize("n, chunk", [(10_000, 64), (300_001, 4096), (70_000, 1), (0, 16)])
def test_a_stream_coded_in_pieces_of_whole_lanes_is_the_stream_coded_at_once(monkeypatch, n, chunk):
    rng = np.random.default_rng(n)
    symbols = rng.integers(0, 5, n).astype(np.int64)
    model, _ = rans.fit(rans.transitions(symbols, 5, chunk) + 1, [0, 2])
    whole = rans.encode_streams([(symbols, model, chunk), (symbols[: n // 3], model, chunk)])
    monkeypatch.setattr(rans, "GROUP_SYMBOLS", 5000)
    pieces = rans.encode_streams([(symbols, model, chunk), (symbols[: n // 3], model, chunk)])
    assert pieces == whole
    assert np.array_equal(rans.decode(pieces[0], n, model, chunk, "x"), symbols)
