"""One rank of a small data-parallel training run, launched by tests/test_distributed.py under torchrun
(or alone, as the one-process reference): masked retraining or centroid fine-tuning of a tiny conv net on
fixed random data, each rank writing its final weights to OUT/rank{R}.pt.

    python -m torch.distributed.run --nproc-per-node 2 tests/ddp_worker.py OUT masked|centroids
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alexcompress.compression.pruning import prune_global  # noqa: E402
from alexcompress.compression.quantization import quantize  # noqa: E402
from alexcompress.train.config import TrainConfig
from alexcompress.train.distributed import current, session  # noqa: E402
from alexcompress.train.hooks import CentroidFinetuning, MaskedRetraining  # noqa: E402
from alexcompress.train.trainer import _train

CODED = {"conv.weight", "fc.weight"}


class Net(nn.Module):
    """A tiny conv net; with `norm`, batch norm after the conv and dropout before the classifier (the layers
    whose training behaviour depends on how a batch is split over processes)."""

    def __init__(self, norm: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8) if norm else nn.Identity()
        self.drop = nn.Dropout(0.5) if norm else nn.Identity()
        self.fc = nn.Linear(8 * 6 * 6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(torch.relu(self.bn(self.conv(x))).flatten(1)))


KINDS = ("masked", "centroids", "norm")


def start_state(kind: str) -> "OrderedDict[str, torch.Tensor]":
    torch.manual_seed(0)
    net = Net(norm=kind == "norm")
    state = prune_global(OrderedDict((k, v) for k, v in net.state_dict().items() if k in CODED), 0.6, arch="none").state
    state = OrderedDict((k, state.get(k, v)) for k, v in net.state_dict().items())
    if kind == "centroids":
        state = quantize(state, arch="none", bits=3).state
    return state


def data() -> TensorDataset:
    g = torch.Generator().manual_seed(1)
    return TensorDataset(torch.randn(64, 3, 8, 8, generator=g), torch.randint(0, 4, (64,), generator=g))


def main() -> None:
    out, kind = Path(sys.argv[1]), sys.argv[2]
    with session("cpu"):
        net = Net(norm=kind == "norm")
        net.load_state_dict(start_state(kind))
        hooks = CentroidFinetuning(net, CODED) if kind == "centroids" else MaskedRetraining(net, CODED)
        config = TrainConfig(epochs=3, lr=0.05, batch_size=16, device="cpu", seed=3)
        _train(net, hooks, data(), config, stage="retrain" if kind == "masked" else "centroids")
        torch.save(net.state_dict(), out / f"rank{current().rank}.pt")


if __name__ == "__main__":
    main()
