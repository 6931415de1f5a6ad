"""Architectures beyond AlexNet: every conv/linear weight is compressed, everything else stored raw, and
the round trip is bit-exact into the right torchvision model."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
import torchvision

import alexcompress
from alexcompress.codec.container import parse_header
from alexcompress.codec.encodings import CODED
from alexcompress.models.archs import get_arch
from alexcompress.models.state import random_model


def test_resnet18_round_trip_with_batchnorm_buffers(tmp_path):
    state = random_model("resnet18", num_classes=10, seed=0)
    for key, value in state.items():  # realistic running statistics and counters
        if key.endswith("running_var"):
            value.uniform_(0.5, 2.0)
        if key.endswith("num_batches_tracked"):
            value.fill_(1234)
    q = alexcompress.quantize(alexcompress.prune(state, alexcompress.PruneSpec(sparsity=0.8), arch="resnet18").state, arch="resnet18").state
    data = alexcompress.encode(q, arch="resnet18")
    header = parse_header(data)
    encodings = {t.name: t.encoding for t in header.tensors}
    assert header.arch == "resnet18"
    assert encodings["layer1.0.conv1.weight"] in CODED and encodings["fc.weight"] in CODED
    assert encodings["bn1.running_mean"] == "raw" and encodings["layer4.1.bn2.num_batches_tracked"] == "raw"
    decoded, arch = alexcompress.decode(data)
    assert arch == "resnet18"
    for key in q:
        assert decoded[key].dtype == q[key].dtype and torch.equal(decoded[key], q[key]), key
    path = tmp_path / "r.dcz"
    path.write_bytes(data)
    model = alexcompress.load(path)
    assert isinstance(model, torchvision.models.ResNet) and model.fc.out_features == 10
    assert int(model.layer4[1].bn2.num_batches_tracked) == 1234


def test_vgg16_container_round_trip_without_initialising_vgg(tmp_path):
    """VGG-16's 134M weights, sparse and quantized, built straight from the shape table (no slow init)."""
    rng = np.random.default_rng(0)
    state = OrderedDict()
    for key, shape in get_arch("vgg16").shapes(10).items():
        n = int(np.prod(shape))
        values = np.zeros(n, np.float32)
        if key.endswith(".weight"):
            chosen = rng.choice(n, size=max(1, n // 200), replace=False)
            values[chosen] = rng.choice(np.array([-0.02, -0.01, 0.01, 0.03], np.float32), size=chosen.size)
        else:
            values[:] = rng.normal(size=n)
        state[key] = values.reshape(shape)
    data = alexcompress.encode(state, arch="vgg16")
    original = sum(v.nbytes for v in state.values())
    assert original / len(data) > 50
    path = tmp_path / "v.dcz"
    path.write_bytes(data)
    model = alexcompress.load(path)
    assert isinstance(model, torchvision.models.VGG)
    loaded = model.state_dict()
    for key, value in state.items():
        assert np.array_equal(loaded[key].numpy(), value), key


def test_cli_arch_option_and_paper_preset_guard(tmp_path):
    from typer.testing import CliRunner

    from alexcompress.cli.app import app

    runner = CliRunner()
    out = tmp_path / "r.dcz"
    result = runner.invoke(app, ["compress", "random:0:10", "--arch", "resnet18", "-o", str(out), "--verify"])
    assert result.exit_code == 0, result.output
    assert "verified" in result.stderr and "layer1.0.conv1" in result.stderr
    assert parse_header(out.read_bytes()).arch == "resnet18"
    result = runner.invoke(app, ["prune", "random:0:10", "--arch", "resnet18", "--preset", "paper", "-o", str(tmp_path / "x.pt")])
    assert result.exit_code == 1 and "architecture resnet18 has no preset 'paper'" in result.stderr
    result = runner.invoke(app, ["compress", "random", "--arch", "lenet", "-o", str(tmp_path / "y.dcz")])
    assert result.exit_code == 1 and "unknown architecture 'lenet'" in result.stderr
