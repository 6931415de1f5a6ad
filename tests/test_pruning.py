from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from alexcompress.compression.pruning import prune_by_rates, prune_by_std, prune_global, prune_paper
from alexcompress.compression.specs import parse_assignments
from alexcompress.errors import AlexCompressError, ModelError
from alexcompress.models.alexnet import PAPER_KEEP_RATES

from .conftest import tiny_state


@settings(max_examples=60, deadline=None)
@given(
    sparsity=st.floats(0, 0.999),
    levels=st.integers(1, 5),  # few distinct magnitudes: many ties at the threshold
    seed=st.integers(0, 10_000),
)
def test_global_sparsity_is_exact_even_with_ties(sparsity, levels, seed):
    rng = np.random.default_rng(seed)
    state = tiny_state()
    for key in ("a.weight", "b.weight"):
        values = rng.integers(-levels, levels + 1, size=state[key].shape).astype(np.float32)
        state[key] = torch.from_numpy(values)
    total = sum(state[k].numel() for k in ("a.weight", "b.weight"))
    zeros_before = sum(int((state[k] == 0).sum()) for k in ("a.weight", "b.weight"))
    result = prune_global(state, sparsity, arch="none")
    expected_zero = max(int(round(sparsity * total)), zeros_before)
    assert total - result.kept == expected_zero
    # every kept weight is at least as large as every pruned one
    for key in ("a.weight", "b.weight"):
        kept = result.state[key][result.state[key] != 0].abs()
        if kept.numel():
            assert kept.min() >= result.layers[0].threshold


def test_global_prune_keeps_biases_and_input(alexnet10):
    before = alexnet10["classifier.1.weight"].clone()
    result = prune_global(alexnet10, 0.9)
    assert alexnet10["classifier.1.weight"].equal(before)  # not mutated
    for key in alexnet10:
        if key.endswith(".bias"):
            assert result.state[key].equal(alexnet10[key])
    assert result.kept == int(round(0.1 * result.weights))
    assert abs(result.sparsity - 0.9) < 1e-7


def test_paper_preset_matches_table_4_per_layer(alexnet10):
    result = prune_paper(alexnet10)
    for layer in result.layers:
        assert abs(layer.kept - PAPER_KEEP_RATES[layer.name] * layer.weights) <= 1, layer


def test_rates_accept_keys_and_leave_other_layers(alexnet10):
    result = prune_by_rates(alexnet10, {"fc8": 0.5, "features.0": 0.25})
    by_name = {layer.name: layer for layer in result.layers}
    assert by_name["fc8"].kept == 4096 * 10 // 2
    assert abs(by_name["conv1"].kept - 0.25 * by_name["conv1"].weights) <= 1
    assert by_name["fc6"].kept == int(alexnet10["classifier.1.weight"].count_nonzero())  # untouched


def test_std_threshold():
    state = tiny_state()
    result = prune_by_std(state, 1.0, arch="none")
    for layer in result.layers:
        w = state[layer.key].numpy()
        assert layer.threshold == pytest.approx(float(w.std(dtype=np.float64)))
        assert layer.kept == int((np.abs(w) >= layer.threshold).sum())


@pytest.mark.parametrize("bad", [1.0, -0.1, float("nan"), 2])
def test_sparsity_out_of_range(bad):
    with pytest.raises(AlexCompressError, match=r"sparsity must be in \[0, 1\)"):
        prune_global(tiny_state(), bad, arch="none")


def test_unknown_layer_and_bad_rates(alexnet10):
    with pytest.raises(ModelError, match="layer 'fc9' matches no compressible layer; layers: conv1"):
        prune_by_rates(alexnet10, {"fc9": 0.5})
    with pytest.raises(AlexCompressError, match="keep rate of fc6 must be in"):
        prune_by_rates(alexnet10, {"fc6": 1.5})
    with pytest.raises(AlexCompressError, match="bad --rates item 'fc6'"):
        parse_assignments("fc6", "--rates", float)
    assert parse_assignments("conv1=0.84, fc6=0.09", "--rates", float) == {"conv1": 0.84, "fc6": 0.09}
