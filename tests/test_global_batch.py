"""The layers that make a data-parallel step one process's step (alexcompress/train/global_batch.py); their
behaviour across processes is tested under torchrun in test_distributed.py."""

from __future__ import annotations

import torch
from torch import nn

from alexcompress.train.global_batch import DropoutClock, KeyedDropout, for_training, random_layers_left


def test_dropout_masks_are_a_function_of_the_step_alone():
    x = torch.ones(64, 32)
    clock = DropoutClock(seed=1)
    net = for_training(nn.Sequential(nn.Dropout(0.25)), clock, distributed=False)
    masks = {}
    for step in ((0, 0), (0, 1), (1, 0), (0, 0)):
        clock.step(*step)
        masks.setdefault(step, []).append(net(x))
    assert torch.equal(*masks[(0, 0)])  # the same step draws the same mask, whatever ran in between
    assert not torch.equal(masks[(0, 0)][0], masks[(0, 1)][0]) and not torch.equal(masks[(0, 0)][0], masks[(1, 0)][0])
    kept = masks[(0, 1)][0] != 0
    assert torch.equal(masks[(0, 1)][0][kept].unique(), torch.tensor([1 / 0.75]))  # inverted dropout's scaling
    assert abs(float(kept.float().mean()) - 0.75) < 0.03
    net.eval()
    assert torch.equal(net(x), x)


def test_a_model_trained_again_follows_the_new_run():
    """A second run over the same model rebinds its dropout to the new run's clock (bound to the old one, the
    masks would follow a clock that no longer steps, and a resumed run would draw other masks)."""
    x = torch.ones(8, 16)
    net = nn.Sequential(nn.Dropout(0.5))
    for_training(net, DropoutClock(0), distributed=False)
    second = DropoutClock(0)
    for_training(net, second, distributed=False)
    second.step(0, 1)
    fresh_clock = DropoutClock(0)
    fresh = for_training(nn.Sequential(nn.Dropout(0.5)), fresh_clock, distributed=False)
    fresh_clock.step(0, 1)
    assert isinstance(net[0], KeyedDropout) and torch.equal(net(x), fresh(x))


def test_batch_norm_is_swapped_only_when_distributed_and_keeps_its_tensors():
    bn = nn.BatchNorm2d(3)
    net = for_training(nn.Sequential(bn), DropoutClock(), distributed=False)
    assert net[0] is bn
    net = for_training(nn.Sequential(bn), DropoutClock(), distributed=True)
    assert type(net[0]).__name__ == "GlobalBatchNorm" and net[0].weight is bn.weight and net[0].running_var is bn.running_var
    x = torch.randn(4, 3, 5, 5)
    torch.testing.assert_close(net(x), bn(x))  # in a world of one: plain batch norm
    assert list(net.state_dict()) == list(nn.Sequential(nn.BatchNorm2d(3)).state_dict())


def test_the_random_layers_left_are_named():
    net = nn.Sequential(nn.Dropout(0.5), nn.Dropout2d(0.1), nn.AlphaDropout(0.0))
    assert random_layers_left(net) == ["Dropout2d"]
