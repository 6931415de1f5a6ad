from __future__ import annotations

import numpy as np
from hypothesis import given, settings, strategies as st

from alexcompress.codec.sparse_index import gap_histogram, positions_from_gaps, relative_gaps, stream_histograms


@st.composite
def positions(draw):
    n = draw(st.integers(1, 5000))
    chosen = draw(st.lists(st.integers(0, n - 1), max_size=200, unique=True))
    return np.array(sorted(chosen), dtype=np.int64)


@settings(max_examples=200, deadline=None)
@given(p=positions(), width=st.integers(1, 12))
def test_gaps_round_trip(p, width):
    streams = relative_gaps(p, width)
    assert streams.gaps.min(initial=0) >= 0 and streams.gaps.max(initial=0) < 2**width
    assert (~streams.filler).sum() == p.size
    assert np.array_equal(positions_from_gaps(streams.gaps, streams.filler), p)
    if streams.filler.size:
        assert not streams.filler[-1]


@settings(max_examples=100, deadline=None)
@given(p=positions(), width=st.integers(1, 12))
def test_histograms_match_materialised_streams(p, width):
    streams = relative_gaps(p, width)
    histogram, fillers = stream_histograms(*gap_histogram(p), width)
    assert fillers == int(streams.filler.sum())
    assert np.array_equal(histogram, np.bincount(streams.gaps, minlength=2**width))


def test_long_gap_needs_several_fillers():
    streams = relative_gaps(np.array([0, 100]), width=2)  # gap 100 with max 4: 24 fillers
    assert int(streams.filler.sum()) == (100 - 1) // 4
    assert positions_from_gaps(streams.gaps, streams.filler).tolist() == [0, 100]
