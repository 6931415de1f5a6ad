from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from alexcompress.compression.pruning import prune_global
from alexcompress.compression.quantization import centroids_to_float32, kmeans_1d, quantize
from alexcompress.errors import AlexCompressError

from .conftest import tiny_state
from .reference import kmeans_sklearn


def test_kmeans_1d_reaches_the_same_fixed_point_as_sklearn():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(-0.05, 0.02, 20_000), rng.normal(0.04, 0.01, 10_000)])
    ours, labels, iterations = kmeans_1d(values, 16, init="linear")
    theirs, their_labels = kmeans_sklearn(values, 16, init="linear")
    assert iterations > 1
    assert np.allclose(ours, theirs, atol=1e-6)
    assert (labels == their_labels).mean() > 0.999
    # Lloyd's fixed point: every value sits with its nearest centroid
    nearest = np.abs(values[:, None] - ours[None, :]).argmin(axis=1)
    assert np.abs(ours[nearest] - values).max() <= np.abs(ours[labels] - values).max() + 1e-12


@pytest.mark.parametrize("init", ["linear", "density", "random"])
def test_inits_give_k_sorted_centroids(init):
    values = np.random.default_rng(1).normal(size=5000)
    centroids, labels, _ = kmeans_1d(values, 8, init=init, seed=3)
    assert centroids.size <= 8 and np.all(np.diff(centroids) > 0)
    assert labels.min() >= 0 and labels.max() < centroids.size


def test_linear_init_skips_the_pruned_band():
    """After 90% pruning, the paper's linear init leaves most centroids in the empty band around zero."""
    values = np.random.default_rng(0).uniform(-1, 1, 100_000)
    values = values[np.abs(values) > 0.9]
    centroids, labels, _ = kmeans_1d(values, 32, init="linear")
    assert np.unique(labels).size == 32


def test_few_distinct_values_are_kept_exactly():
    values = np.array([0.5, -0.25, 0.5, 0.125], dtype=np.float32)
    centroids, labels, iterations = kmeans_1d(values, 4)
    assert iterations == 0
    assert np.array_equal(centroids[labels].astype(np.float32), values)


def test_zero_centroid_is_moved_off_zero():
    c = centroids_to_float32(np.array([-0.0, 0.0, 1e-50, -1e-50, 0.5]))
    assert (c != 0).all()
    assert np.signbit(c[3]) and not np.signbit(c[2])


@settings(max_examples=40, deadline=None)
@given(
    bits=st.integers(1, 8), sparsity=st.floats(0, 0.95), seed=st.integers(0, 1000), init=st.sampled_from(["linear", "density", "random"])
)
def test_quantize_properties(bits, sparsity, seed, init):
    state = prune_global(tiny_state(seed), sparsity, arch="none").state
    result = quantize(state, bits=bits, init=init, seed=seed, arch="none")
    for key in ("a.weight", "b.weight"):
        before, after = state[key], result.state[key]
        assert torch.equal(before == 0, after == 0)  # zeros stay zero, no weight becomes zero
        assert after[after != 0].unique().numel() <= 2**bits
        assert after.dtype == torch.float32
    for key in ("a.bias", "b.bias"):
        assert result.state[key].equal(state[key])
    again = quantize(state, bits=bits, init=init, seed=seed, arch="none")
    assert all(again.state[k].equal(result.state[k]) for k in state)


def test_conv_and_fc_bits_apply_per_layer(alexnet10):
    result = quantize(prune_global(alexnet10, 0.9).state, conv_bits=4, fc_bits=2)
    for layer in result.layers:
        assert layer.bits == (4 if layer.name.startswith("conv") else 2)
        assert layer.clusters <= 2**layer.bits


def test_shared_codebook_spans_all_layers():
    state = prune_global(tiny_state(), 0.5, arch="none").state
    result = quantize(state, bits=3, shared_codebook=True, arch="none")
    values = torch.cat([result.state[k][result.state[k] != 0] for k in ("a.weight", "b.weight")])
    assert values.unique().numel() <= 8


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"bits": 9}, "bits must be between 1 and 8"),
        ({"conv_bits": 0}, "conv_bits must be between 1 and 8"),
        ({"init": "kmeans++"}, "unknown init"),
    ],
)
def test_bad_options(kwargs, message):
    with pytest.raises(AlexCompressError, match=message):
        quantize(tiny_state(), arch="none", **kwargs)
