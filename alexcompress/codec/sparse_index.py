"""Relative sparse indexing (paper §2): positions of nonzeros as gaps of a fixed width, with filler zeros.

Each nonzero at flattened position p is stored as the gap to the previous entry (the first counted from -1),
minus one, so a `width`-bit field holds gaps 1..2**width. A longer gap is bridged by filler entries, each an
advance of exactly 2**width with the filler weight symbol. Both directions are vectorised in numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_INDEX_BITS, MAX_INDEX_BITS = 1, 12


#: elements a step of the lean passes below handles: bounds their int64 temporaries to 8 MB
PIECE = 1 << 20


def index_dtype(numel: int) -> type:
    """Positions inside a tensor of `numel` elements as int32 where they fit (half the memory of int64)."""
    return np.int32 if numel < 1 << 31 else np.int64


def flat_nonzero(flat: np.ndarray) -> np.ndarray:
    """`np.flatnonzero(flat)` as `index_dtype`, a piece at a time (never an int64 array of every nonzero).

    >>> flat_nonzero(np.array([0.0, 2.0, 0.0, -1.0]))
    array([1, 3], dtype=int32)
    """
    dtype = index_dtype(flat.size)
    out = np.empty(int(np.count_nonzero(flat)), dtype=dtype)
    done = 0
    for start in range(0, flat.size, PIECE):
        found = np.flatnonzero(flat[start : start + PIECE] != 0)  # a bool mask first: 4x faster than on floats
        found += start
        out[done : done + found.size] = found
        done += found.size
    return out


def distinct_upto(values: np.ndarray, limit: int) -> np.ndarray:
    """The sorted distinct values of `values`, found a piece at a time (no sorted copy of them all), the
    search stopping once there are more than `limit` (then more than `limit` are returned, not all).

    >>> distinct_upto(np.array([3.0, 1.0, 3.0, 2.0]), 8).tolist(), distinct_upto(np.arange(10.0), 2).size > 2
    ([1.0, 2.0, 3.0], True)
    """
    flat = values.reshape(-1)
    seen = flat[:0]
    for start in range(0, flat.size, PIECE):
        seen = np.union1d(seen, np.unique(flat[start : start + PIECE]))
        if seen.size > limit:
            break
    return seen


#: up to this many edges, `rank` counts the edges below each value (a compare a pass: vectorised); beyond,
#: numpy's binary search wins
FEW_EDGES = 48


def rank(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    """`np.searchsorted(edges, values)` (sorted `edges`; finite `values`, compared in `edges`' dtype) as the
    smallest unsigned type holding every answer, a piece at a time: n bytes for n values, not 8 n.

    >>> rank(np.array([0.5, 1.5]), np.array([0.0, 1.0, 2.0, 1.5]))
    array([0, 1, 2, 1], dtype=uint8)
    """
    dtype = np.uint8 if edges.size < 1 << 8 else np.uint16 if edges.size < 1 << 16 else np.int64
    out = np.empty(values.size, dtype=dtype)
    for start in range(0, values.size, PIECE):
        piece = values[start : start + PIECE].astype(edges.dtype, copy=False)
        if edges.size <= FEW_EDGES:
            into = out[start : start + PIECE]
            into[:] = 0
            for edge in edges:  # how many edges lie below each value: searchsorted's answer
                into += piece > edge
        else:
            out[start : start + PIECE] = np.searchsorted(edges, piece)
    return out


def gather(flat: np.ndarray, positions: np.ndarray, dtype: "np.typing.DTypeLike" = None) -> np.ndarray:
    """`flat[positions]` (as `dtype`), a piece at a time: numpy would copy int32 positions to int64 whole.

    >>> gather(np.array([5, 6, 7]), np.array([2, 0], dtype=np.int32)).tolist()
    [7, 5]
    """
    out = np.empty(positions.size, dtype=flat.dtype if dtype is None else dtype)
    for start in range(0, positions.size, PIECE):
        out[start : start + PIECE] = flat[positions[start : start + PIECE]]
    return out


@dataclass(frozen=True)
class SparseStreams:
    """The entries of one tensor: stored gap values (gap - 1) and, per entry, whether it is a filler."""

    gaps: np.ndarray  # int16, each in [0, 2**width)
    filler: np.ndarray  # bool, True where the entry is a filler zero
    real: "np.ndarray | slice"  # the entry index of each real nonzero, in position order (every entry: a slice)


def relative_gaps(positions: np.ndarray, width: int) -> SparseStreams:
    """Encode strictly increasing flattened positions as stored gaps with filler entries. Works in the
    positions' own integer type (int32 for every tensor a `.dcz` holds under 2**31 elements).

    >>> s = relative_gaps(np.array([1, 12]), width=3)   # gaps 2 and 11; 11 > 8 needs one filler
    >>> s.gaps.tolist(), s.filler.tolist()
    ([1, 7, 2], [False, True, False])
    """
    span = 1 << width
    gaps = _gaps(positions)
    gaps -= 1  # stored values
    fillers = gaps >> width
    if not fillers.any():  # the common case at a well-chosen width: one entry per nonzero
        return SparseStreams(gaps.astype(np.int16), np.zeros(gaps.size, dtype=bool), slice(None))
    np.bitwise_and(gaps, span - 1, out=gaps)  # = gap - 1 - fillers * span
    fillers += 1  # entries per nonzero
    total = int(fillers.sum(dtype=np.int64))
    real = np.cumsum(fillers, dtype=index_dtype(total))
    del fillers
    real -= 1
    stored = np.full(total, span - 1, dtype=np.int16)
    stored[real] = gaps
    filler = np.ones(total, dtype=bool)
    filler[real] = False
    return SparseStreams(stored, filler, real)


def _gaps(positions: np.ndarray) -> np.ndarray:
    """Each position minus the previous one (the first minus -1), in the positions' int32 or int64."""
    positions = np.asarray(positions)
    if positions.dtype not in (np.int32, np.int64):
        positions = positions.astype(np.int64)
    gaps = np.empty_like(positions)
    if positions.size:
        gaps[0] = positions[0] + 1
        np.subtract(positions[1:], positions[:-1], out=gaps[1:])
    return gaps


def positions_from_gaps(stored: np.ndarray, filler: np.ndarray, dtype: "np.typing.DTypeLike" = np.int64) -> np.ndarray:
    """Invert `relative_gaps`: the flattened positions of the real (non-filler) entries, as `dtype` (int32
    halves the memory where the tensor has fewer than 2**31 elements, as every `.dcz` tensor has).

    >>> positions_from_gaps(np.array([1, 7, 2]), np.array([False, True, False])).tolist()
    [1, 12]
    """
    position = np.asarray(stored).astype(dtype)  # a fresh array, summed in place: one temporary, not three
    position += 1
    np.cumsum(position, out=position)
    position -= 1
    return position[~np.asarray(filler, dtype=bool)]


def gap_histogram(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct gaps and how often each occurs: all that choosing a width needs."""
    gaps = _gaps(positions)
    if gaps.size and int(gaps.max()) <= 1 << 20:  # a counting pass beats sorting when the range is small
        counts = np.zeros(int(gaps.max()) + 1, dtype=np.int64)
        for start in range(0, gaps.size, PIECE):
            counts += np.bincount(gaps[start : start + PIECE], minlength=counts.size)
        values = np.flatnonzero(counts)
        return values, counts[values]
    return np.unique(gaps, return_counts=True)


def stream_histograms(gap_values: np.ndarray, gap_counts: np.ndarray, width: int) -> tuple[np.ndarray, int]:
    """For a width: the histogram of stored gap symbols (length 2**width) and the number of fillers,
    computed from the gap histogram alone, without materialising the entries."""
    span = 1 << width
    fillers = (gap_values - 1) // span
    n_fillers = int((fillers * gap_counts).sum())
    histogram = np.bincount((gap_values - 1) % span, weights=gap_counts, minlength=span).astype(np.int64)
    histogram[span - 1] += n_fillers
    return histogram, n_fillers
