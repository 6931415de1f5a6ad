"""How training reports on stderr: rich progress bars on a terminal; elsewhere (a batch job, a log file, CI)
one plain, flushed line every N batches and one per epoch, so a log is never empty for minutes."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from rich.console import Console

from alexcompress.train.log import EpochSummary, SilentLog


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def _epoch_line(stage: str, s: EpochSummary) -> str:
    line = f"{stage} epoch {s.epoch}/{s.epochs} done: loss {s.loss:.4f}  train acc {s.accuracy:.2%}  {s.images_per_second:.0f} img/s  {_duration(s.seconds)}"
    if s.val_top1 is not None:
        best = "start" if s.best_epoch == 0 else f"epoch {s.best_epoch}"
        line += f"  val top-1 {s.val_top1:.2%} (best: {best})"
    return line


class PlainLog:
    """One line per `every` batches (and the last of each epoch) and per epoch, with an ETA for the stage."""

    def __init__(self, stream: TextIO | None = None, every: int = 50) -> None:
        self.stream, self.every = stream or sys.stderr, max(1, every)
        self.started: dict[str, float] = {}
        self.done: dict[str, int] = {}

    def __enter__(self) -> PlainLog:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def batch(
        self, stage: str, epoch: int, epochs: int, batch: int, batches: int, loss: float, accuracy: float, images_per_second: float
    ) -> None:
        self.started.setdefault(stage, time.perf_counter())
        self.done[stage] = self.done.get(stage, 0) + 1
        if batch % self.every and batch != batches:
            return
        elapsed = time.perf_counter() - self.started[stage]
        remaining = (batches - batch) + (epochs - epoch) * batches
        eta = elapsed / self.done[stage] * remaining
        self._print(
            f"{stage} epoch {epoch}/{epochs} step {batch}/{batches}: loss {loss:.4f}  acc {accuracy:.2%}  "
            f"{images_per_second:.0f} img/s  ETA {_duration(eta)}"
        )

    def epoch(self, stage: str, summary: EpochSummary) -> None:
        self._print(_epoch_line(stage, summary))

    def note(self, text: str) -> None:
        self._print(text)


class RichLog:
    """rich progress bars, one per stage and epoch, with the epoch summaries printed above them."""

    def __init__(self, console: Console) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.console = console
        self.display = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self.tasks: dict[tuple[str, int], Any] = {}

    def __enter__(self) -> RichLog:
        self.display.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.display.__exit__(*exc)

    def batch(
        self, stage: str, epoch: int, epochs: int, batch: int, batches: int, loss: float, accuracy: float, images_per_second: float
    ) -> None:
        key = (stage, epoch)
        if key not in self.tasks:
            self.tasks[key] = self.display.add_task(f"{stage} epoch {epoch}/{epochs}", total=batches, stats="")
        stats = f"loss {loss:.4f}  acc {accuracy:.2%}  {images_per_second:.0f} img/s"
        self.display.update(self.tasks[key], completed=batch, stats=stats)

    def epoch(self, stage: str, summary: EpochSummary) -> None:
        self.console.print(_epoch_line(stage, summary))

    def note(self, text: str) -> None:
        self.console.print(text)


def training_log(console: Console, every: int = 50) -> Any:
    """The log for this stderr: rich on a terminal, plain lines otherwise, nothing with --quiet. A context
    manager (rich needs to start and stop its live display)."""
    if console.quiet:
        return SilentLog()
    stream = sys.stderr
    if stream is not None and stream.isatty():
        return RichLog(console)
    return PlainLog(stream, every)
