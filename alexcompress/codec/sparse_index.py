"""Relative sparse indexing (paper §2): positions of nonzeros as gaps of a fixed width, with filler zeros.

Each nonzero at flattened position p is stored as the gap to the previous entry (the first counted from -1),
minus one, so a `width`-bit field holds gaps 1..2**width. A longer gap is bridged by filler entries, each an
advance of exactly 2**width with the filler weight symbol. Both directions are vectorised in numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_INDEX_BITS, MAX_INDEX_BITS = 1, 12


@dataclass(frozen=True)
class SparseStreams:
    """The entries of one tensor: stored gap values (gap - 1) and, per entry, whether it is a filler."""

    gaps: np.ndarray  # int64, each in [0, 2**width)
    filler: np.ndarray  # bool, True where the entry is a filler zero
    real: np.ndarray  # int64 entry index of each real nonzero, in position order


def relative_gaps(positions: np.ndarray, width: int) -> SparseStreams:
    """Encode strictly increasing flattened positions as stored gaps with filler entries.

    >>> s = relative_gaps(np.array([1, 12]), width=3)   # gaps 2 and 11; 11 > 8 needs one filler
    >>> s.gaps.tolist(), s.filler.tolist()
    ([1, 7, 2], [False, True, False])
    """
    span = 1 << width
    gaps = np.diff(np.asarray(positions, dtype=np.int64), prepend=-1)
    fillers = (gaps - 1) >> width
    if not fillers.any():  # the common case at a well-chosen width: one entry per nonzero
        return SparseStreams(gaps - 1, np.zeros(gaps.size, dtype=bool), np.arange(gaps.size, dtype=np.int64))
    per_entry = fillers + 1
    real = np.cumsum(per_entry) - 1
    total = int(real[-1]) + 1 if real.size else 0
    stored = np.full(total, span - 1, dtype=np.int64)
    stored[real] = gaps - fillers * span - 1
    filler = np.ones(total, dtype=bool)
    filler[real] = False
    return SparseStreams(stored, filler, real)


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
    gaps = np.diff(np.asarray(positions, dtype=np.int64), prepend=-1)
    if gaps.size and int(gaps.max()) <= 1 << 20:  # a counting pass beats sorting when the range is small
        counts = np.bincount(gaps)
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
