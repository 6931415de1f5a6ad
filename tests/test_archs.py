"""The architecture registry: any torchvision classification model by name, detection from keys and shapes,
a user's own module (`none`), layer addressing by key, glob and alias."""

from __future__ import annotations

import json
from collections import OrderedDict
from importlib import resources

import numpy as np
import pytest
import torch
import torchvision

import alexcompress
from alexcompress.errors import ModelError
from alexcompress.models.alexnet import ALEXNET_LAYERS, PAPER_KEEP_RATES
from alexcompress.models.archs import detect, get_arch, resolve_layers
from alexcompress.models.state import random_model
from alexcompress.models.torchvision_archs import key_signature


@pytest.mark.parametrize("arch", ["alexnet", "vgg16", "resnet18"])
@pytest.mark.parametrize("num_classes", [1000, 7])
def test_hand_written_shape_tables_match_torchvision(arch, num_classes):
    with torch.device("meta"):
        model = getattr(torchvision.models, arch)(num_classes=num_classes)
    actual = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert list(get_arch(arch).shapes(num_classes).items()) == list(actual.items())


def test_shipped_key_index_matches_the_installed_torchvision():
    """Detection's first filter is a shipped table; regenerate it with `python -m alexcompress.models.archs`."""
    index = json.loads(resources.files("alexcompress.models").joinpath("torchvision_keys.json").read_text())["models"]
    names = torchvision.models.list_models(module=torchvision.models)
    assert set(index) == set(names)
    for name in ("mobilenet_v3_small", "swin_t", "regnet_x_400mf", "googlenet"):  # a sample: building all takes 20 s
        with torch.device("meta") if not name.startswith("regnet") else torch.device("cpu"):
            keys = list(torchvision.models.get_model(name, weights=None).state_dict())
        assert index[name] == key_signature(keys), name


def test_alexnet_layers_aliases_and_globs(alexnet10):
    arch = get_arch("alexnet")
    weights = [k for k in alexnet10 if k.endswith(".weight")]
    assert list(ALEXNET_LAYERS.values()) == weights and set(PAPER_KEEP_RATES) == set(ALEXNET_LAYERS)
    assert [arch.display_name(k) for k in weights] == list(ALEXNET_LAYERS)
    assert resolve_layers(arch, "fc6", weights) == ["classifier.1.weight"]
    assert resolve_layers(arch, "features.0", weights) == ["features.0.weight"]
    assert resolve_layers(arch, "features.*", weights) == weights[:5]
    assert resolve_layers(arch, "conv[45]", weights) == ["features.8.weight", "features.10.weight"]
    with pytest.raises(ModelError, match="layer 'classifier.9' matches no compressible layer"):
        resolve_layers(arch, "classifier.9", weights)


def test_glob_rates_later_patterns_win(alexnet10):
    result = alexcompress.prune(alexnet10, alexcompress.PruneSpec(rates={"*": 0.5, "classifier.*": 0.1, "fc8": 1.0}))
    kept = {layer.name: layer.kept_fraction for layer in result.layers}
    assert kept["conv1"] == pytest.approx(0.5, abs=1e-3) and kept["fc6"] == pytest.approx(0.1, abs=1e-4)
    assert kept["fc8"] == 1.0


def test_unknown_architecture_names_the_choices():
    with pytest.raises(ModelError, match="unknown architecture 'lenet'; use a torchvision classification model name"):
        get_arch("lenet")
    assert get_arch("mobilenet_v2").name == "mobilenet_v2"


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "efficientnet_b0", "squeezenet1_1", "densenet121", "swin_t", "vit_b_32"])
def test_torchvision_models_detected_and_round_trip_bit_exact(name, tmp_path):
    """Representative families: depthwise convs, SE blocks, fire modules, dense blocks, windowed attention
    with integer buffers (Swin), and a ViT (packed attention projections, class token, position embedding)."""
    state = random_model(name, num_classes=10, seed=0)
    found = detect(state)
    assert found.name == name, found.reason
    result = alexcompress.compress(state, pruning=alexcompress.PruneSpec(sparsity=0.9))
    assert result.arch == name and result.ratio > 10
    coded = {layer.key for layer in result.quantization.layers}
    if name == "vit_b_32":
        assert "encoder.layers.encoder_layer_0.self_attention.in_proj_weight" in coded
        assert "class_token" not in coded and "encoder.pos_embedding" not in coded
    decoded, arch = alexcompress.decode(result.data)
    assert arch == name
    for key, value in result.quantization.state.items():
        expected = torch.as_tensor(value)
        assert decoded[key].dtype == expected.dtype and torch.equal(decoded[key], expected), key
    path = tmp_path / "m.dcz"
    path.write_bytes(result.data)
    model = alexcompress.load(path)  # strict load into the right torchvision module
    assert type(model).__name__ == type(torchvision.models.get_model(name, weights=None, num_classes=10)).__name__
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 224, 224)).shape == (1, 10)


class TinyNet(torch.nn.Module):
    """A model torchvision does not know: conv, linear, an embedding, a norm with buffers."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(50, 16)
        self.conv = torch.nn.Conv1d(16, 32, 3)
        self.norm = torch.nn.BatchNorm1d(32)
        self.head = torch.nn.Linear(32, 4)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.conv(self.embed(tokens).transpose(1, 2)))
        return self.head(x.mean(dim=2))


def test_a_users_own_module_round_trips_and_loads_into_the_module(tmp_path):
    torch.manual_seed(0)
    net = TinyNet().eval()
    net.norm.running_mean.uniform_(-1, 1)
    state = OrderedDict((k, v.detach().clone()) for k, v in net.state_dict().items())
    found = detect(state)
    assert found.name == "none" and "no torchvision model" in found.reason
    result = alexcompress.compress(state, pruning=alexcompress.PruneSpec(sparsity=0.5), quantization=alexcompress.QuantizeSpec(bits=4))
    coded = [layer.key for layer in result.quantization.layers]
    assert coded == ["embed.weight", "conv.weight", "head.weight"]  # every floating tensor with >= 2 dims
    decoded, arch = alexcompress.decode(result.data)
    assert arch == "none"
    for key, value in result.quantization.state.items():
        assert torch.equal(decoded[key], torch.as_tensor(value)), key
    assert decoded["norm.num_batches_tracked"].dtype == torch.int64
    path = tmp_path / "tiny.dcz"
    path.write_bytes(result.data)
    with pytest.raises(ModelError, match="of no known architecture.*load\\(path, model="):
        alexcompress.load(path)
    loaded = alexcompress.load(path, model=TinyNet())
    assert not loaded.training
    assert torch.equal(loaded.head.weight, torch.as_tensor(result.quantization.state["head.weight"]))
    tokens = torch.randint(0, 50, (2, 7))
    with torch.no_grad():
        assert loaded(tokens).shape == (2, 4)


def test_cli_compresses_a_users_state_dict_and_says_what_it_detected(tmp_path):
    from typer.testing import CliRunner

    from alexcompress.cli.app import app

    torch.manual_seed(0)
    path = tmp_path / "tiny.pt"
    torch.save(TinyNet().state_dict(), path)
    runner = CliRunner()
    result = runner.invoke(app, ["compress", str(path), "--bits", "4", "--rates", "embed=0.3,conv=0.5"])
    assert result.exit_code == 0, result.output
    assert "no torchvision model has these keys and shapes: treating it as 'none'" in " ".join(result.stderr.split())
    decoded = runner.invoke(app, ["decode", str(tmp_path / "tiny.dcz")])
    assert decoded.exit_code == 0, decoded.output
    back = torch.load(tmp_path / "tiny.decoded.pt", weights_only=True)
    assert list(back) == list(TinyNet().state_dict())
    kept = np.count_nonzero(back["embed.weight"].numpy()) / back["embed.weight"].numel()
    assert kept == pytest.approx(0.3, abs=0.01)
    bad = runner.invoke(app, ["prune", str(path), "--rates", "fc6=0.1", "-o", str(tmp_path / "x.pt")])
    assert bad.exit_code == 1 and "layer 'fc6' matches no compressible layer; layers: embed, conv, head" in bad.stderr


def test_decoded_pt_keeps_module_versions_that_torchvision_needs(tmp_path):
    """MNASNet refuses a state dict without torch's `_metadata` versions: `init`, `decode` and the stages
    write them (torch-free), so plain torchvision loads what we write."""
    from typer.testing import CliRunner

    from alexcompress.cli.app import app

    runner = CliRunner()
    pt, dcz, back = tmp_path / "m.pt", tmp_path / "m.dcz", tmp_path / "back.pt"
    for args in (
        ["init", "--arch", "mnasnet0_5", "--num-classes", "10", "-o", pt],
        ["compress", pt, "-o", dcz],
        ["decode", dcz, "-o", back],
    ):
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, result.output
    for path in (pt, back):
        state = torch.load(path, weights_only=True)
        assert state._metadata["layers.0"]["version"] >= 1
        torchvision.models.mnasnet0_5(num_classes=10).load_state_dict(state)  # strict, raises if refused


def test_iterative_schedule_reaches_the_target_and_refuses_unknown_presets(alexnet10):
    arch = get_arch("alexnet")
    spec = alexcompress.PruneSpec(preset="paper")
    steps = [spec.step(r, 3, arch).rates["fc6"] for r in (1, 2, 3)]
    assert steps[0] > steps[1] > steps[2] == pytest.approx(0.09)
    assert alexcompress.PruneSpec(sparsity=0.9).step(3, 3, arch).sparsity == pytest.approx(0.9)
    with pytest.raises(alexcompress.AlexCompressError, match="has no preset .nope. \\(its presets: paper\\)"):
        alexcompress.PruneSpec(preset="nope").step(1, 2, arch)


def test_pretrained_download_has_a_timeout_checks_the_hash_and_caches(tmp_path, monkeypatch):
    """The weights download (torch.hub has no timeout): urlopen is given one, the file's SHA-256 must start
    with the digits in its name, a good file lands in torch's cache and is read from there next time."""
    import hashlib
    import io
    import urllib.request

    import torch

    from alexcompress.errors import ModelError
    from alexcompress.models import torchvision_archs

    buffer = io.BytesIO()
    torch.save({"w": torch.ones(2)}, buffer)
    payload = buffer.getvalue()
    digest = hashlib.sha256(payload).hexdigest()[:8]
    calls = []

    def fake_urlopen(url, timeout=None):
        calls.append(timeout)
        return io.BytesIO(payload)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    good = f"https://example.invalid/models/tiny-{digest}.pth"
    assert torchvision_archs._fetch_checkpoint(good)["w"].tolist() == [1.0, 1.0]
    assert calls == [10.0] and (tmp_path / "checkpoints" / f"tiny-{digest}.pth").exists()
    assert torchvision_archs._fetch_checkpoint(good)["w"].tolist() == [1.0, 1.0] and len(calls) == 1  # cached

    class Weights:
        url = "https://example.invalid/models/tiny-00000000.pth"

    with pytest.raises(ModelError, match="hash mismatch"):
        torchvision_archs._download(Weights())
    assert not any(p.name.startswith(".partial") for p in (tmp_path / "checkpoints").iterdir())
    assert not (tmp_path / "checkpoints" / "tiny-00000000.pth").exists()


def test_skipping_parameter_init_patches_nothing():
    """Building a skeleton without initialising weights is a torch function mode around the build, not a
    replacement of torch.nn.init for the whole process."""
    from alexcompress.models import torchvision_archs

    functions = {name: getattr(torch.nn.init, name) for name in dir(torch.nn.init) if name.endswith("_")}
    seen = []

    class Probe(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.full((3,), 7.0))
            torch.nn.init.zeros_(self.weight)  # skipped inside the mode: the parameter keeps its 7s
            seen.append(self.weight.detach().clone())

    with torchvision_archs._skip_parameter_init():
        Probe()
        assert {name: getattr(torch.nn.init, name) for name in functions} == functions
    Probe()
    assert seen[0].tolist() == [7.0] * 3 and seen[1].tolist() == [0.0] * 3
