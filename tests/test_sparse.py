from __future__ import annotations

import numpy as np
from hypothesis import given, settings, strategies as st

import alexcompress.codec.sparse_index as sparse_index
from alexcompress.codec.sparse_index import flat_nonzero, gap_histogram, gather, positions_from_gaps, rank, relative_gaps, stream_histograms


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


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(-4, 4, width=32), min_size=1, max_size=300, unique=True),
    st.lists(st.floats(-5, 5, width=32), max_size=500),
    st.sampled_from([np.float32, np.float64]),
    st.integers(1, 64),
)
def test_rank_is_searchsorted_whatever_the_edges(edges, values, dtype, piece):
    """Counting edges below (few edges) and binary search (many) both answer what searchsorted does, in
    pieces of any size; ties (a value equal to an edge) included."""
    edges = np.sort(np.array(edges, dtype=dtype))
    values = np.array(values + edges[::3].tolist(), dtype=np.float32)
    old = sparse_index.PIECE
    sparse_index.PIECE = piece
    try:
        got = rank(edges, values)
    finally:
        sparse_index.PIECE = old
    assert got.tolist() == np.searchsorted(edges, values.astype(dtype)).tolist()
    assert got.dtype == (np.uint8 if edges.size < 256 else np.uint16)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from([0.0, -0.0, 1.5, -2.0, float("nan")]), max_size=400), st.integers(1, 64))
def test_flat_nonzero_and_gather_are_numpys_in_int32(values, piece):
    flat = np.array(values, dtype=np.float32)
    old = sparse_index.PIECE
    sparse_index.PIECE = piece
    try:
        found = flat_nonzero(flat)
        taken = gather(flat, found)
    finally:
        sparse_index.PIECE = old
    assert found.dtype == np.int32 and found.tolist() == np.flatnonzero(flat).tolist()  # -0.0 is zero, NaN is not
    assert taken.tobytes() == flat[np.flatnonzero(flat)].tobytes()
