"""What a training run does: the recipe (optimizer, schedule, warm-up, label smoothing), validation and
keeping the best epoch, checkpoints and resuming; every field checked by `validate`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from alexcompress.errors import AlexCompressError, check_range, fail
from alexcompress.models.state import MAX_SEED

OPTIMIZERS = ("sgd", "adam")
AMP = ("off", "bf16", "fp16")
SCHEDULES = ("constant", "step", "cosine")
KEEP = ("best", "last")
MAX_EPOCHS = 100_000
MAX_BATCH = 1 << 20  # images per batch
MAX_WORKERS = 1024


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
    keep: str = "best"  # with a validation set: the best epoch by validation top-1 (ties: lower loss), or the last
    patience: Optional[int] = None  # with a validation set: stop after this many epochs without improvement
    checkpoint: Optional[str] = None  # written every epoch and on Ctrl-C; removed after a successful run
    resume: bool = False
    keep_checkpoint: bool = False
    checkpoint_every: int = 0  # also checkpoint every this many batches (0: after every epoch only)
    amp: str = "off"  # off | bf16 | fp16 (CUDA): autocast of forward and loss
    regrow: bool = False  # masked retraining: pruned weights may come back (RegrowingRetraining)

    def validate(self) -> None:
        """Every field in its range (one error naming the first that is not), then the checkpoint to resume."""
        self.check_ranges()
        if self.resume and not self.checkpoint:
            raise AlexCompressError("resuming needs a checkpoint file")
        if self.resume and not Path(self.checkpoint).exists():
            raise AlexCompressError(f"{self.checkpoint}: no checkpoint to resume from")

    def check_ranges(self) -> None:
        """The fields' ranges alone (no file is looked at)."""
        for field, value, low, high in (
            ("epochs", self.epochs, 0, MAX_EPOCHS),
            ("batch_size", self.batch_size, 1, MAX_BATCH),
            ("workers", self.workers, 0, MAX_WORKERS),
            ("seed", self.seed, 0, MAX_SEED),
            ("step_size", self.step_size, 0, None),
            ("checkpoint_every", self.checkpoint_every, 0, None),
            ("patience", self.patience, 1, None),
        ):
            check_range(field, value, low, high)
        for field, ok, rule, value in (
            ("lr", self.lr > 0 and math.isfinite(self.lr), "must be a positive number", self.lr),
            ("optimizer", self.optimizer in OPTIMIZERS, f"must be one of {', '.join(OPTIMIZERS)}", repr(self.optimizer)),
            ("momentum", 0 <= self.momentum < 1, "must be in [0, 1)", self.momentum),
            ("weight_decay", 0 <= self.weight_decay < 1, "must be in [0, 1)", self.weight_decay),
            ("schedule", self.schedule in SCHEDULES, f"must be one of {', '.join(SCHEDULES)}", repr(self.schedule)),
            (
                "warmup_epochs",
                0 <= self.warmup_epochs <= max(self.epochs, 0),
                f"must be between 0 and the {self.epochs} epochs",
                self.warmup_epochs,
            ),
            ("gamma", 0 < self.gamma <= 1, "must be in (0, 1]", self.gamma),
            ("label_smoothing", 0 <= self.label_smoothing < 1, "must be in [0, 1)", self.label_smoothing),
            ("keep", self.keep in KEEP, f"must be one of {', '.join(KEEP)}", repr(self.keep)),
            ("amp", self.amp in AMP, f"must be one of {', '.join(AMP)}", repr(self.amp)),
        ):
            if not ok:
                raise fail(field, f"{rule}, got {value}")

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
