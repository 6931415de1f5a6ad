from __future__ import annotations

import pickle
import socket
import time
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torchvision

from alexcompress.errors import ModelError
from alexcompress.models.state import load_state_dict, pretrained, random_model, state_dict_bytes


def test_random_model_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = random_model("alexnet", num_classes=3, seed=7)
    assert torch.rand(1).equal(expected_next)
    b = random_model("alexnet", num_classes=3, seed=7)
    c = random_model("alexnet", num_classes=3, seed=8)
    assert all(a[k].equal(b[k]) for k in a)
    assert not a["classifier.1.weight"].equal(c["classifier.1.weight"])
    torchvision.models.alexnet(num_classes=3).load_state_dict(a)


def test_random_model_rejects_bad_num_classes():
    with pytest.raises(ModelError, match="num_classes"):
        random_model("alexnet", num_classes=0)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"state_dict": sd, "epoch": 3},
        lambda sd: {"model": sd},
        lambda sd: {"state_dict": OrderedDict(("module." + k, v) for k, v in sd.items())},
    ],
    ids=["plain", "state_dict", "model", "module-prefix"],
)
def test_loads_common_checkpoint_layouts(tmp_path, alexnet10, wrap):
    path = tmp_path / "m.pt"
    torch.save(wrap(alexnet10), path)
    state, arch, _ = load_state_dict(path)
    assert arch == "alexnet"
    assert list(state) == list(alexnet10)
    assert state["classifier.6.weight"].equal(alexnet10["classifier.6.weight"])


def test_pickled_module_is_refused_with_resave_hint(tmp_path):
    path = tmp_path / "module.pt"
    torch.save(torchvision.models.alexnet(num_classes=2), path)
    with pytest.raises(
        ModelError,
        match=r"holds pickled Python objects \(torchvision.models.alexnet.AlexNet\).*re-save it as a state dict: torch.save\(model.state_dict\(\)",
    ):
        load_state_dict(path)


class _Evil:
    def __reduce__(self):
        return (Path.touch, (Path(self.target),))


def test_malicious_pickle_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = _Evil()
    evil.target = str(marker)
    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"state_dict": evil}, handle)
    with pytest.raises(ModelError):
        load_state_dict(path)
    torch.save({"x": evil}, tmp_path / "evil_zip.pt")
    with pytest.raises(ModelError):
        load_state_dict(tmp_path / "evil_zip.pt")
    assert not marker.exists()


def test_non_alexnet_state_dict_names_missing_keys(tmp_path):
    path = tmp_path / "r.pt"
    torch.save({"classifier.6.weight": torch.zeros(10, 4096), "foo.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(ModelError, match=r"missing keys features\.0\.weight.*unexpected keys foo\.weight"):
        load_state_dict(path, arch="alexnet")
    loaded = load_state_dict(path)  # detected: no torchvision model has these keys
    assert loaded.arch == "none" and "no torchvision model has these keys" in loaded.note


def test_wrong_shape_is_named(tmp_path, alexnet10):
    bad = OrderedDict(alexnet10)
    bad["features.3.weight"] = torch.zeros(192, 64, 3, 3)
    path = tmp_path / "bad.pt"
    torch.save(bad, path)
    with pytest.raises(ModelError, match=r"features\.3\.weight has shape \(192, 64, 3, 3\), expected \(192, 64, 5, 5\)"):
        load_state_dict(path, arch="alexnet")


def test_not_a_torch_file_missing_file_and_truncation(tmp_path, alexnet10):
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(ModelError, match="not a readable torch file"):
        load_state_dict(text)
    with pytest.raises(ModelError, match="no such file"):
        load_state_dict(tmp_path / "missing.pt")
    data = state_dict_bytes(alexnet10)
    with pytest.raises(ModelError, match="truncated"):
        load_state_dict(data[: len(data) // 2], name="cut.pt")


def test_pretrained_fails_fast_and_clearly_without_network(tmp_path, monkeypatch):
    """Everything up to the network boundary runs for real; the socket refuses like an offline machine."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache: nothing to fall back on
    torch.hub.set_dir(str(tmp_path / "hub"))

    def offline(*args, **kwargs):
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket.socket, "connect", offline)
    monkeypatch.setattr(socket, "getaddrinfo", offline)
    start = time.monotonic()
    with pytest.raises(ModelError) as info:
        pretrained("alexnet")
    assert time.monotonic() - start < 30
    message = str(info.value)
    assert "cannot download the pretrained weights" in message and "alexnet-owt" in message
    assert "alexcompress init" in message and "\n" not in message
