"""Retraining: masks hold exactly, the centroid gradient is the paper's, and a resumed run is the same run."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import TensorDataset

from alexcompress.compression.pruning import prune_global
from alexcompress.compression.quantization import quantize
from alexcompress.errors import AlexCompressError
from alexcompress.train.config import TrainConfig
from alexcompress.train.hooks import CentroidFinetuning, MaskedRetraining
from alexcompress.train.log import EpochSummary, SilentLog
from alexcompress.train.trainer import _train, finetune_centroids, retrain_pruned


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
    from alexcompress.models.state import compressible_keys, random_model

    base = prune_global(random_model("alexnet", num_classes=2, seed=0), 0.5).state
    data = alexnet_small_data()

    def config(epochs, checkpoint, resume=False):
        return TrainConfig(
            epochs=epochs, lr=0.01, batch_size=4, device="cpu", checkpoint=str(checkpoint), resume=resume, keep_checkpoint=True
        )

    straight = retrain_pruned(base, "alexnet", data, config(2, tmp_path / "a.ckpt"))
    retrain_pruned(base, "alexnet", data, config(1, tmp_path / "b.ckpt"))  # "interrupted" after epoch 1
    resumed = retrain_pruned(base, "alexnet", data, config(2, tmp_path / "b.ckpt", resume=True))
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    coded = compressible_keys(base, "alexnet")
    assert_trained(base, straight, coded)

    q = quantize(straight, bits=3).state
    tuned = finetune_centroids(q, "alexnet", data, config(1, tmp_path / "c.ckpt"))
    assert_trained(q, tuned, coded, codebook=True)
    again = finetune_centroids(q, "alexnet", data, config(1, tmp_path / "c.ckpt", resume=True))  # already done
    assert all(torch.equal(tuned[k], again[k]) for k in tuned)
    with pytest.raises(Exception, match="checkpoint of 'centroids', not of 'retrain'"):
        retrain_pruned(base, "alexnet", data, config(2, tmp_path / "c.ckpt", resume=True))


def assert_trained(start, end, coded, *, codebook: bool = False, masks: bool = True) -> None:
    """The run moved every coded layer (it trained: a model whose loss cannot move passes nothing), kept its
    zeros where they were (`masks`), and with `codebook` holds at most as many distinct values per layer."""
    for key in coded:
        a, b = torch.as_tensor(start[key]), torch.as_tensor(end[key])
        assert not torch.equal(a, b), f"{key} did not move"
        if masks:
            assert torch.equal(a == 0, b == 0), f"{key}: the pruned weights changed"
        if codebook:
            assert b.unique().numel() <= a.unique().numel(), f"{key}: the codebook grew"


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

    class Interrupt(SilentLog):
        def batch(self, stage, epoch, epochs, batch, batches, *rest):
            if epoch == 2 and batch == 2:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _train(net, MaskedRetraining(net, coded(net)), tiny_data(), config, stage="retrain", log=Interrupt())
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["epoch"] == 1 and saved["stage"] == "retrain"  # epoch 2 restarts on --resume
    assert set(saved["masks"]) == {"0.weight", "3.weight"}
    assert not list(tmp_path.glob("*.tmp"))


class Recorder(SilentLog):
    def __init__(self):
        self.epochs: list[EpochSummary] = []
        self.notes: list[str] = []

    def epoch(self, stage, summary):
        self.epochs.append(summary)

    def note(self, text):
        self.notes.append(text)


def test_checkpoint_is_removed_after_a_successful_run_unless_kept(tmp_path):
    from alexcompress.models.state import random_model

    base = prune_global(random_model("alexnet", num_classes=2, seed=0), 0.5).state
    for keep in (False, True):
        checkpoint = tmp_path / f"run{keep}.ckpt"
        config = TrainConfig(epochs=1, lr=0.01, batch_size=4, device="cpu", checkpoint=str(checkpoint), keep_checkpoint=keep)
        retrain_pruned(base, "alexnet", alexnet_small_data(), config)
        assert checkpoint.exists() == keep
    assert not list(tmp_path.glob("*.tmp"))


def test_validation_keeps_the_best_epoch_and_patience_stops_early():
    """A learning rate that wrecks the model: every epoch is worse than the start, so `best` hands back the
    starting point exactly, `last` the wreck, and patience 1 stops after the first bad epoch."""
    net = tiny_net()
    net.load_state_dict(prune_global(OrderedDict(net.state_dict()), 0.3, arch="none").state)
    data = tiny_data()
    _train(net, MaskedRetraining(net, coded(net)), data, TrainConfig(epochs=30, lr=0.05, batch_size=8, device="cpu"), stage="retrain")
    start = OrderedDict((k, v.clone()) for k, v in net.state_dict().items())  # a model that fits tiny_data
    wreck = dict(epochs=4, lr=50.0, batch_size=8, device="cpu")
    results = {}
    for keep in ("best", "last"):
        net.load_state_dict(start)
        log = Recorder()
        _train(net, MaskedRetraining(net, coded(net)), data, TrainConfig(keep=keep, **wreck), stage="retrain", validation=data, log=log)
        results[keep] = OrderedDict((k, v.clone()) for k, v in net.state_dict().items())
        assert len(log.epochs) == 4 and all(e.val_top1 is not None for e in log.epochs)
        assert all(e.best_epoch == 0 for e in log.epochs)
    assert all(torch.equal(results["best"][k], start[k]) for k in start)
    assert not all(torch.equal(results["last"][k], start[k]) for k in start)
    net.load_state_dict(start)
    log = Recorder()
    _train(net, MaskedRetraining(net, coded(net)), data, TrainConfig(patience=1, **wreck), stage="retrain", validation=data, log=log)
    assert len(log.epochs) == 1 and any("stopping early after epoch 1" in n for n in log.notes)
    assert any("keeping the starting point (epoch 0)" in n for n in log.notes)


def test_a_tie_in_top1_is_broken_by_the_validation_loss():
    """A model that already scores 100% on its validation set: every epoch ties the start in top-1, so the
    loss decides, and gentle training that lowers it is kept (before, the start won every tie)."""
    net = tiny_net()
    net.load_state_dict(prune_global(OrderedDict(net.state_dict()), 0.3, arch="none").state)
    data = tiny_data()
    _train(net, MaskedRetraining(net, coded(net)), data, TrainConfig(epochs=30, lr=0.05, batch_size=8, device="cpu"), stage="retrain")
    log = Recorder()
    config = TrainConfig(epochs=2, lr=0.01, batch_size=8, device="cpu")
    _train(net, MaskedRetraining(net, coded(net)), data, config, stage="retrain", validation=data, log=log)
    assert all(e.val_top1 == 1.0 for e in log.epochs)  # ties throughout: only the loss separates the epochs
    assert log.epochs[-1].best_epoch == 2 and any("keeping epoch 2" in n for n in log.notes)


def test_an_earlier_round_of_iterative_pruning_keeps_its_retraining():
    """Round 1 of 2 never hands back its unretrained start, however the epochs score (a learning rate that
    wrecks the model): the next round prunes from what this one trained."""
    from alexcompress.models.state import random_model

    arch = "mobilenet_v3_small"  # a twentieth of AlexNet's weights: the same code paths, faster
    data, log = alexnet_small_data(), Recorder()

    def prune_round(state, r):
        return prune_global(state, 0.2 * r, arch=arch).state

    config = TrainConfig(epochs=1, lr=50.0, batch_size=4, device="cpu")
    retrain_pruned(
        random_model(arch, num_classes=2, seed=0), arch, data, config, validation=data, prune_round=prune_round, rounds=2, log=log
    )
    kept = [n for n in log.notes if "keeping" in n]
    assert len(kept) == 2 and "keeping epoch 1" in kept[0]  # the wreck, which the start would have beaten


def test_learning_rate_schedules():
    step = TrainConfig(epochs=6, schedule="step", step_size=2, gamma=0.5)
    assert [step.lr_factor(e * 10, 10) for e in range(6)] == [1, 1, 0.5, 0.5, 0.25, 0.25]
    warm = TrainConfig(epochs=2, warmup_epochs=0.5)
    assert [warm.lr_factor(s, 10) for s in (0, 4, 5, 19)] == [0.2, 1.0, 1.0, 1.0]
    cosine = TrainConfig(epochs=2, schedule="cosine")
    assert cosine.lr_factor(0, 10) == 1.0 and cosine.lr_factor(10, 10) == pytest.approx(0.5) and cosine.lr_factor(19, 10) < 0.01
    with pytest.raises(Exception, match="schedule must be one of constant, step, cosine"):
        TrainConfig(schedule="linear").validate()


def test_augmentations_none_is_deterministic_and_flip_mirrors():
    from alexcompress.train.data import AUGMENTATIONS, Preprocessing

    assert set(AUGMENTATIONS) == {"none", "flip", "crop-flip"}
    pixels = np.zeros((16, 16, 3), np.uint8)
    pixels[:, :4] = 255  # bright left edge: mirroring moves it
    image = Image.fromarray(pixels)
    prep = Preprocessing(image_size=16, resize=16, mean=(0.0,), std=(1.0,))
    plain = prep.transform("none")
    assert all(torch.equal(plain(image), plain(image)) for _ in range(5))
    torch.manual_seed(0)
    flipped = [prep.transform("flip")(image) for _ in range(20)]
    assert any(float(t[0, 0, -1]) == 1.0 for t in flipped) and any(float(t[0, 0, 0]) == 1.0 for t in flipped)


def test_plain_log_lines_for_logs_and_pipes():
    import io

    from alexcompress.cli.progress import PlainLog

    stream = io.StringIO()
    log = PlainLog(stream, every=2)
    for batch in range(1, 6):
        log.batch("retrain", 1, 2, batch, 5, 0.5, 0.75, 123.4)
    log.epoch("retrain", EpochSummary(1, 2, 0.5, 0.75, 120.0, 4.0, 0.8, 1))
    lines = stream.getvalue().splitlines()
    assert [line.split(":")[0] for line in lines[:3]] == [
        "retrain epoch 1/2 step 2/5",
        "retrain epoch 1/2 step 4/5",
        "retrain epoch 1/2 step 5/5",
    ]
    assert "acc 75.00%" in lines[0] and "123 img/s" in lines[0] and "ETA" in lines[0]
    assert lines[3] == "retrain epoch 1/2 done: loss 0.5000  train acc 75.00%  120 img/s  0m04s  val top-1 80.00% (best: epoch 1)"


def test_validation_split_is_stratified_and_seeded(tmp_path):
    from alexcompress.train.data import Preprocessing, split_folder

    root = make_image_folder(tmp_path / "data", classes=3, per_class=8)
    prep = Preprocessing(image_size=32, resize=32)
    train, val = split_folder(str(root), prep, "flip", 0.25, seed=1)
    assert len(train) == 18 and len(val) == 6
    assert sorted(val.dataset.targets[i] for i in val.indices) == [0, 0, 1, 1, 2, 2]
    assert set(train.indices).isdisjoint(val.indices)
    again = split_folder(str(root), prep, "flip", 0.25, seed=1)[1]
    other = split_folder(str(root), prep, "flip", 0.25, seed=2)[1]
    assert again.indices == val.indices and other.indices != val.indices


def test_bf16_autocast_keeps_masks_exact_and_fp16_needs_cuda():
    net = tiny_net()
    net.load_state_dict(prune_global(OrderedDict(net.state_dict()), 0.5, arch="none").state)
    keys = coded(net)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    _train(net, MaskedRetraining(net, keys), tiny_data(), TrainConfig(epochs=1, lr=0.05, batch_size=8, device="cpu", amp="bf16"), stage="s")
    after = net.state_dict()
    for key in keys:
        assert (after[key][before[key] == 0] == 0).all() and not torch.equal(after[key], before[key])
    with pytest.raises(AlexCompressError, match="fp16 needs CUDA"):
        _train(net, MaskedRetraining(net, keys), tiny_data(), TrainConfig(epochs=1, batch_size=8, device="cpu", amp="fp16"), stage="s")


def test_regrow_brings_pruned_weights_back_at_the_same_count():
    from alexcompress.train.hooks import RegrowingRetraining

    net = tiny_net()
    pruned = prune_global(OrderedDict(net.state_dict()), 0.7, arch="none").state
    net.load_state_dict(pruned)
    before = {k: v != 0 for k, v in net.state_dict().items() if k.endswith("weight")}
    notes = Recorder()
    config = TrainConfig(epochs=3, lr=0.05, optimizer="adam", batch_size=8, device="cpu", regrow=True)
    hooks = RegrowingRetraining(net, coded(net))
    _train(net, hooks, tiny_data(), config, stage="retrain", log=notes)
    came_back = 0
    for key, kept in before.items():
        weight = net.state_dict()[key]
        now = weight != 0
        assert int(now.sum()) == int(kept.sum()), key  # the size does not change
        assert torch.equal(now, hooks.masks[key].bool()), key  # the weights are what the mask says
        assert not torch.signbit(weight[~now]).any(), key  # pruned weights are +0.0
        came_back += int((now & ~kept).sum())
    assert came_back > 0  # lr 0.05 for 3 epochs moves some pruned weights past the weakest kept ones
    assert sum("pruned weights came back" in line for line in notes.notes) == 2  # before epochs 2 and 3
    assert set(hooks.state()) == {"masks", "shadow"}


def test_regrow_resumes_the_same_run_and_spans_pruning_rounds(tmp_path):
    from alexcompress.compression.specs import PruneSpec, prune_and_retrain
    from alexcompress.models.state import compressible_keys, random_model

    arch = "mobilenet_v3_small"  # a twentieth of AlexNet's weights: the same code paths, faster
    base = prune_global(random_model(arch, num_classes=2, seed=0), 0.5, arch=arch).state
    data = alexnet_small_data()

    def config(epochs, checkpoint, resume=False):
        return TrainConfig(
            epochs=epochs, lr=0.01, batch_size=4, device="cpu", checkpoint=str(checkpoint), resume=resume, keep_checkpoint=True, regrow=True
        )

    straight = retrain_pruned(base, arch, data, config(2, tmp_path / "a.ckpt"))
    retrain_pruned(base, arch, data, config(1, tmp_path / "b.ckpt"))  # "interrupted" after epoch 1
    assert "shadow" in torch.load(tmp_path / "b.ckpt", weights_only=False)
    resumed = retrain_pruned(base, arch, data, config(2, tmp_path / "b.ckpt", resume=True))
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    assert_trained(base, straight, compressible_keys(base, arch), masks=False)  # regrow moves masks, at the same count
    # two pruning rounds to 80%: the count per layer is the schedule's, whatever came back
    notes = Recorder()
    two = prune_and_retrain(base, data, config(1, tmp_path / "c.ckpt"), PruneSpec(sparsity=0.8), arch=arch, rounds=2, log=notes)
    coded = compressible_keys(two, arch)
    kept = sum(int((two[k] != 0).sum()) for k in coded)
    total = sum(two[k].numel() for k in coded)
    assert kept / total == pytest.approx(0.2, abs=0.002)
    assert sum("came back" in line for line in notes.notes) == 1  # one epoch per round: at round 2's pruning


@pytest.mark.parametrize("best", [5, {"epoch": 1, "top1": "x", "model": None}, {"epoch": 1, "top1": 0.5, "loss": "y", "model": {}}])
def test_a_checkpoint_whose_best_epoch_is_malformed_is_refused(best):
    from alexcompress.train.checkpoint import _check_checkpoint_fields

    ckpt = {"epoch": 1, "model": {}, "optimizer": {}, "masks": {}, "rng": [torch.get_rng_state()], "best": best}
    with pytest.raises(AlexCompressError, match="field 'best' must hold the best epoch"):
        _check_checkpoint_fields(ckpt, "c.ckpt", "retrain")
    _check_checkpoint_fields({**ckpt, "best": {"epoch": 0, "top1": 0.5, "model": None}}, "c.ckpt", "retrain")  # before 0.7.0: no loss
