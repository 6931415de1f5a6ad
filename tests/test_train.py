"""Retraining: masks hold exactly, the centroid gradient is the paper's, and a resumed run is the same run."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import TensorDataset

from alexcompress.pruning import prune_global
from alexcompress.quantization import quantize
from alexcompress.train import CentroidFinetuning, MaskedRetraining, TrainConfig, _train, finetune_centroids, retrain_pruned


def coded(net) -> set[str]:
    """The weights a stage codes: conv and linear weights (every parameter with >= 2 dimensions here)."""
    return {k for k, p in net.named_parameters() if p.dim() >= 2}


def tiny_net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 3))


def tiny_data(n: int = 32, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g))


@pytest.mark.parametrize(
    "optimizer, weight_decay",
    [("sgd", 0.0), ("sgd", 0.1), ("adam", 0.0), ("adam", 0.1)],
)
def test_pruned_weights_stay_exactly_zero(optimizer, weight_decay):
    net = tiny_net()
    pruned = prune_global(OrderedDict(net.state_dict()), 0.7, arch="none").state
    net.load_state_dict(pruned)
    zero_before = {k: (v == 0).clone() for k, v in net.state_dict().items() if k.endswith("weight")}
    config = TrainConfig(epochs=3, lr=0.05, optimizer=optimizer, momentum=0.9, weight_decay=weight_decay, batch_size=8, device="cpu")
    _train(net, MaskedRetraining(net, coded(net)), tiny_data(), config, stage="retrain")
    for key, zero in zero_before.items():
        weight = net.state_dict()[key]
        assert (weight[zero] == 0).all(), key
        assert not torch.equal(weight[~zero], pruned[key][~zero])  # the survivors did train


def test_centroid_gradient_is_the_sum_of_its_weights_gradients():
    net = tiny_net()
    quantized = quantize(prune_global(OrderedDict(net.state_dict()), 0.5, arch="none").state, bits=2, arch="none").state
    net.load_state_dict(quantized)
    hooks = CentroidFinetuning(net, coded(net))
    images, labels = tiny_data(8)[:]
    torch.nn.functional.cross_entropy(net(images), labels).backward()
    grads = {k: p.grad.clone() for k, p in net.named_parameters()}
    hooks.after_backward(net)
    for key, (positions, assignment, centroids) in hooks.layers.items():
        weight = quantized[key].reshape(-1)
        for k in range(centroids.numel()):
            members = weight == centroids[k].detach()
            assert torch.allclose(centroids.grad[k], grads[key].reshape(-1)[members].sum(), atol=1e-6)
        assert net.get_parameter(key).grad is None


def test_centroid_finetuning_keeps_codebook_structure():
    net = tiny_net()
    state = quantize(prune_global(OrderedDict(net.state_dict()), 0.6, arch="none").state, bits=3, arch="none").state
    net.load_state_dict(state)
    hooks = CentroidFinetuning(net, coded(net))
    _train(net, hooks, tiny_data(), TrainConfig(epochs=2, lr=0.05, batch_size=8, device="cpu"), stage="centroids")
    after = net.state_dict()
    changed = False
    for key in ("0.weight", "3.weight"):
        assert torch.equal(after[key] == 0, state[key] == 0)
        assert after[key][after[key] != 0].unique().numel() <= 8
        changed |= not torch.equal(after[key], state[key])
    assert changed


def alexnet_small_data(n: int = 12) -> TensorDataset:
    g = torch.Generator().manual_seed(1)
    return TensorDataset(torch.randn(n, 3, 64, 64, generator=g), torch.randint(0, 2, (n,), generator=g))


def test_resume_continues_the_same_run(tmp_path):
    from alexcompress.models import random_model

    base = prune_global(random_model("alexnet", num_classes=2, seed=0), 0.5).state
    data = alexnet_small_data()

    def config(epochs, checkpoint, resume=False):
        return TrainConfig(epochs=epochs, lr=0.01, batch_size=4, device="cpu", checkpoint=str(checkpoint), resume=resume)

    straight = retrain_pruned(base, "alexnet", data, config(2, tmp_path / "a.ckpt"))
    retrain_pruned(base, "alexnet", data, config(1, tmp_path / "b.ckpt"))  # "interrupted" after epoch 1
    resumed = retrain_pruned(base, "alexnet", data, config(2, tmp_path / "b.ckpt", resume=True))
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    for key in ("features.0.weight", "classifier.1.weight", "classifier.6.weight"):
        assert not torch.equal(straight[key], base[key]), key  # it did train

    q = quantize(straight, bits=3).state
    tuned = finetune_centroids(q, "alexnet", data, config(1, tmp_path / "c.ckpt"))
    again = finetune_centroids(q, "alexnet", data, config(1, tmp_path / "c.ckpt", resume=True))  # already done
    assert all(torch.equal(tuned[k], again[k]) for k in tuned)
    with pytest.raises(Exception, match="checkpoint of 'centroids', not of 'retrain'"):
        retrain_pruned(base, "alexnet", data, config(2, tmp_path / "c.ckpt", resume=True))


def make_image_folder(root, classes=2, per_class=4, size=40):
    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = (rng.random((size, size, 3)) * 255).astype(np.uint8)
            pixels[..., c % 3] = 255 * (i % 2)  # a little signal per class
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def test_ctrl_c_leaves_a_usable_checkpoint(tmp_path):
    net = tiny_net()
    net.load_state_dict(prune_global(OrderedDict(net.state_dict()), 0.5, arch="none").state)
    checkpoint = tmp_path / "run.ckpt"
    config = TrainConfig(epochs=3, lr=0.05, batch_size=8, device="cpu", checkpoint=str(checkpoint))

    def interrupt(stage, epoch, epochs, batch, batches, loss, accuracy):
        if epoch == 2 and batch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _train(net, MaskedRetraining(net, coded(net)), tiny_data(), config, stage="retrain", progress=interrupt)
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["epoch"] == 1 and saved["stage"] == "retrain"  # epoch 2 restarts on --resume
    assert set(saved["masks"]) == {"0.weight", "3.weight"}
    assert not list(tmp_path.glob("*.tmp"))
