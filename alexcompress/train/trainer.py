"""Retraining: masked fine-tuning after pruning, and centroid fine-tuning after quantization (paper §3.3).

Masked retraining keeps pruned weights at exactly zero: gradients are masked before the optimizer step and
the mask is re-applied after it, so momentum, Adam's moments and weight decay cannot resurrect a weight.

Centroid fine-tuning trains the codebook, not the weights: the gradient of centroid k is the sum of the
gradients of the weights assigned to it, dL/dC_k = sum_ij dL/dW_ij 1(I_ij = k); assignments and zeros stay
fixed, so every layer keeps at most 2**bits distinct values and `encode` takes the result.

The recipe is the caller's (`TrainConfig`): optimizer, learning-rate schedule with warm-up, weight decay,
label smoothing. With a validation set, every epoch is evaluated (and the starting point, epoch 0), the
best epoch is what comes out (`keep="last"` opts out), and `patience` stops early. Best is the higher
top-1, and on a tie the lower validation loss: on a small validation set top-1 moves in steps of one image
and ties are the rule, so retraining that lowers the loss is not thrown away for the unretrained start. A checkpoint is
written after every epoch, every `checkpoint_every` batches and on Ctrl-C, and removed when the run succeeds
(`keep_checkpoint` keeps it); `resume` continues the same run, mid-epoch included: batches depend only on
(seed, epoch), the sampler restarts at the saved batch and the RNG states are saved, so a resumed run
matches an unbroken one.

Under torchrun (`distributed`), the model is wrapped in DistributedDataParallel and each rank reads its
share of every global batch; the hooks act on the averaged gradients, so all ranks stay identical.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Optional

from alexcompress.errors import AlexCompressError
from alexcompress.fileio import interrupts_deferred
from alexcompress.models.state import build_model, compressible_keys
from alexcompress.train.checkpoint import (
    _finished,
    _restore_rng,
    _resume_point,
    _save_checkpoint,
    _tensors,
)
from alexcompress.train.config import TrainConfig
from alexcompress.train.data import batches_per_epoch, loader
from alexcompress.train.distributed import all_sum, check_agreement, current, gather, rank_device, reconcile_buffers
from alexcompress.train.evaluate import forward
from alexcompress.train.hooks import CentroidFinetuning, Hooks, MaskedRetraining, RegrowingRetraining
from alexcompress.train.log import EpochSummary, SilentLog, TrainingLog

if TYPE_CHECKING:
    import torch
    from torch.utils.data import Dataset

    from alexcompress.train.evaluate import Accuracy


def _make_optimizer(params: list, config: TrainConfig) -> "torch.optim.Optimizer":
    import torch

    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def validation_top1(model: "torch.nn.Module", validation: "Dataset", config: TrainConfig) -> float:
    """Global validation top-1: each rank evaluates its shard, the counts are summed over the ranks."""
    return validation_score(model, validation, config).top1


def validation_score(model: "torch.nn.Module", validation: "Dataset", config: TrainConfig) -> "Accuracy":
    """Global validation top-1 and loss: each rank evaluates its shard, the totals are summed over the ranks."""
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
    return result


class Trainer:
    """One training run of `model`, in place: `config.epochs` epochs (from a checkpoint's epoch and batch
    when resuming); with a validation set, the best epoch's weights are what it leaves in the model unless
    `config.keep == "last"`.

    Under torchrun the model runs wrapped in DistributedDataParallel: `config.batch_size` is the global
    batch, split evenly over the ranks; gradients are averaged by DDP before the hooks mask or group them,
    so every rank applies the same update; rank 0 alone logs and writes checkpoints."""

    def __init__(
        self,
        model: "torch.nn.Module",
        hooks: Hooks,
        dataset: "Dataset",
        config: TrainConfig,
        *,
        stage: str,
        validation: "Optional[Dataset]" = None,
        round_index: int = 0,
        start_competes: bool = True,
        resume_from: Optional[dict[str, Any]] = None,
        log: Optional[TrainingLog] = None,
    ) -> None:
        import torch

        from alexcompress.train.global_batch import DropoutClock, for_training

        self.model, self.hooks, self.dataset, self.config, self.stage = model, hooks, dataset, config, stage
        self.validation, self.round_index, self.start_competes = validation, round_index, start_competes
        self.group = current()
        self.log = (log or SilentLog()) if self.group.is_main else SilentLog()
        self.device = next(model.parameters()).device  # callers move the model before building its hooks
        if config.batch_size % self.group.world:
            raise AlexCompressError(
                f"batch size {config.batch_size} is the global batch: it must be a multiple of the {self.group.world} processes"
            )
        self.per_rank = config.batch_size // self.group.world
        self.amp_dtype = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[config.amp]
        if config.amp == "fp16" and self.device.type != "cuda":
            raise AlexCompressError("--amp fp16 needs CUDA (bf16 autocast also runs on the CPU)")
        self.clock = DropoutClock(config.seed)
        for_training(model, self.clock, distributed=self.group.active)  # before DDP and the optimizer: same parameters
        self.net = self._data_parallel() if self.group.active else model
        self.optimizer = _make_optimizer(hooks.parameters(model), config)
        self.scaler = torch.amp.GradScaler("cuda") if config.amp == "fp16" else None
        ckpt = resume_from or {}
        self._resume(ckpt)
        self.start_epoch, self.start_batch = int(ckpt.get("epoch", 0)), int(ckpt.get("batch", 0))
        self.best: Optional[dict[str, Any]] = ckpt.get("best")  # {"epoch", "top1", "loss", "model"}
        self.stale = int(ckpt.get("stale", 0))
        partials = ckpt.get("partial") or [(0, 0, 0.0, 0.0)] * self.group.world  # per rank: seen, correct, loss sum, seconds
        # where the run stands: the epoch, its batches done, this rank's running totals (what a checkpoint saves)
        self.epoch, self.done, self.totals = self.start_epoch, self.start_batch, tuple(partials[self.group.rank])

    def step(self, images: "torch.Tensor", labels: "torch.Tensor", lr: float) -> "tuple[torch.Tensor, torch.Tensor]":
        """One optimizer step on a batch: (loss, logits)."""
        import torch
        from torch.nn.functional import cross_entropy

        for g in self.optimizer.param_groups:
            g["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            logits = forward(self.net, images)
        loss = cross_entropy(logits.float(), labels, label_smoothing=self.config.label_smoothing)
        scale = float(self.scaler.get_scale()) if self.scaler is not None else 1.0  # what the gradients are scaled by
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        self.hooks.after_backward(self.model)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.hooks.after_step(self.model, lr, scale)
        return loss, logits

    def run(self) -> None:
        """Every epoch left; on Ctrl-C a checkpoint of the exact point (one process) and the interrupt again."""
        if self.validation is not None and self.best is None:
            score = validation_score(self.model, self.validation, self.config)
            self.log.note(f"{self.stage}: validation top-1 before retraining {score.top1:.2%} (loss {score.loss:.4f})")
            # the starting point competes too (retraining must earn its keep), except where the run is one
            # round of several: the next round prunes from what this one trained, so its retraining stays
            start = _state_of(self.model) if self.start_competes else None
            self.best = {"epoch": 0, "top1": score.top1 if start else -1.0, "loss": score.loss if start else math.inf, "model": start}
        try:
            for epoch in range(self.start_epoch, self.config.epochs):
                if not self._epoch(epoch):
                    break
        except KeyboardInterrupt:
            if self.group.active:  # a collective now could wait for a rank that is already gone
                self.log.note(f"{self.stage}: interrupted; --resume continues from the last checkpoint written")
            else:
                self.checkpoint(self.epoch, self.done, self.totals)  # exact: the interrupt landed between two steps
            raise
        if self.best is not None and self.best["model"] is not None and self.config.keep == "best":
            self.model.load_state_dict(self.best["model"])
            which = "the starting point (epoch 0)" if self.best["epoch"] == 0 else f"epoch {self.best['epoch']}"
            self.log.note(f"{self.stage}: keeping {which}, validation top-1 {self.best['top1']:.2%} (loss {self.best['loss']:.4f})")
        self.model.cpu()

    def _epoch(self, epoch: int) -> bool:
        """One epoch (from the saved batch when resuming inside it), its summary and checkpoint; False when
        patience says stop."""
        config, group, stage = self.config, self.group, self.stage
        self.epoch = epoch
        self.model.train()
        first = self.start_batch if epoch == self.start_epoch else 0
        if epoch > 0 and first == 0:
            note = self.hooks.epoch_start(self.model)
            if note:
                self.log.note(f"{stage} epoch {epoch + 1}: {note}")
        batches = loader(
            self.dataset,
            batch_size=self.per_rank,
            workers=config.workers,
            shuffle=True,
            seed=config.seed,
            epoch=epoch,
            rank=group.rank,
            world=group.world,
            start_batch=first,
            pin_memory=self.device.type == "cuda",
        )
        steps = batches_per_epoch(len(self.dataset), self.per_rank, group.world)  # type: ignore[arg-type]
        seen, correct, loss_sum, before = self.totals if first else (0, 0, 0.0, 0.0)
        started, self.done = time.perf_counter(), first
        for index, (images, labels) in enumerate(batches, start=first):
            images, labels = images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
            with interrupts_deferred():  # a step is applied whole: an interrupt lands between steps
                self.clock.step(epoch, index)
                loss, logits = self.step(images, labels, config.lr * config.lr_factor(epoch * steps + index, steps))
                seen += labels.numel()
                correct += int((logits.argmax(1) == labels).sum())
                loss_sum += float(loss.detach()) * labels.numel()
                self.done = index + 1
                self.totals = (seen, correct, loss_sum, before + time.perf_counter() - started)
            rate = group.world * (seen - first * self.per_rank) / max(time.perf_counter() - started, 1e-9)
            self.log.batch(stage, epoch + 1, config.epochs, index + 1, steps, loss_sum / seen, correct / seen, rate)
            if config.checkpoint_every and self.done % config.checkpoint_every == 0 and self.done < steps:
                self.checkpoint(epoch, self.done, self.totals)
        seconds = before + time.perf_counter() - started
        seen, correct, loss_sum = all_sum([seen, correct, loss_sum])  # the epoch over all ranks
        reconcile_buffers(self.model)
        check_agreement([*self.model.parameters(), *_tensors(self.hooks.state())], f"{stage} epoch {epoch + 1}")
        val_top1 = self._validate(epoch)
        self.log.epoch(
            stage,
            EpochSummary(
                epoch + 1,
                config.epochs,
                loss_sum / max(seen, 1),
                correct / max(seen, 1),
                seen / max(seconds, 1e-9),
                seconds,
                val_top1,
                self.best["epoch"] if self.best else None,
            ),
        )
        self.done, self.totals = 0, (0, 0, 0.0, 0.0)
        self.checkpoint(epoch + 1, 0, None)
        if config.patience is not None and self.validation is not None and self.stale >= config.patience:
            self.log.note(f"{stage}: no better validation top-1 for {self.stale} epochs: stopping early after epoch {epoch + 1}")
            return False
        return True

    def _validate(self, epoch: int) -> Optional[float]:
        """Validation top-1 after `epoch`, kept as the best when it beats every earlier one (None without a
        validation set)."""
        if self.validation is None or self.best is None:
            return None
        score = validation_score(self.model, self.validation, self.config)
        if better(score.top1, score.loss, self.best["top1"], self.best.get("loss", math.inf)):
            self.best, self.stale = {"epoch": epoch + 1, "top1": score.top1, "loss": score.loss, "model": _state_of(self.model)}, 0
        else:
            self.stale += 1
        return score.top1

    def checkpoint(self, next_epoch: int, batch: int, partial: Optional[tuple]) -> None:
        """Every rank calls this at the same point (it gathers the ranks' RNG states); rank 0 writes."""
        import torch

        config, device = self.config, self.device
        if not config.checkpoint:
            return
        rngs = gather(torch.get_rng_state())
        cuda_rngs = gather(torch.cuda.get_rng_state(device)) if device.type == "cuda" else None
        partials = gather(partial) if partial is not None else None
        if not self.group.is_main:
            return
        _save_checkpoint(
            config.checkpoint,
            {
                "format": "alexcompress-checkpoint",
                "stage": self.stage,
                "round": self.round_index,
                "epoch": next_epoch,
                "batch": batch,  # batches of `next_epoch` already done (0: it starts afresh)
                "partial": partials,
                "world": self.group.world,
                "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "rng": rngs,
                "cuda_rng": cuda_rngs,
                "best": self.best,
                "stale": self.stale,
                "config": {k: v for k, v in asdict(config).items() if k not in ("checkpoint", "resume", "keep_checkpoint")},
                **self.hooks.state(),
            },
        )

    def _data_parallel(self) -> "torch.nn.Module":
        from inspect import signature

        from torch.nn.parallel import DistributedDataParallel

        from alexcompress.train.global_batch import random_layers_left

        left = random_layers_left(self.model)
        if left:
            self.log.note(
                f"{self.stage}: {', '.join(left)} draw from each process's own generator: "
                f"{self.group.world} processes are not one process's steps"
            )
        # buffers (batch-norm running statistics) evolve identically on every rank with GlobalBatchNorm and are
        # reconciled at each epoch's end: no broadcast of rank 0's before every forward
        parameters = signature(DistributedDataParallel).parameters
        no_sync = {"forward_sync_buffers" if "forward_sync_buffers" in parameters else "broadcast_buffers": False}
        device = self.device
        return DistributedDataParallel(self.model, device_ids=[device.index] if device.type == "cuda" else None, **no_sync)

    def _resume(self, ckpt: dict[str, Any]) -> None:
        import torch

        group = self.group
        if not ckpt:
            # what still draws from torch's generator (random augmentation, layers other than nn.Dropout) differs between ranks
            torch.manual_seed(self.config.seed + 1_000_003 * group.rank)
            return
        if int(ckpt.get("batch", 0)) and int(ckpt.get("world", 1)) != group.world:
            raise AlexCompressError(
                f"{self.config.checkpoint}: taken mid-epoch by {ckpt.get('world', 1)} processes; resume it with the same number ({group.world} now)"
            )
        try:
            self.optimizer.load_state_dict(ckpt["optimizer"])
            _restore_rng(ckpt, group.rank, self.device)
            if self.scaler is not None and ckpt.get("scaler"):
                self.scaler.load_state_dict(ckpt["scaler"])
        except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as exc:  # torch's own checks of the states
            raise AlexCompressError(
                f"{self.config.checkpoint}: its optimizer or RNG state does not fit this run ({' '.join(str(exc).split())[:160]})"
            ) from None


def better(top1: float, loss: float, best_top1: float, best_loss: float) -> bool:
    """Whether a validation score beats the best so far: a higher top-1, or the same top-1 at a lower loss
    (the measure of small validation sets, where top-1 moves in whole images and ties are the rule).

    >>> better(0.9, 0.5, 0.9, 0.6), better(0.9, 0.7, 0.9, 0.6), better(0.91, 9.0, 0.9, 0.1)
    (True, False, True)
    """
    return top1 > best_top1 or (top1 == best_top1 and loss < best_loss)


def _train(model: "torch.nn.Module", hooks: Hooks, dataset: "Dataset", config: TrainConfig, **options: Any) -> None:
    """`Trainer(...).run()`: train `model` in place (see `Trainer`)."""
    Trainer(model, hooks, dataset, config, **options).run()


def _state_of(model: "torch.nn.Module") -> "OrderedDict[str, torch.Tensor]":
    return OrderedDict((k, v.detach().cpu().clone()) for k, v in model.state_dict().items())


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
            start_competes=r == rounds,  # rounds build on each other: an earlier round keeps its retraining
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
