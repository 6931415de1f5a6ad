"""The real torchvision AlexNet (1000 classes) through every stage, and the public Python API."""

from __future__ import annotations

import types

import torch
import torchvision

import alexcompress
from alexcompress.codec.container import parse_header
from alexcompress.models.alexnet import PAPER_KEEP_RATES
from alexcompress.models.state import random_model


def test_public_api_is_declared():
    public = {
        name for name in dir(alexcompress) if not name.startswith("_") and not isinstance(getattr(alexcompress, name), types.ModuleType)
    } - {"annotations"}
    assert public | {"__version__"} == set(alexcompress.__all__)
    assert callable(alexcompress.quantize) and callable(alexcompress.load)


def test_full_alexnet_1000_classes_end_to_end(tmp_path):
    state = random_model("alexnet", num_classes=1000, seed=0)
    pruned = alexcompress.prune(state, inplace=True)  # AlexNet: the paper preset
    for layer in pruned.layers:
        assert abs(layer.kept - PAPER_KEEP_RATES[layer.name] * layer.weights) <= 1
    quantized = alexcompress.quantize(pruned.state, conv_bits=8, fc_bits=5, inplace=True)
    for layer in quantized.layers:
        expected_bits = 8 if layer.name.startswith("conv") else 5
        assert layer.bits == expected_bits and layer.clusters == 2**expected_bits
        w = quantized.state[layer.key]
        assert w[w != 0].unique().numel() <= 2**expected_bits
        assert int(w.count_nonzero()) == layer.nonzeros
    data = alexcompress.encode(quantized.state)
    header = parse_header(data)
    assert header.num_classes == 1000 and header.file_size == len(data)
    original = sum(v.numel() * 4 for v in state.values())
    assert original / len(data) > 25  # a real file, at the paper's order of magnitude (35x)
    decoded, arch = alexcompress.decode(data)
    assert arch == "alexnet"
    assert all(decoded[k].equal(quantized.state[k]) for k in quantized.state)
    path = tmp_path / "alexnet.dcz"
    path.write_bytes(data)
    model = alexcompress.load(path)
    assert isinstance(model, torchvision.models.AlexNet) and not model.training
    assert model.classifier[6].out_features == 1000
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 224, 224)).shape == (1, 1000)
