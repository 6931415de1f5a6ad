"""Importance-weighted quantization (`--importance grad2`): the estimate, the weighted quantizers, the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alexcompress.compression.importance import estimate, grad2
from alexcompress.compression.pruning import prune_global
from alexcompress.compression.quantization import _information, ecsq_1d, kmeans_1d, quantize
from alexcompress.errors import AlexCompressError
from alexcompress.models.state import random_model

from .test_cli import one_error_line, run
from .test_train import make_image_folder


def _bell(n=40_000, seed=0) -> np.ndarray:
    w = np.random.default_rng(seed).laplace(0, 0.01, n)
    return w[np.abs(w) > np.quantile(np.abs(w), 0.8)]


def test_equal_weights_change_nothing_in_kmeans():
    w = _bell()
    c0, l0, _ = kmeans_1d(w, 16)
    c1, l1, _ = kmeans_1d(w, 16, weights=np.full(w.size, 3.0))
    np.testing.assert_allclose(c0, c1, rtol=1e-9)
    np.testing.assert_array_equal(l0, l1)


def test_weighted_ecsq_is_a_fixed_point_of_its_own_cost():
    w = _bell()
    h = np.random.default_rng(1).gamma(0.5, 2.0, w.size)
    c, labels, iterations = ecsq_1d(w, 16, rate_weight=0.02, weights=h)
    assert iterations > 1 and c.size <= 16 and np.all(np.diff(c) > 0) and labels.max() < c.size
    counts = np.bincount(labels, minlength=c.size)
    assert counts.min() > 0
    # each centroid is its cluster's importance-weighted mean, each value sits at its cheapest code
    np.testing.assert_allclose(c, np.bincount(labels, h * w) / np.bincount(labels, h), rtol=1e-9)
    cost = h[:, None] * (w[:, None] - c[None, :]) ** 2 + 0.02 * w.var() * _information(counts)[None, :]
    assert (cost[np.arange(w.size), labels] <= cost.min(axis=1) + 1e-15).all()


def test_important_weights_keep_their_precision():
    w = _bell()
    important = np.random.default_rng(2).random(w.size) < 0.05
    h = np.where(important, 50.0, 1.0)
    h /= h.mean()
    plain_c, plain_l, _ = ecsq_1d(w, 16, rate_weight=0.02)
    c, labels, _ = ecsq_1d(w, 16, rate_weight=0.02, weights=h)
    error = lambda cc, ll, sel: float(((cc[ll] - w)[sel] ** 2).mean())  # noqa: E731
    assert error(c, labels, important) < 0.6 * error(plain_c, plain_l, important)
    # and the weighted total error, the quantity it minimises, is lower too
    assert (h * (c[labels] - w) ** 2).sum() < (h * (plain_c[plain_l] - w) ** 2).sum()


def test_grad2_estimate():
    state = prune_global(random_model(num_classes=4, seed=0), 0.5).state
    images = torch.utils.data.TensorDataset(torch.randn(12, 3, 64, 64), torch.arange(12) % 4)
    h = grad2(state, "alexnet", images, batch_size=4, batches=2, seed=1)
    assert list(h) == [k for k in state if k.endswith("weight")]
    for key, values in h.items():
        nonzero = state[key].numpy() != 0
        assert values.shape == tuple(state[key].shape) and (values >= 0.5).all()  # shrunk halfway to uniform
        assert values[nonzero].mean() == pytest.approx(1.0, rel=1e-4)
    again = grad2(state, "alexnet", images, batch_size=4, batches=2, seed=1)
    assert all(np.array_equal(h[k], again[k]) for k in h)  # deterministic for a seed
    assert estimate("none", state, "alexnet", None) is None
    with pytest.raises(AlexCompressError, match="needs training images"):
        estimate("grad2", state, "alexnet", None)
    with pytest.raises(AlexCompressError, match="unknown importance"):
        estimate("hessian", state, "alexnet", images)


def test_quantize_checks_the_importance_it_is_given():
    state = {"a.weight": torch.randn(8, 30), "a.bias": torch.zeros(8)}
    good = {"a.weight": np.ones((8, 30), np.float32)}
    assert quantize(state, bits=3, arch="none", importance=good).layers[0].clusters <= 8
    for bad, message in (
        ({}, "no values for a.weight"),
        ({"a.weight": np.ones(7, np.float32)}, "7 values for 240 weights"),
        ({"a.weight": -np.ones((8, 30), np.float32)}, "finite and positive"),
    ):
        with pytest.raises(AlexCompressError, match=message):
            quantize(state, bits=3, arch="none", importance=bad)


def test_a_spec_asking_for_importance_refuses_to_guess():
    from alexcompress.compression.specs import QuantizeSpec, compress

    with pytest.raises(AlexCompressError, match="needs training images"):
        compress(random_model(num_classes=2, seed=0), quantization=QuantizeSpec(importance="grad2"))


def test_importance_through_the_cli(tmp_path):
    data = make_image_folder(tmp_path / "images")
    small = ["--image-size", "64", "--resize", "64", "--batch-size", "4", "--device", "cpu"]
    pruned = tmp_path / "p.pt"
    assert run("prune", "random:0:2", "-o", pruned, "--sparsity", "0.9", "-q").exit_code == 0
    out = tmp_path / "q.pt"
    args = ["--quantizer", "ecsq", "--rate-weight", "0.01", "--bits", "4", "--importance", "grad2", "--importance-batches", "2"]
    result = run("quantize", pruned, "-o", out, *args, "--data", data, "--epochs", "1", *small)
    assert result.exit_code == 0, result.output
    assert "importance grad2: squared gradients over 2 batches of 4" in result.stderr
    state = torch.load(out, weights_only=True)
    assert all(state[k][state[k] != 0].unique().numel() <= 16 for k in ("features.0.weight", "classifier.1.weight"))
    assert "--importance grad2 needs training images: give --data to quantize" in one_error_line(
        run("quantize", pruned, "-o", tmp_path / "x.pt", "--importance", "grad2")
    )
    assert "--importance grad2 needs training images" in one_error_line(
        run("compress", "random:0:2", "-o", tmp_path / "x.dcz", "--importance", "grad2")
    )
    assert "--importance-batches" in one_error_line(
        run("quantize", pruned, "-o", tmp_path / "x.pt", "--importance", "grad2", "--importance-batches", "0", "--data", data)
    )
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "x.dcz").exists()
