"""What a training run does: the recipe (optimizer, schedule, warm-up, label smoothing), validation and
keeping the best epoch, checkpoints and resuming; every field checked by `validate`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from alexcompress.errors import AlexCompressError

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
