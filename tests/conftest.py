"""Shared fixtures: seeded AlexNet state dicts and files, built once per session (they are 228 MB each)."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from alexcompress.compression.pruning import prune_global
from alexcompress.compression.quantization import quantize
from alexcompress.models.state import random_model, state_dict_bytes


@pytest.fixture(scope="session")
def alexnet10() -> "OrderedDict[str, torch.Tensor]":
    """The seed script's model shape: AlexNet with 10 classes, seeded random init. Do not mutate."""
    return random_model("alexnet", num_classes=10, seed=0)


@pytest.fixture(scope="session")
def quantized10(alexnet10) -> "OrderedDict[str, torch.Tensor]":
    return quantize(prune_global(alexnet10, 0.9).state, conv_bits=8, fc_bits=5).state


@pytest.fixture(scope="session")
def files(tmp_path_factory, alexnet10, quantized10) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    model = root / "alexnet.pt"
    model.write_bytes(state_dict_bytes(alexnet10))
    quantized = root / "alexnet.quantized.pt"
    quantized.write_bytes(state_dict_bytes(quantized10))
    return {"model": model, "quantized": quantized}


def tiny_state(seed: int = 0, shapes: dict[str, tuple[int, ...]] | None = None) -> "OrderedDict[str, torch.Tensor]":
    """A small state dict with conv/fc-like weights and biases, for stage-level tests."""
    g = torch.Generator().manual_seed(seed)
    shapes = shapes or {"a.weight": (8, 3, 3, 3), "a.bias": (8,), "b.weight": (10, 72), "b.bias": (10,)}
    return OrderedDict((k, torch.randn(*s, generator=g)) for k, s in shapes.items())
