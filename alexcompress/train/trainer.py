"""Retraining: masked fine-tuning after pruning, and centroid fine-tuning after quantization (paper §3.3).

Masked retraining keeps pruned weights at exactly zero: gradients are masked before the optimizer step and
the mask is re-applied after it, so momentum, Adam's moments and weight decay cannot resurrect a weight.

Centroid fine-tuning trains the codebook, not the weights: the gradient of centroid k is the sum of the
gradients of the weights assigned to it, dL/dC_k = sum_ij dL/dW_ij 1(I_ij = k); assignments and zeros stay
fixed, so every layer keeps at most 2**bits distinct values and `encode` takes the result.

The recipe is the caller's (`TrainConfig`): optimizer, learning-rate schedule with warm-up, weight decay,
label smoothing. With a validation set, every epoch is evaluated (and the starting point, epoch 0), the
best epoch by top-1 is what comes out (`keep="last"` opts out), and `patience` stops early. A checkpoint is
written after every epoch, every `checkpoint_every` batches and on Ctrl-C, and removed when the run succeeds
(`keep_checkpoint` keeps it); `resume` continues the same run, mid-epoch included: batches depend only on
(seed, epoch), the sampler restarts at the saved batch and the RNG states are saved, so a resumed run
matches an unbroken one.

Under torchrun (`distributed`), the model is wrapped in DistributedDataParallel and each rank reads its
share of every global batch; the hooks act on the averaged gradients, so all ranks stay identical.
"""

from __future__ import annotations

import math
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Protocol

from alexcompress.errors import AlexCompressError
from alexcompress.fileio import interrupts_deferred
from alexcompress.models.state import build_model, compressible_keys
from alexcompress.train.data import batches_per_epoch, loader
from alexcompress.train.distributed import all_sum, check_agreement, current, gather, rank_device, reconcile_buffers
from alexcompress.train.evaluate import forward

if TYPE_CHECKING:
    import torch
    from torch.utils.data import Dataset

OPTIMIZERS = ("sgd", "adam")
AMP = ("off", "bf16", "fp16")
SCHEDULES = ("constant", "step", "cosine")
KEEP = ("best", "last")


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
    schedule: str = "constant"  # constant | step (x gamma every step_size epochs) | cosine (to 0 at the end)
    warmup_epochs: float = 0.0  # linear warm-up of the learning rate from 0, by step
    step_size: int = 0  # epochs between decays of the step schedule; 0: a third of the run
    gamma: float = 0.1
    label_smoothing: float = 0.0
    keep: str = "best"  # with a validation set: the best epoch by validation top-1, or the last
    patience: Optional[int] = None  # with a validation set: stop after this many epochs without improvement
    checkpoint: Optional[str] = None  # written every epoch and on Ctrl-C; removed after a successful run
    resume: bool = False
    keep_checkpoint: bool = False
    checkpoint_every: int = 0  # also checkpoint every this many batches (0: after every epoch only)
    amp: str = "off"  # off | bf16 | fp16 (CUDA): autocast of forward and loss
    regrow: bool = False  # masked retraining: pruned weights may come back (RegrowingRetraining)

    def validate(self) -> None:
        checks = [
            (self.epochs >= 0, f"epochs must be >= 0, got {self.epochs}"),
            (self.lr > 0 and math.isfinite(self.lr), f"learning rate must be a positive number, got {self.lr}"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"),
            (0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}"),
            (0 <= self.weight_decay < 1, f"weight decay must be in [0, 1), got {self.weight_decay}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"),
            (
                0 <= self.warmup_epochs <= max(self.epochs, 0),
                f"warm-up must be between 0 and the {self.epochs} epochs, got {self.warmup_epochs}",
            ),
            (self.step_size >= 0, f"step size must be >= 0 epochs, got {self.step_size}"),
            (0 < self.gamma <= 1, f"gamma must be in (0, 1], got {self.gamma}"),
            (0 <= self.label_smoothing < 1, f"label smoothing must be in [0, 1), got {self.label_smoothing}"),
            (self.keep in KEEP, f"keep must be one of {', '.join(KEEP)}, got {self.keep!r}"),
            (self.patience is None or self.patience >= 1, f"patience must be at least 1 epoch, got {self.patience}"),
            (self.checkpoint_every >= 0, f"checkpoint interval must be >= 0 batches, got {self.checkpoint_every}"),
            (self.amp in AMP, f"amp must be one of {', '.join(AMP)}, got {self.amp!r}"),
            (self.batch_size >= 1, f"batch size must be at least 1, got {self.batch_size}"),
        ]
        for ok, message in checks:
            if not ok:
                raise AlexCompressError(message)
        if self.resume and not self.checkpoint:
            raise AlexCompressError("resuming needs a checkpoint file")
        if self.resume and not Path(self.checkpoint).exists():
            raise AlexCompressError(f"{self.checkpoint}: no checkpoint to resume from")

    def lr_factor(self, step: int, steps_per_epoch: int) -> float:
        """The learning rate at optimizer step `step` (from 0) as a fraction of `lr`.

        >>> c = TrainConfig(epochs=4, schedule="cosine", warmup_epochs=1)
        >>> [round(c.lr_factor(s, 10), 3) for s in (0, 9, 10, 25, 39)]
        [0.1, 1.0, 1.0, 0.5, 0.003]
        """
        position = step / steps_per_epoch  # in epochs
        warmup_steps = self.warmup_epochs * steps_per_epoch
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if self.schedule == "step":
            size = self.step_size or max(1, self.epochs // 3)
            return self.gamma ** int(position // size)
        if self.schedule == "cosine":
            span = max(self.epochs - self.warmup_epochs, 1e-9)
            return 0.5 * (1 + math.cos(math.pi * min((position - self.warmup_epochs) / span, 1.0)))
        return 1.0


@dataclass(frozen=True)
class EpochSummary:
    epoch: int
    epochs: int
    loss: float
    accuracy: float  # running training accuracy over the epoch
    images_per_second: float
    seconds: float
    val_top1: Optional[float] = None
    best_epoch: Optional[int] = None  # the best so far by validation top-1 (0: the starting point)


class TrainingLog(Protocol):
    """Where training reports to (the CLI: rich progress on a terminal, plain lines elsewhere)."""

    def batch(
        self, stage: str, epoch: int, epochs: int, batch: int, batches: int, loss: float, accuracy: float, images_per_second: float
    ) -> None: ...

    def epoch(self, stage: str, summary: EpochSummary) -> None: ...

    def note(self, text: str) -> None: ...


class SilentLog:
    def batch(self, *args: Any) -> None:
        pass

    def epoch(self, stage: str, summary: EpochSummary) -> None:
        pass

    def note(self, text: str) -> None:
        pass


class _Hooks:
    """What a training stage does around the optimizer: which parameters it trains, and the fix-ups.
    `_train` sets `optimizer` and `scaler` (None without fp16) before the first step."""

    optimizer: Any = None
    scaler: Any = None

    def parameters(self, model: "torch.nn.Module") -> list:
        raise NotImplementedError

    def after_backward(self, model: "torch.nn.Module") -> None:
        pass

    def after_step(self, model: "torch.nn.Module") -> None:
        pass

    def epoch_start(self, model: "torch.nn.Module") -> Optional[str]:
        """Called on every rank before each epoch but the run's first (not again when resuming inside an
        epoch); may return a line for the log."""
        return None

    def state(self) -> dict[str, Any]:
        return {}


class MaskedRetraining(_Hooks):
    """Train every parameter; pruned weights (zeros at the start) stay exactly zero.

    Gradients are masked before the (synchronised) optimizer step, so a pruned weight never moves and stays
    +0.0 (a weight re-masked after moving would come back as -0.0 where it went negative), and the mask is
    applied once more after the step as a guarantee. The masks multiply as float tensors: a boolean mask
    costs a conversion on every multiply (fc6: 56 ms against 9 ms on two cores)."""

    def __init__(self, model: "torch.nn.Module", coded: "set[str]", masks: "Optional[dict[str, torch.Tensor]]" = None) -> None:
        params = dict(model.named_parameters())
        self.masks = masks if masks is not None else {key: (p.detach() != 0) for key, p in params.items() if key in coded}
        self._params = [(params[key], mask.to(device=params[key].device, dtype=params[key].dtype)) for key, mask in self.masks.items()]

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


class RegrowingRetraining(MaskedRetraining):
    """Masked retraining in which pruned weights may come back (dynamic network surgery, Guo et al. 2016;
    CLIP-Q, Tung & Mori 2018).

    Every coded layer keeps a dense shadow of its weights. The forward pass and the optimizer see only the
    kept weights (as in MaskedRetraining); a pruned weight's shadow moves by plain gradient descent on the
    gradient taken at the masked point (straight through the mask), at the current learning rate. Before
    each epoch but a round's first the mask is chosen again: the same number of weights per layer, now
    those with the largest shadow magnitudes, so a pruned weight whose gradient kept pushing it out returns
    and the weakest kept one leaves; the epoch then trains with the new mask. Kept counts, hence the
    compressed size, do not change. The shadow starts from `shadow` (the weights before this round's
    pruning) where given, else from the weights.

    Measured on digits, two designs that failed: pruned weights stepped by the optimizer itself (Adam moves
    every weight by about the learning rate per step, whatever its gradient, so a third of fc6's kept weights
    churned per epoch and validation top-1 fell from 94% to 71%); and the mask chosen after an epoch rather
    than before the next (the new weights met the validation untrained: every round kept its start)."""

    def __init__(
        self,
        model: "torch.nn.Module",
        coded: "set[str]",
        masks: "Optional[dict[str, torch.Tensor]]" = None,
        shadow: "Optional[dict[str, torch.Tensor]]" = None,
    ) -> None:
        import torch

        super().__init__(model, coded, masks)
        params = dict(model.named_parameters())
        self.shadow = {}
        for key, mask in self.masks.items():
            p = params[key].detach()
            start = shadow[key].to(device=p.device, dtype=p.dtype) if shadow is not None and key in shadow else p
            self.shadow[key] = torch.where(mask.to(p.device), p, start).clone()
        self._keys = list(self.masks)
        self._pending: dict[str, torch.Tensor] = {}

    def after_backward(self, model: "torch.nn.Module") -> None:
        self._pending = {}
        for key, (param, mask) in zip(self._keys, self._params):
            if param.grad is not None:
                self._pending[key] = param.grad * (1 - mask)  # what the pruned weights would have been told
        super().after_backward(model)

    def after_step(self, model: "torch.nn.Module") -> None:
        import torch

        optimizer, scaler = self.optimizer, self.scaler
        lr = optimizer.param_groups[0]["lr"] if optimizer is not None else 0.0
        scale = float(scaler.get_scale()) if scaler is not None else 1.0
        with torch.no_grad():
            for key, (param, mask) in zip(self._keys, self._params):
                shadow = self.shadow[key]
                grad = self._pending.get(key)
                if grad is not None and bool(torch.isfinite(grad).all()):  # fp16 overflow: the step was skipped
                    shadow.sub_(grad, alpha=lr / scale)
                shadow.copy_(torch.where(mask != 0, param, shadow))
                # +0.0, not param * 0: the optimizer's momentum moves a weight that just left the mask
                param.copy_(torch.where(mask != 0, param, torch.zeros((), dtype=param.dtype, device=param.device)))
        self._pending = {}

    def epoch_start(self, model: "torch.nn.Module") -> Optional[str]:
        import torch

        moved = kept = 0
        with torch.no_grad():
            for i, (key, (param, mask)) in enumerate(zip(self._keys, self._params)):
                k = int(mask.sum())
                magnitude = self.shadow[key].abs().reshape(-1)
                if k == 0 or k == magnitude.numel():
                    continue
                chosen = torch.zeros(magnitude.numel(), dtype=torch.bool, device=magnitude.device)
                chosen[torch.topk(magnitude, k, sorted=False).indices] = True
                chosen &= magnitude > 0  # a weight at exactly zero stays pruned
                new = chosen.reshape(mask.shape)
                moved += int((new & (mask == 0)).sum())
                kept += k
                self.masks[key] = new
                self._params[i] = (param, new.to(param.dtype))
                param.copy_(torch.where(new, self.shadow[key], torch.zeros((), dtype=param.dtype, device=param.device)))
        return f"regrow: {moved:,} pruned weights came back ({moved / max(kept, 1):.2%} of the kept)"

    def state(self) -> dict[str, Any]:
        return {**super().state(), "shadow": {k: v.cpu() for k, v in self.shadow.items()}}


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


def _make_optimizer(params: list, config: TrainConfig) -> "torch.optim.Optimizer":
    import torch

    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def _save_checkpoint(path: str, payload: dict[str, Any]) -> None:
    import torch

    from alexcompress.fileio import write_atomic

    write_atomic(Path(path), lambda handle: torch.save(payload, handle))


def load_checkpoint(path: str) -> dict[str, Any]:
    """A checkpoint's contents, through the same bounds as every model file (`ptfile.check_archive`: no zip
    bomb, no pickle nested or memo-indexed past its size) before torch's weights-only unpickler reads it."""
    import pickle

    import torch

    from alexcompress.models.ptfile import check_archive

    if not Path(path).exists():
        raise AlexCompressError(f"{path}: no such file (a checkpoint to resume from)")
    if not Path(path).is_file():
        raise AlexCompressError(f"{path}: not a regular file (a checkpoint is one)")
    check_archive(path, path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise AlexCompressError(
            f"{path}: not an alexcompress checkpoint (it holds objects other than tensors and plain values, which are never unpickled here)"
        ) from None
    except Exception as exc:
        raise AlexCompressError(f"{path}: not a readable alexcompress checkpoint ({' '.join(str(exc).split())[:200]})") from None


#: what `_train` and the stages read from a checkpoint: field -> (the types it may have, what it is)
_CHECKPOINT_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "round": ((int,), "a round number"),
    "epoch": ((int,), "an epoch number"),
    "batch": ((int,), "a batch number"),
    "world": ((int,), "a process count"),
    "stale": ((int,), "an epoch count"),
    "model": ((dict,), "a state dict"),
    "optimizer": ((dict,), "optimizer state"),
}
_STAGE_FIELDS = {"retrain": ("masks",), "centroids": ("assignments", "centroids")}


def _check_checkpoint_fields(ckpt: dict[str, Any], path: str, stage: str) -> None:
    """Every field the resume reads, of the type and range it needs: one line naming the field otherwise."""
    import torch

    for field, (types, what) in _CHECKPOINT_FIELDS.items():
        value = ckpt.get(field)
        if field in ("round", "world", "stale", "batch") and field not in ckpt:
            continue  # older files lack them; the defaults apply
        if not isinstance(value, types) or isinstance(value, bool):
            raise AlexCompressError(f"{path}: field '{field}' must be {what}, got {type(value).__name__}")
        if isinstance(value, int) and value < (1 if field == "world" else 0):  # centroid fine-tuning writes round 0
            raise AlexCompressError(f"{path}: field '{field}' is out of range ({value})")
    for field in _STAGE_FIELDS.get(stage, ()):
        if not isinstance(ckpt.get(field), dict):
            raise AlexCompressError(f"{path}: field '{field}' is missing (a checkpoint of '{stage}' holds it)")
    rng = ckpt.get("rng")  # one state per rank (files of 0.2.0: one state)
    states = rng if isinstance(rng, (list, tuple)) else [rng]
    if not states or not all(isinstance(t, torch.Tensor) and t.dtype == torch.uint8 for t in states):
        raise AlexCompressError(f"{path}: field 'rng' must hold RNG states (byte tensors)")


def validation_top1(model: "torch.nn.Module", validation: "Dataset", config: TrainConfig) -> float:
    """Global validation top-1: each rank evaluates its shard, the counts are summed over the ranks."""
    from alexcompress.train.evaluate import evaluate

    group = current()
    device = next(model.parameters()).device
    batches = loader(
        validation,
        batch_size=max(config.batch_size // group.world, 64),
        workers=config.workers,
        rank=group.rank,
        world=group.world,
        pad=False,
    )
    result = evaluate(model, batches, device=device)
    model.train()
    return result.top1


def _train(
    model: "torch.nn.Module",
    hooks: _Hooks,
    dataset: "Dataset",
    config: TrainConfig,
    *,
    stage: str,
    validation: "Optional[Dataset]" = None,
    round_index: int = 0,
    resume_from: Optional[dict[str, Any]] = None,
    log: Optional[TrainingLog] = None,
) -> None:
    """Train `model` in place for `config.epochs` (from a checkpoint's epoch and batch when resuming); with a
    validation set, leave the best epoch's weights in it unless `config.keep == "last"`.

    Under torchrun the model runs wrapped in DistributedDataParallel: `config.batch_size` is the global
    batch, split evenly over the ranks; gradients are averaged by DDP before the hooks mask or group them,
    so every rank applies the same update; rank 0 alone logs and writes checkpoints."""
    import torch
    from torch.nn.functional import cross_entropy

    group = current()
    log = (log or SilentLog()) if group.is_main else SilentLog()
    device = next(model.parameters()).device  # callers move the model before building its hooks
    if config.batch_size % group.world:
        raise AlexCompressError(f"batch size {config.batch_size} is the global batch: it must be a multiple of the {group.world} processes")
    per_rank = config.batch_size // group.world
    amp_dtype = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[config.amp]
    if config.amp == "fp16" and device.type != "cuda":
        raise AlexCompressError("--amp fp16 needs CUDA (bf16 autocast also runs on the CPU)")
    from alexcompress.train.global_batch import DropoutClock, for_training, random_layers_left

    clock = DropoutClock(config.seed)
    for_training(model, clock, distributed=group.active)  # before DDP and the optimizer: same parameters
    net = model
    if group.active:
        from inspect import signature

        from torch.nn.parallel import DistributedDataParallel

        left = random_layers_left(model)
        if left:
            log.note(
                f"{stage}: {', '.join(left)} draw from each process's own generator: {group.world} processes are not one process's steps"
            )
        # buffers (batch-norm running statistics) evolve identically on every rank with GlobalBatchNorm and are
        # reconciled at each epoch's end: no broadcast of rank 0's before every forward
        no_sync = {
            "forward_sync_buffers"
            if "forward_sync_buffers" in signature(DistributedDataParallel).parameters
            else "broadcast_buffers": False
        }
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None, **no_sync)
    optimizer = _make_optimizer(hooks.parameters(model), config)
    scaler = torch.amp.GradScaler("cuda") if config.amp == "fp16" else None
    hooks.optimizer, hooks.scaler = optimizer, scaler
    ckpt = resume_from or {}
    if ckpt:
        if int(ckpt.get("batch", 0)) and int(ckpt.get("world", 1)) != group.world:
            raise AlexCompressError(
                f"{config.checkpoint}: taken mid-epoch by {ckpt.get('world', 1)} processes; resume it with the same number ({group.world} now)"
            )
        try:
            optimizer.load_state_dict(ckpt["optimizer"])
            _restore_rng(ckpt, group.rank, device)
            if scaler is not None and ckpt.get("scaler"):
                scaler.load_state_dict(ckpt["scaler"])
        except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as exc:  # torch's own checks of the states
            raise AlexCompressError(
                f"{config.checkpoint}: its optimizer or RNG state does not fit this run ({' '.join(str(exc).split())[:160]})"
            ) from None
    else:
        # what still draws from torch's generator (random augmentation, layers other than nn.Dropout) differs between ranks
        torch.manual_seed(config.seed + 1_000_003 * group.rank)
    start_epoch, start_batch = int(ckpt.get("epoch", 0)), int(ckpt.get("batch", 0))
    best: Optional[dict[str, Any]] = ckpt.get("best")  # {"epoch", "top1", "model"}
    stale = int(ckpt.get("stale", 0))
    if validation is not None and best is None:  # the starting point competes too: retraining must earn its keep
        best = {"epoch": 0, "top1": validation_top1(model, validation, config), "model": _state_of(model)}
        log.note(f"{stage}: validation top-1 before retraining {best['top1']:.2%}")
    epoch, done = start_epoch, start_batch
    partials = ckpt.get("partial") or [(0, 0, 0.0, 0.0)] * group.world  # per rank: seen, correct, loss sum, seconds
    totals = tuple(partials[group.rank])

    def checkpoint(next_epoch: int, batch: int, partial: Optional[tuple]) -> None:
        """Every rank calls this at the same point (it gathers the ranks' RNG states); rank 0 writes."""
        if not config.checkpoint:
            return
        rngs = gather(torch.get_rng_state())
        cuda_rngs = gather(torch.cuda.get_rng_state(device)) if device.type == "cuda" else None
        partials = gather(partial) if partial is not None else None
        if not group.is_main:
            return
        _save_checkpoint(
            config.checkpoint,
            {
                "format": "alexcompress-checkpoint",
                "stage": stage,
                "round": round_index,
                "epoch": next_epoch,
                "batch": batch,  # batches of `next_epoch` already done (0: it starts afresh)
                "partial": partials,
                "world": group.world,
                "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
                "rng": rngs,
                "cuda_rng": cuda_rngs,
                "best": best,
                "stale": stale,
                "config": {k: v for k, v in asdict(config).items() if k not in ("checkpoint", "resume", "keep_checkpoint")},
                **hooks.state(),
            },
        )

    try:
        for epoch in range(start_epoch, config.epochs):
            model.train()
            first = start_batch if epoch == start_epoch else 0
            if epoch > 0 and first == 0:
                note = hooks.epoch_start(model)
                if note:
                    log.note(f"{stage} epoch {epoch + 1}: {note}")
            batches = loader(
                dataset,
                batch_size=per_rank,
                workers=config.workers,
                shuffle=True,
                seed=config.seed,
                epoch=epoch,
                rank=group.rank,
                world=group.world,
                start_batch=first,
                pin_memory=device.type == "cuda",
            )
            steps = batches_per_epoch(len(dataset), per_rank, group.world)
            seen, correct, loss_sum, before = totals if first else (0, 0, 0.0, 0.0)
            started, done = time.perf_counter(), first
            for index, (images, labels) in enumerate(batches, start=first):
                images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
                with interrupts_deferred():  # a step is applied whole: an interrupt lands between steps
                    for g in optimizer.param_groups:
                        g["lr"] = config.lr * config.lr_factor(epoch * steps + index, steps)
                    optimizer.zero_grad(set_to_none=True)
                    clock.step(epoch, index)
                    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                        logits = forward(net, images)
                    loss = cross_entropy(logits.float(), labels, label_smoothing=config.label_smoothing)
                    (scaler.scale(loss) if scaler is not None else loss).backward()
                    hooks.after_backward(model)
                    if scaler is not None:
                        scaler.step(optimizer)
                        scaler.update()
                    else:
                        optimizer.step()
                    hooks.after_step(model)
                    seen += labels.numel()
                    correct += int((logits.argmax(1) == labels).sum())
                    loss_sum += float(loss.detach()) * labels.numel()
                    done = index + 1
                    totals = (seen, correct, loss_sum, before + time.perf_counter() - started)
                rate = group.world * (seen - first * per_rank) / max(time.perf_counter() - started, 1e-9)
                log.batch(stage, epoch + 1, config.epochs, index + 1, steps, loss_sum / seen, correct / seen, rate)
                if config.checkpoint_every and done % config.checkpoint_every == 0 and done < steps:
                    checkpoint(epoch, done, totals)
            seconds = before + time.perf_counter() - started
            seen, correct, loss_sum = all_sum([seen, correct, loss_sum])  # the epoch over all ranks
            reconcile_buffers(model)
            check_agreement([*model.parameters(), *_tensors(hooks.state())], f"{stage} epoch {epoch + 1}")
            val_top1 = None
            if validation is not None:
                val_top1 = validation_top1(model, validation, config)
                if val_top1 > best["top1"]:
                    best, stale = {"epoch": epoch + 1, "top1": val_top1, "model": _state_of(model)}, 0
                else:
                    stale += 1
            log.epoch(
                stage,
                EpochSummary(
                    epoch + 1,
                    config.epochs,
                    loss_sum / max(seen, 1),
                    correct / max(seen, 1),
                    seen / max(seconds, 1e-9),
                    seconds,
                    val_top1,
                    best["epoch"] if best else None,
                ),
            )
            done, totals = 0, (0, 0, 0.0, 0.0)
            checkpoint(epoch + 1, 0, None)
            if config.patience is not None and validation is not None and stale >= config.patience:
                log.note(f"{stage}: no better validation top-1 for {stale} epochs: stopping early after epoch {epoch + 1}")
                break
    except KeyboardInterrupt:
        if group.active:  # a collective now could wait for a rank that is already gone
            log.note(f"{stage}: interrupted; --resume continues from the last checkpoint written")
        else:
            checkpoint(epoch, done, totals)  # exact: the interrupt landed between two steps
        raise
    if best is not None and config.keep == "best":
        model.load_state_dict(best["model"])
        which = "the starting point (epoch 0)" if best["epoch"] == 0 else f"epoch {best['epoch']}"
        log.note(f"{stage}: keeping {which}, validation top-1 {best['top1']:.2%}")
    model.cpu()


def _tensors(value: Any) -> list["torch.Tensor"]:
    """Every tensor in a (nested) dict, list or tuple, in order: what a hook's state holds."""
    import torch

    if isinstance(value, torch.Tensor):
        return [value]
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else ()
    return [t for item in items for t in _tensors(item)]


def _restore_rng(ckpt: dict[str, Any], rank: int, device: "torch.device") -> None:
    import torch

    rngs = ckpt["rng"]  # one state per rank (files of 0.2.0: one); at an epoch boundary the world may differ
    torch.set_rng_state(rngs[rank % len(rngs)] if isinstance(rngs, list) else rngs)
    if device.type == "cuda" and ckpt.get("cuda_rng"):
        torch.cuda.set_rng_state(ckpt["cuda_rng"][rank % len(ckpt["cuda_rng"])], device)


def _state_of(model: "torch.nn.Module") -> "OrderedDict[str, torch.Tensor]":
    return OrderedDict((k, v.detach().cpu().clone()) for k, v in model.state_dict().items())


def _resume_point(config: TrainConfig, stage: str, state: Any) -> Optional[dict[str, Any]]:
    if not config.resume:
        return None
    ckpt = load_checkpoint(config.checkpoint)
    if not isinstance(ckpt, dict) or ckpt.get("format") != "alexcompress-checkpoint":
        raise AlexCompressError(f"{config.checkpoint}: not an alexcompress checkpoint")
    if ckpt.get("stage") != stage:
        raise AlexCompressError(f"{config.checkpoint}: is a checkpoint of '{ckpt.get('stage')}', not of '{stage}'")
    _check_checkpoint_fields(ckpt, config.checkpoint, stage)
    model = ckpt.get("model")
    if not isinstance(model, dict) or list(model) != list(state) or any(tuple(model[k].shape) != tuple(state[k].shape) for k in state):
        raise AlexCompressError(f"{config.checkpoint}: is a checkpoint of another model (its tensors differ from the input's)")
    return ckpt


def _finished(config: TrainConfig) -> None:
    """A successful run leaves no checkpoint behind (741 MB for AlexNet) unless asked to."""
    if config.checkpoint and not config.keep_checkpoint:
        try:
            os.unlink(config.checkpoint)
        except FileNotFoundError:
            pass


def retrain_pruned(
    state: "OrderedDict[str, torch.Tensor]",
    arch: str,
    dataset: "Dataset",
    config: TrainConfig,
    *,
    validation: "Optional[Dataset]" = None,
    prune_round: Optional[Callable[[Any, int], Any]] = None,
    rounds: int = 1,
    log: Optional[TrainingLog] = None,
) -> "OrderedDict[str, torch.Tensor]":
    """Masked retraining of a pruned state dict. With `prune_round(state, r)` and `rounds` > 1, iterative
    pruning: round r (1..rounds) prunes to the r-th step of the schedule, then retrains `config.epochs`.
    With `config.regrow` (RegrowingRetraining) pruned weights may come back before every epoch but a
    round's first, and at every round's pruning, which then ranks the pruned weights by their shadow."""
    import torch

    config.validate()
    ckpt = _resume_point(config, "retrain", state)
    first_round = int(ckpt["round"]) if ckpt else 1
    coded = set(compressible_keys(state, arch))
    shadow = None  # with regrow: the dense weights pruned weights come back from
    for r in range(first_round, rounds + 1):
        resuming = ckpt is not None and r == first_round
        if resuming:
            state = OrderedDict(ckpt["model"])
            shadow = ckpt.get("shadow")
        elif prune_round is not None:
            before = None
            if config.regrow and shadow is None:
                shadow = {key: torch.as_tensor(state[key]).detach().clone() for key in coded}
            elif config.regrow:  # the round prunes from the kept weights and the shadow of the pruned ones
                before = {key: torch.as_tensor(state[key]) != 0 for key in coded}
                state = OrderedDict(
                    (k, torch.where(before[k], torch.as_tensor(v), shadow[k].detach().cpu()) if k in coded else v) for k, v in state.items()
                )
            state = prune_round(state, r)
            if before is not None:
                back = sum(int(((torch.as_tensor(state[k]) != 0) & ~before[k]).sum()) for k in coded)
                (log or SilentLog()).note(f"retrain round {r}: regrow: {back:,} pruned weights came back")
        model = build_model(state, arch).to(rank_device(config.device))
        if config.regrow:
            hooks: MaskedRetraining = RegrowingRetraining(model, coded, ckpt["masks"] if resuming else None, shadow)
            shadow = hooks.shadow
        else:
            hooks = MaskedRetraining(model, coded, ckpt["masks"] if resuming else None)
        _train(
            model,
            hooks,
            dataset,
            config,
            stage="retrain",
            validation=validation,
            round_index=r,
            resume_from=ckpt if resuming else None,
            log=log,
        )
        state = _state_of(model)
    _finished(config)
    return state


def finetune_centroids(
    state: "OrderedDict[str, torch.Tensor]",
    arch: str,
    dataset: "Dataset",
    config: TrainConfig,
    *,
    validation: "Optional[Dataset]" = None,
    log: Optional[TrainingLog] = None,
) -> "OrderedDict[str, torch.Tensor]":
    """Trained quantization: fine-tune the centroids of a quantized state dict (assignments fixed)."""
    config.validate()
    ckpt = _resume_point(config, "centroids", state)
    model = build_model(OrderedDict(ckpt["model"]) if ckpt else state, arch).to(rank_device(config.device))
    coded = set(compressible_keys(state, arch))
    hooks = CentroidFinetuning(model, coded, ckpt["assignments"] if ckpt else None, ckpt["centroids"] if ckpt else None)
    _train(model, hooks, dataset, config, stage="centroids", validation=validation, resume_from=ckpt, log=log)
    _finished(config)
    return _state_of(model)


def default_checkpoint(output: str) -> Optional[str]:
    """`out.pt` -> `out.pt.ckpt` beside the output (never beside the input); none for stdout."""
    return None if output == "-" else os.fspath(output) + ".ckpt"
