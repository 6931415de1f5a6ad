"""Top-1 and the divergence from a reference model's predictions (what sensitivity ranks layers by)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from alexcompress.train.evaluate import evaluate, log_probabilities


def _data(n=40, seed=0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 6, generator=generator)
    return DataLoader(TensorDataset(images, (images[:, 0] > 0).long()), batch_size=16)


def _net(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))


def test_divergence_is_zero_for_the_reference_and_grows_with_the_change():
    net, batches = _net(), _data()
    reference = log_probabilities(net, batches)
    assert [t.shape for t in reference] == [(16, 3), (16, 3), (8, 3)]
    assert evaluate(net, batches, reference=reference).kl == pytest.approx(0.0, abs=1e-7)
    assert evaluate(net, batches).kl == 0.0  # no reference, no divergence
    divergences = []
    for scale in (0.9, 0.5, 0.0):  # the last layer shrunk, then zeroed: predictions move further each time
        changed = _net()
        with torch.no_grad():
            changed[2].weight.mul_(scale)
        divergences.append(evaluate(changed, batches, reference=reference).kl)
    assert 0 < divergences[0] < divergences[1] < divergences[2]
    # by hand: the mean over the samples of sum_c p_ref(c) (log p_ref(c) - log p(c))
    with torch.no_grad():
        ref = torch.cat(reference)
        other = torch.log_softmax(changed(torch.cat([x for x, _ in batches])), 1)
    assert divergences[2] == pytest.approx(float((ref.exp() * (ref - other)).sum(1).mean()), rel=1e-5)


def test_limit_applies_to_the_reference_and_the_comparison_alike():
    net, batches = _net(), _data()
    reference = log_probabilities(net, batches, limit=20)
    assert sum(len(t) for t in reference) == 20
    result = evaluate(_net(seed=1), batches, reference=reference, limit=20)
    assert result.samples == 20 and math.isfinite(result.kl) and result.kl > 0
