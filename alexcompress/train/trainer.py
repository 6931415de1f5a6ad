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


def _make_optimizer(params: list, config: TrainConfig) -> "torch.optim.Optimizer":
    import torch

    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


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
    hooks: Hooks,
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
