"""Canonical, length-limited Huffman codes over small integer alphabets, with bitarray's C coder.

A code is fully described by its code lengths (0 = symbol unused): canonical codes are assigned in order of
(length, symbol), so the container stores one byte per symbol, never a tree. Lengths are limited to
MAX_CODE_LENGTH by the JPEG (ITU T.81 Annex K.3) adjustment, so any frequency distribution, Fibonacci-like
ones included, yields a code the reader accepts. Loops here run over the alphabet, never over the stream.
"""

from __future__ import annotations

import heapq

import numpy as np
from bitarray import bitarray, decodetree
from bitarray.util import int2ba

from alexcompress.errors import DczError

MAX_CODE_LENGTH = 20


def code_lengths(frequencies: np.ndarray, max_length: int = MAX_CODE_LENGTH) -> np.ndarray:
    """Optimal Huffman code lengths for `frequencies`, limited to `max_length` bits (uint8 array).

    Unused symbols get length 0; a lone used symbol gets length 1, so every code word is at least one bit.

    >>> code_lengths(np.array([5, 0, 1, 1])).tolist()
    [1, 0, 2, 2]
    """
    freqs = np.asarray(frequencies, dtype=np.int64)
    used = np.flatnonzero(freqs > 0)
    lengths = np.zeros(freqs.size, dtype=np.uint8)
    if used.size == 0:
        return lengths
    if used.size == 1:
        lengths[used] = 1
        return lengths
    if used.size > (1 << max_length):
        raise ValueError(f"{used.size} symbols cannot be coded in {max_length} bits")
    depth = _huffman_depths(freqs[used])
    if depth.max() > max_length:
        depth = _limit_lengths(freqs[used], depth, max_length)
    lengths[used] = depth
    return lengths


def _huffman_depths(weights: np.ndarray) -> np.ndarray:
    """Leaf depths of a Huffman tree; ties broken by node creation order, so the result is deterministic."""
    n = weights.size
    parent = np.zeros(2 * n - 1, dtype=np.int64)
    heap = [(int(w), i) for i, w in enumerate(weights)]
    heapq.heapify(heap)
    next_node = n
    while len(heap) > 1:
        w1, a = heapq.heappop(heap)
        w2, b = heapq.heappop(heap)
        parent[a] = parent[b] = next_node
        heapq.heappush(heap, (w1 + w2, next_node))
        next_node += 1
    depth = np.zeros(2 * n - 1, dtype=np.int64)
    for node in range(2 * n - 3, -1, -1):  # parents are created after children: walk from the root down
        depth[node] = depth[parent[node]] + 1
    return depth[:n]


def _limit_lengths(weights: np.ndarray, depth: np.ndarray, max_length: int) -> np.ndarray:
    """Rebalance the count of codes per length (JPEG Annex K.3), then give shorter codes to frequent symbols."""
    counts = np.bincount(depth, minlength=depth.max() + 1).astype(np.int64)
    for i in range(counts.size - 1, max_length, -1):
        while counts[i] > 0:
            j = i - 2
            while counts[j] == 0:
                j -= 1
            counts[i] -= 2
            counts[i - 1] += 1
            counts[j + 1] += 2
            counts[j] -= 1
    new_lengths = np.repeat(np.arange(counts.size), counts)  # ascending lengths
    order = np.lexsort((np.arange(weights.size), -weights))  # most frequent first, then by symbol
    result = np.empty_like(depth)
    result[order] = new_lengths
    return result


def check_lengths(lengths: np.ndarray, what: str, max_length: int = MAX_CODE_LENGTH) -> None:
    """Reject code-length tables a decoder must not trust: too long, or over-full (Kraft sum > 1)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.size and int(lengths.max()) > max_length:
        raise DczError(f"{what}: code length {int(lengths.max())} exceeds the limit of {max_length} bits")
    used = lengths[lengths > 0]
    if int((np.int64(1) << (max_length - used)).sum()) > (1 << max_length):
        raise DczError(f"{what}: code lengths violate the Kraft inequality (not a prefix code)")


def canonical_codes(lengths: np.ndarray) -> dict[int, bitarray]:
    """Canonical code words for a length table: in order of (length, symbol), each the next binary number.

    >>> {s: c.to01() for s, c in canonical_codes(np.array([1, 0, 2, 2])).items()}
    {0: '0', 2: '10', 3: '11'}
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    symbols = np.flatnonzero(lengths)
    order = symbols[np.lexsort((symbols, lengths[symbols]))]
    codes: dict[int, bitarray] = {}
    code = 0
    previous = int(lengths[order[0]]) if order.size else 0
    for symbol in order.tolist():
        length = int(lengths[symbol])
        code <<= length - previous
        previous = length
        codes[symbol] = int2ba(code, length=length, endian="big")
        code += 1
    return codes


def encode(symbols: np.ndarray, lengths: np.ndarray) -> tuple[bytes, int]:
    """Huffman-code a symbol stream; returns (bytes zero-padded to a whole byte, exact bit length)."""
    bits = bitarray(endian="big")
    if len(symbols):
        codes, symbols = canonical_codes(lengths), np.asarray(symbols)
        for start in range(0, symbols.size, 1 << 20):  # a list of Python ints a piece at a time, not the stream's
            bits.encode(codes, symbols[start : start + (1 << 20)].tolist())
    return bits.tobytes(), len(bits)


def decode(data: bytes, bit_length: int, lengths: np.ndarray, count: int, what: str) -> np.ndarray:
    """Decode exactly `count` symbols from exactly `bit_length` bits, or raise DczError naming `what`.

    Symbols come back as int16 (every alphabet of the format is at most 4,097 symbols): a quarter of the
    memory of int64 for streams of millions of entries."""
    if len(data) != (bit_length + 7) // 8:
        raise DczError(f"{what}: {len(data)} bytes cannot hold exactly {bit_length} bits")
    bits = bitarray(endian="big")
    bits.frombytes(data)
    if bits[bit_length:].any():
        raise DczError(f"{what}: padding bits after the stream are not zero")
    del bits[bit_length:]
    if count == 0:
        if bit_length:
            raise DczError(f"{what}: {bit_length} bits present for an empty stream")
        return np.empty(0, dtype=np.int16)
    codes = canonical_codes(lengths)
    if not codes:
        raise DczError(f"{what}: no code words defined for a stream of {count} symbols")
    symbols = bits.decode(decodetree(codes))
    try:
        out = np.fromiter(symbols, dtype=np.int16, count=count)
        extra = next(symbols, None)
    except ValueError as exc:  # an unused code word, a cut-off last symbol, or fewer symbols than `count`
        raise DczError(f"{what}: corrupt Huffman stream ({' '.join(str(exc).split())})") from None
    if extra is not None:
        raise DczError(f"{what}: stream holds more than the declared {count} symbols")
    return out
