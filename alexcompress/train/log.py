"""Where training reports to: an epoch's summary, the `TrainingLog` protocol, and the silent log."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Protocol


@dataclass(frozen=True)
class EpochSummary:
    epoch: int
    epochs: int
    loss: float
    accuracy: float  # running training accuracy over the epoch
    images_per_second: float
    seconds: float
    val_top1: Optional[float] = None
    best_epoch: Optional[int] = None  # the best so far by validation top-1, ties by loss (0: the starting point)


class TrainingLog(Protocol):
    """Where training reports to (the CLI: rich progress on a terminal, plain lines elsewhere)."""

    def batch(
        self, stage: str, epoch: int, epochs: int, batch: int, batches: int, loss: float, accuracy: float, images_per_second: float
    ) -> None: ...

    def epoch(self, stage: str, summary: EpochSummary) -> None: ...

    def note(self, text: str) -> None: ...


class SilentLog:
    """A log that says nothing (also a context manager, like the command line's logs)."""

    def batch(self, *args: Any) -> None:
        pass

    def epoch(self, stage: str, summary: EpochSummary) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def __enter__(self) -> "SilentLog":
        return self

    def __exit__(self, *exc: object) -> None:
        pass
