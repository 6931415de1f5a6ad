from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from alexcompress.codec import huffman
from alexcompress.errors import DczError


def kraft(lengths):
    used = lengths[lengths > 0].astype(np.float64)
    return float((2.0**-used).sum())


@settings(max_examples=200, deadline=None)
@given(freqs=st.lists(st.integers(0, 10**9), min_size=1, max_size=300))
def test_lengths_are_a_complete_prefix_code_near_entropy(freqs):
    f = np.array(freqs, dtype=np.int64)
    lengths = huffman.code_lengths(f)
    used = f > 0
    assert np.array_equal(lengths > 0, used)
    if used.sum() >= 2:
        assert kraft(lengths) == pytest.approx(1.0)
        p = f[used] / f[used].sum()
        average = float((p * lengths[used]).sum())
        entropy = float(-(p * np.log2(p)).sum())
        assert entropy - 1e-9 <= average < entropy + 1 + 1e-9


def test_fibonacci_frequencies_are_length_limited():
    fib = [1, 1]
    while len(fib) < 60:
        fib.append(fib[-1] + fib[-2])
    f = np.array(fib, dtype=np.int64)
    unlimited = huffman._huffman_depths(f)
    assert unlimited.max() > huffman.MAX_CODE_LENGTH  # the adversarial case is real
    lengths = huffman.code_lengths(f)
    assert lengths.max() == huffman.MAX_CODE_LENGTH
    assert kraft(lengths) <= 1.0
    symbols = np.repeat(np.arange(f.size), 1)
    data, bits = huffman.encode(symbols, lengths)
    assert np.array_equal(huffman.decode(data, bits, lengths, symbols.size, "t"), symbols)


@settings(max_examples=100, deadline=None)
@given(symbols=st.lists(st.integers(0, 40), max_size=2000))
def test_encode_decode_round_trip(symbols):
    s = np.array(symbols, dtype=np.int64)
    lengths = huffman.code_lengths(np.bincount(s, minlength=41))
    data, bits = huffman.encode(s, lengths)
    assert len(data) == (bits + 7) // 8
    assert np.array_equal(huffman.decode(data, bits, lengths, s.size, "t"), s)


def test_single_symbol_stream_uses_one_bit_each():
    s = np.full(10, 3)
    lengths = huffman.code_lengths(np.bincount(s))
    data, bits = huffman.encode(s, lengths)
    assert bits == 10
    assert np.array_equal(huffman.decode(data, bits, lengths, 10, "t"), s)


def test_canonical_codes_are_rebuilt_from_lengths_alone():
    lengths = huffman.code_lengths(np.array([10, 1, 1, 5, 0, 3]))
    codes = huffman.canonical_codes(lengths)
    words = sorted(c.to01() for c in codes.values())
    assert all(not b.startswith(a) for a, b in zip(words, words[1:]))


def test_bad_tables_and_streams_raise():
    with pytest.raises(DczError, match="Kraft"):
        huffman.check_lengths(np.array([1, 1, 1]), "t")
    with pytest.raises(DczError, match="exceeds the limit"):
        huffman.check_lengths(np.array([21, 1]), "t")
    lengths = np.array([1, 2, 0])  # incomplete code: '11' is not a code word
    with pytest.raises(DczError, match="corrupt Huffman stream"):
        huffman.decode(bytes([0b11000000]), 2, lengths, 1, "t")
    with pytest.raises(DczError, match="padding bits"):
        huffman.decode(bytes([0b00000001]), 2, np.array([1, 1]), 2, "t")
    with pytest.raises(DczError, match="more than the declared"):
        huffman.decode(bytes([0]), 3, np.array([1, 1]), 2, "t")
    with pytest.raises(DczError, match="corrupt"):
        huffman.decode(bytes([0]), 1, np.array([1, 1]), 2, "t")
