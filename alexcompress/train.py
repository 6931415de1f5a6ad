"""Retraining: masked fine-tuning after pruning, and centroid fine-tuning after quantization (paper §3.3).

Masked retraining keeps pruned weights at exactly zero: gradients are masked before the optimizer step and
the mask is re-applied after it, so momentum, Adam's moments and weight decay cannot resurrect a weight.

Centroid fine-tuning trains the codebook, not the weights: the gradient of centroid k is the sum of the
gradients of the weights assigned to it, dL/dC_k = sum_ij dL/dW_ij 1(I_ij = k); assignments and zeros stay
fixed, so every layer keeps at most 2**bits distinct values and `encode` takes the result.

Both write a checkpoint at the end of every epoch (and on Ctrl-C), and `resume` continues the same run:
batches depend only on (seed, epoch) and the RNG state is saved, so a resumed run matches an unbroken one.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from .data import loader, resolve_device
from .errors import AlexCompressError
from .models import build_model, compressible_keys

if TYPE_CHECKING:
    import torch
    from torch.utils.data import Dataset

OPTIMIZERS = ("sgd", "adam")


@dataclass
class TrainConfig:
    epochs: int = 1
    lr: float = 1e-3
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 64
    workers: int = 0
    seed: int = 0
    device: str = "auto"
    checkpoint: Optional[str] = None  # written every epoch and on Ctrl-C
    resume: bool = False

    def validate(self) -> None:
        if self.epochs < 0:
            raise AlexCompressError(f"epochs must be >= 0, got {self.epochs}")
        if not self.lr > 0:
            raise AlexCompressError(f"learning rate must be > 0, got {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            raise AlexCompressError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.resume and not self.checkpoint:
            raise AlexCompressError("resuming needs a checkpoint file")
        if self.resume and not Path(self.checkpoint).exists():
            raise AlexCompressError(f"{self.checkpoint}: no checkpoint to resume from")


class _Hooks:
    """What a training stage does around the optimizer: which parameters it trains, and the fix-ups."""

    def parameters(self, model: "torch.nn.Module") -> list:
        raise NotImplementedError

    def after_backward(self, model: "torch.nn.Module") -> None:
        pass

    def after_step(self, model: "torch.nn.Module") -> None:
        pass

    def state(self) -> dict[str, Any]:
        return {}


class MaskedRetraining(_Hooks):
    """Train every parameter; pruned weights (zeros at the start) stay exactly zero."""

    def __init__(self, model: "torch.nn.Module", coded: "set[str]", masks: "Optional[dict[str, torch.Tensor]]" = None) -> None:
        params = dict(model.named_parameters())
        self.masks = masks if masks is not None else {key: (p.detach() != 0) for key, p in params.items() if key in coded}
        self._params = [(params[key], mask.to(params[key].device)) for key, mask in self.masks.items()]

    def parameters(self, model: "torch.nn.Module") -> list:
        return list(model.parameters())

    def after_backward(self, model: "torch.nn.Module") -> None:
        for param, mask in self._params:
            if param.grad is not None:
                param.grad.mul_(mask)

    def after_step(self, model: "torch.nn.Module") -> None:
        import torch

        with torch.no_grad():
            for param, mask in self._params:
                param.mul_(mask)

    def state(self) -> dict[str, Any]:
        return {"masks": {k: v.cpu() for k, v in self.masks.items()}}


class CentroidFinetuning(_Hooks):
    """Train each quantized layer's centroids with the grouped gradient; biases and other raw parameters
    train as usual. Weights are rewritten from the centroids after every step."""

    def __init__(
        self,
        model: "torch.nn.Module",
        coded: "set[str]",
        assignments: "Optional[dict[str, tuple[torch.Tensor, torch.Tensor]]]" = None,
        centroids: "Optional[dict[str, torch.Tensor]]" = None,
    ) -> None:
        import torch

        params = dict(model.named_parameters())
        self.layers: dict[str, tuple[torch.Tensor, torch.Tensor, torch.nn.Parameter]] = {}
        for key, p in params.items():
            if key not in coded:
                continue
            if assignments is not None:
                positions, labels = (t.to(p.device) for t in assignments[key])
                values = centroids[key].to(p.device)
            else:
                flat = p.detach().reshape(-1)
                positions = torch.nonzero(flat, as_tuple=True)[0]
                values, labels = torch.unique(flat[positions], return_inverse=True)
            self.layers[key] = (positions, labels, torch.nn.Parameter(values.clone().float()))
            p.requires_grad_(True)

    def parameters(self, model: "torch.nn.Module") -> list:
        raw = [p for key, p in model.named_parameters() if key not in self.layers]
        return raw + [c for _, _, c in self.layers.values()]

    def after_backward(self, model: "torch.nn.Module") -> None:
        import torch

        params = dict(model.named_parameters())
        for key, (positions, labels, centroids) in self.layers.items():
            weight = params[key]
            grouped = torch.zeros_like(centroids, requires_grad=False)
            if weight.grad is not None:  # dL/dC_k = sum of dL/dW over the weights assigned to centroid k
                grouped.index_add_(0, labels, weight.grad.reshape(-1)[positions])
            centroids.grad = grouped
            weight.grad = None  # the weights themselves are not trained

    def after_step(self, model: "torch.nn.Module") -> None:
        import torch

        tiny = torch.finfo(torch.float32).tiny
        params = dict(model.named_parameters())
        with torch.no_grad():
            for key, (positions, labels, centroids) in self.layers.items():
                zero = centroids == 0  # a centroid at exactly 0.0 would silently prune its weights
                if zero.any():
                    centroids[zero] = tiny
                params[key].view(-1)[positions] = centroids[labels]

    def state(self) -> dict[str, Any]:
        return {
            "assignments": {k: (pos.cpu(), lab.cpu()) for k, (pos, lab, _) in self.layers.items()},
            "centroids": {k: c.detach().cpu() for k, (_, _, c) in self.layers.items()},
        }


ProgressHook = Callable[[str, int, int, int, int, float, float], None]  # stage, epoch, epochs, batch, batches, loss, acc


def _make_optimizer(params: list, config: TrainConfig) -> "torch.optim.Optimizer":
    import torch

    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def _save_checkpoint(path: str, payload: dict[str, Any]) -> None:
    import torch

    from .fileio import write_atomic

    write_atomic(Path(path), lambda handle: torch.save(payload, handle))


def load_checkpoint(path: str) -> dict[str, Any]:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise AlexCompressError(f"{path}: not a readable alexcompress checkpoint ({' '.join(str(exc).split())[:200]})") from None


def _train(
    model: "torch.nn.Module",
    hooks: _Hooks,
    dataset: "Dataset",
    config: TrainConfig,
    *,
    stage: str,
    round_index: int = 0,
    start_epoch: int = 0,
    optimizer_state: Optional[dict] = None,
    rng_state: "Optional[torch.Tensor]" = None,
    progress: Optional[ProgressHook] = None,
) -> None:
    import torch
    from torch.nn.functional import cross_entropy

    device = next(model.parameters()).device  # callers move the model before building its hooks
    optimizer = _make_optimizer(hooks.parameters(model), config)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    if rng_state is not None:
        torch.set_rng_state(rng_state)
    else:
        torch.manual_seed(config.seed)
    epoch = start_epoch

    def checkpoint(next_epoch: int) -> None:
        if config.checkpoint:
            _save_checkpoint(
                config.checkpoint,
                {
                    "format": "alexcompress-checkpoint",
                    "stage": stage,
                    "round": round_index,
                    "epoch": next_epoch,
                    "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                    "optimizer": optimizer.state_dict(),
                    "rng": torch.get_rng_state(),
                    "config": {k: v for k, v in asdict(config).items() if k not in ("checkpoint", "resume")},
                    **hooks.state(),
                },
            )

    try:
        for epoch in range(start_epoch, config.epochs):
            model.train()
            batches = loader(dataset, batch_size=config.batch_size, workers=config.workers, shuffle=True, seed=config.seed, epoch=epoch)
            seen = correct = 0
            loss_sum = 0.0
            for index, (images, labels) in enumerate(batches):
                images, labels = images.to(device), labels.to(device)
                optimizer.zero_grad(set_to_none=True)
                logits = model(images)
                loss = cross_entropy(logits, labels)
                loss.backward()
                hooks.after_backward(model)
                optimizer.step()
                hooks.after_step(model)
                seen += labels.numel()
                correct += int((logits.argmax(1) == labels).sum())
                loss_sum += float(loss.detach()) * labels.numel()
                if progress:
                    progress(stage, epoch + 1, config.epochs, index + 1, len(batches), loss_sum / seen, correct / seen)
            checkpoint(epoch + 1)
    except KeyboardInterrupt:
        checkpoint(epoch)  # the interrupted epoch restarts from these weights on --resume
        raise
    model.cpu()


def _state_of(model: "torch.nn.Module") -> "OrderedDict[str, torch.Tensor]":
    return OrderedDict((k, v.detach().cpu().clone()) for k, v in model.state_dict().items())


def _resume_point(config: TrainConfig, stage: str) -> Optional[dict[str, Any]]:
    if not config.resume:
        return None
    ckpt = load_checkpoint(config.checkpoint)
    if not isinstance(ckpt, dict) or ckpt.get("format") != "alexcompress-checkpoint":
        raise AlexCompressError(f"{config.checkpoint}: not an alexcompress checkpoint")
    if ckpt.get("stage") != stage:
        raise AlexCompressError(f"{config.checkpoint}: is a checkpoint of '{ckpt.get('stage')}', not of '{stage}'")
    return ckpt


def retrain_pruned(
    state: "OrderedDict[str, torch.Tensor]",
    arch: str,
    dataset: "Dataset",
    config: TrainConfig,
    *,
    prune_round: Optional[Callable[[Any, int], Any]] = None,
    rounds: int = 1,
    progress: Optional[ProgressHook] = None,
) -> "OrderedDict[str, torch.Tensor]":
    """Masked retraining of a pruned state dict. With `prune_round(state, r)` and `rounds` > 1, iterative
    pruning: round r (1..rounds) prunes to the r-th step of the schedule, then retrains `config.epochs`."""
    config.validate()
    ckpt = _resume_point(config, "retrain")
    first_round = int(ckpt["round"]) if ckpt else 1
    for r in range(first_round, rounds + 1):
        resuming = ckpt is not None and r == first_round
        if resuming:
            state = OrderedDict(ckpt["model"])
        elif prune_round is not None:
            state = prune_round(state, r)
        model = build_model(state, arch).to(resolve_device(config.device))
        hooks = MaskedRetraining(model, set(compressible_keys(state, arch)), ckpt["masks"] if resuming else None)
        _train(
            model,
            hooks,
            dataset,
            config,
            stage="retrain",
            round_index=r,
            start_epoch=int(ckpt["epoch"]) if resuming else 0,
            optimizer_state=ckpt["optimizer"] if resuming else None,
            rng_state=ckpt["rng"] if resuming else None,
            progress=progress,
        )
        state = _state_of(model)
    return state


def finetune_centroids(
    state: "OrderedDict[str, torch.Tensor]",
    arch: str,
    dataset: "Dataset",
    config: TrainConfig,
    *,
    progress: Optional[ProgressHook] = None,
) -> "OrderedDict[str, torch.Tensor]":
    """Trained quantization: fine-tune the centroids of a quantized state dict (assignments fixed)."""
    config.validate()
    ckpt = _resume_point(config, "centroids")
    model = build_model(OrderedDict(ckpt["model"]) if ckpt else state, arch).to(resolve_device(config.device))
    coded = set(compressible_keys(state, arch))
    hooks = CentroidFinetuning(model, coded, ckpt["assignments"] if ckpt else None, ckpt["centroids"] if ckpt else None)
    _train(
        model,
        hooks,
        dataset,
        config,
        stage="centroids",
        start_epoch=int(ckpt["epoch"]) if ckpt else 0,
        optimizer_state=ckpt["optimizer"] if ckpt else None,
        rng_state=ckpt["rng"] if ckpt else None,
        progress=progress,
    )
    return _state_of(model)


def default_checkpoint(output: str) -> Optional[str]:
    """`out.pt` -> `out.pt.ckpt` beside it; none for stdout."""
    return None if output == "-" else os.fspath(output) + ".ckpt"
