"""What every command shares: the Typer app, the one-line error handling, the console, and printing helpers."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Optional, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from alexcompress.cli.text import printable
from alexcompress.errors import AlexCompressError
from alexcompress.fileio import (
    STDIO,
    Terminated,
    stop_requested,
    write_output,
)
from alexcompress.sources import InferenceModel, ModelInput

if TYPE_CHECKING:
    from alexcompress.cli.options import ImageOptions, TrainOptions

if TYPE_CHECKING:
    pass

app = typer.Typer(
    name="alexcompress",
    help="Deep Compression for AlexNet and any torchvision model: prune, quantize, Huffman-code into a real .dcz file, and back.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

F = TypeVar("F", bound=Callable[..., Any])


_reported = False  # whether the one error line has been printed


def _error_line(message: str) -> None:
    Console(stderr=True, highlight=False, soft_wrap=True).print(f"alexcompress: error: {printable(message)}", markup=False)


def _fail(message: str, code: int = 1) -> typer.Exit:
    global _reported
    _reported = True
    _error_line(message)
    return typer.Exit(code)


def command(func: F) -> F:
    """Run a subcommand with the project's error contract: one line on stderr, exit 1, no traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            if "seed" in kwargs:  # every command's --seed, checked before anything else
                from alexcompress.models.state import check_seed

                check_seed(kwargs["seed"])
            return func(*args, **kwargs)
        except AlexCompressError as exc:
            raise _fail(_flagged(exc)) from None
        except BrokenPipeError:
            # the reader went away (`| head`): say so once, and keep Python's exit-time flush quiet
            try:
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            except (OSError, ValueError):  # no real stdout (tests, embedding): nothing to quieten
                pass
            raise _fail("output pipe closed before all data was written") from None
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (see main): temporary files are already gone
            raise _fail(*_interrupted(exc)) from None
        except MemoryError:
            raise _fail("out of memory") from None
        except Exception as exc:
            interrupt = stop_requested()
            if interrupt is not None:  # a library (torch.save) turned our interrupt into its own error
                raise _fail(*_interrupted(interrupt)) from None
            if isinstance(exc, OSError):
                where = f"{exc.filename}: " if exc.filename else ""
                raise _fail(f"{where}{exc.strerror or exc}") from None
            raise  # anything else is a bug: let the traceback show

    return wrapper


#: the flag of each library field whose name is not `--` + the field with dashes: errors that name a field
#: (`AlexCompressError.field`) name its flag on the command line
FLAG_OF = {"warmup_epochs": "--warmup"}


def flag_of(field: str) -> str:
    """`batch_size` -> `--batch-size` (and the exceptions in `FLAG_OF`)."""
    return FLAG_OF.get(field, "--" + field.replace("_", "-"))


def _flagged(exc: AlexCompressError) -> str:
    """The error's message, its field (`batch_size must be ...`) named as its flag (`--batch-size must be ...`)."""
    message = str(exc)
    if exc.field is not None and message.startswith(exc.field + " "):
        return flag_of(exc.field) + message[len(exc.field) :]
    return message


def _interrupted(exc: BaseException) -> tuple[str, int]:
    if isinstance(exc, Terminated):
        return f"terminated by {exc.name}", 128 + exc.signum
    return "interrupted", 130


def _console(quiet: bool = False, stderr: bool = True) -> Console:
    # wide enough for the Table-4 report when output is a file or pipe; a terminal keeps its own width
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream is not None and stream.isatty() else 140
    return Console(stderr=stderr, quiet=quiet, highlight=False, width=width)


# ------------------------------------------------------------------------------------------ model input


def _announce(console: Console, source: "ModelInput | InferenceModel") -> None:
    """How the model was read (its architecture's detection, or how a .dcz runs), one line per note."""
    notes = source.notes if isinstance(source, InferenceModel) else [source.note] if source.note else []
    for note in notes:
        console.print(f"{printable(source.label)}: {note}", markup=False)


def _save_state(target: str, state: Any, arch: Optional[str] = None) -> None:
    from alexcompress.models.state import save_state

    write_output(target, lambda handle: save_state(state, handle, arch, target))  # streamed: no 230 MB copy in memory


def _wrote(console: Console, target: str) -> None:
    if target != STDIO:
        console.print(f"wrote {printable(target)} ({os.path.getsize(target):,} bytes)", markup=False)


def _parse_index_bits(text: str) -> Optional[int]:
    from alexcompress.codec.sparse_index import MAX_INDEX_BITS, MIN_INDEX_BITS

    if text == "auto":
        return None
    try:
        value = int(text)
    except ValueError:
        raise AlexCompressError(f"--index-bits must be 'auto' or an integer, got {text!r}") from None
    if not MIN_INDEX_BITS <= value <= MAX_INDEX_BITS:
        raise AlexCompressError(f"--index-bits must be between {MIN_INDEX_BITS} and {MAX_INDEX_BITS}, got {value}")
    return value


_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "tib": 1 << 40,
}


def parse_size(option: str, text: str) -> int:
    """A size in bytes from `5GB`, `500MiB`, `1.5gb` or `4096`; a one-line error naming `option` otherwise.

    >>> parse_size("--shard-size", "1.5GB"), parse_size("--shard-size", "2 MiB")
    (1500000000, 2097152)
    """
    import re

    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise AlexCompressError(f"{option} must be a size such as 2GB, 500MiB or 4096 (bytes), got {text!r}")
    value = int(float(match.group(1)) * _UNITS[unit])
    if value < 1:
        raise AlexCompressError(f"{option} must be at least 1 byte, got {text!r}")
    return value


# ------------------------------------------------------------------------------------------ printing


def _training_log(console: Console, every: int, job: Any) -> Any:
    """Training's progress display while `job` retrains; nothing without one."""
    import contextlib

    from alexcompress.cli.progress import training_log

    return training_log(console, every) if job is not None else contextlib.nullcontext(None)


def _events(console: Console, log: Any, arch: str, *, advice: bool = False) -> Any:
    """An `api.Events` that prints: notes, each pruning's table, allocation probes and the allocation (with
    `advice`, the --layer-bits that quantize should be given)."""
    from alexcompress.api import Events
    from alexcompress.cli.tables import print_allocation

    def allocation(chosen: Any) -> None:
        print_allocation(console, chosen, arch)
        if advice:
            console.print(f"quantize the result with: --layer-bits '{chosen.bits_option()}'", markup=False)

    return Events(
        note=lambda text: console.print(text, markup=False),
        pruned=lambda result: _print_pruning(console, result),
        probe=lambda a, drop: console.print(
            f"allocation at {a.predicted_ratio:.1f}x: validation top-1 {0.0 - drop:+.2f} pp, every layer changed together", markup=False
        ),
        allocation=allocation,
        log=log,
    )


def _print_pruning(console: Console, result: Any) -> None:
    table = Table(title=f"pruning: {result.method}", title_justify="left")
    for column in ("layer", "weights", "kept", "kept %", "threshold"):
        table.add_column(column, justify="left" if column == "layer" else "right")
    for layer in result.layers:
        table.add_row(layer.name, f"{layer.weights:,}", f"{layer.kept:,}", f"{layer.kept_fraction:.2%}", f"{layer.threshold:.8f}")
    console.print(table)
    if result.method.startswith("global") and result.layers:
        console.print(f"Pruning threshold: {result.layers[0].threshold:.8f}")
    console.print(f"Total non-zero weights: {result.kept:,} / {result.weights:,}")
    console.print(f"Achieved sparsity: {result.sparsity:.2%}")


def _print_quantization(console: Console, result: Any) -> None:
    table = Table(title=f"quantization: {result.method}", title_justify="left")
    for column in ("layer", "bits", "nonzeros", "clusters", "mean |error|", "iterations"):
        table.add_column(column, justify="left" if column == "layer" else "right")
    for layer in result.layers:
        table.add_row(
            layer.name, str(layer.bits), f"{layer.nonzeros:,}", str(layer.clusters), f"{layer.mean_abs_error:.3e}", str(layer.iterations)
        )
    console.print(table)


def _print_masks_held(console: Console, state: Any, arch: str) -> None:
    import numpy as np

    from alexcompress.models.state import as_numpy, compressible_keys

    keys = compressible_keys(state, arch)
    kept = sum(int(np.count_nonzero(as_numpy(state[k]))) for k in keys)
    total = sum(as_numpy(state[k]).size for k in keys)
    console.print(f"after retraining: {kept:,} / {total:,} weights nonzero (sparsity {1 - kept / max(total, 1):.2%})")


def _job(training: "TrainOptions | None" = None, device: Optional[str] = None) -> Any:
    """The process group of a data-parallel run under torchrun (see `distributed`) for a command that trains
    (`--data`) or evaluates; a world of one otherwise."""
    import contextlib

    from alexcompress.train.distributed import Group, launched, session

    if training is not None:
        device = training.device if training.data is not None else None
    if device is None and launched().active:  # N processes would each write the same output
        raise AlexCompressError(
            "under torchrun only retraining (--data), eval and sensitivity run data-parallel; run this without torchrun"
        )
    return session(device) if device is not None else contextlib.nullcontext(Group())


def _device(name: str) -> None:
    """--device checked (and for torchrun, this rank's) before a model is read."""
    from alexcompress.train.distributed import rank_device

    rank_device(name, "--device")


def _dataset(root: str, images: ImageOptions) -> Any:
    from alexcompress.train.data import image_folder

    return image_folder(root, images.preprocessing())
