"""Where bytes enter and leave: paths or `-` for stdin/stdout, default output names, atomic writes.

An output is written to a hidden temporary file in the target directory, fsynced, then renamed over the
target, so an error, Ctrl-C or SIGTERM never leaves a partial file and never damages an existing one.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Optional, Union

from .errors import AlexCompressError

STDIO = "-"


class Terminated(KeyboardInterrupt):
    """SIGTERM, unwound like Ctrl-C so that atomic writers remove their temporary files on the way out."""


_stop_signal: Optional[int] = None  # set by the handlers: libraries may turn our exception into their own


def install_signal_handlers() -> None:
    """SIGTERM and SIGINT raise (Terminated / KeyboardInterrupt) and are remembered, so that an interrupt
    that torch.save converts into a RuntimeError is still reported, and cleaned up, as an interrupt."""

    def handler(signum: int, frame: object) -> None:
        global _stop_signal
        _stop_signal = signum
        raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def stop_requested() -> Optional[BaseException]:
    """The interrupt a signal asked for, if one arrived: for code that sees some other exception instead."""
    if _stop_signal is None:
        return None
    return Terminated() if _stop_signal == signal.SIGTERM else KeyboardInterrupt()


def read_input(path: str, what: str = "input") -> bytes:
    """All bytes of a file, or of stdin for `-`."""
    if path == STDIO:
        if sys.stdin is None or sys.stdin.isatty():
            raise AlexCompressError(f"{what} is '-' but nothing is piped into stdin")
        return sys.stdin.buffer.read()
    return read_prefix(path, -1)


def read_prefix(path: str, size: int) -> bytes:
    """The first `size` bytes of a file (all of it for -1), or an error naming the file."""
    p = Path(path)
    if not p.exists():
        raise AlexCompressError(f"{path}: no such file")
    if p.is_dir():
        raise AlexCompressError(f"{path}: is a directory, expected a file")
    try:
        with p.open("rb") as handle:
            return handle.read(size)
    except OSError as exc:
        raise AlexCompressError(f"{path}: cannot read ({exc.strerror or exc})") from None


def default_output(input_path: str, suffix: str, keyword_stem: str | None = None) -> str:
    """`alexnet.pt` -> `alexnet{suffix}`; stdin -> stdout; a model keyword -> `{keyword_stem}{suffix}`."""
    if input_path == STDIO:
        return STDIO
    if keyword_stem is not None:
        return keyword_stem + suffix
    p = Path(input_path)
    stem = p.name
    for ending in (".pruned.pt", ".quantized.pt", ".decoded.pt", ".pt", ".pth", ".dcz"):
        if stem.endswith(ending) and len(stem) > len(ending):
            stem = stem[: -len(ending)]
            break
    return str(p.with_name(stem + suffix))


def check_output(output: str, *, inputs: tuple[str, ...] = (), force: bool = False) -> None:
    """Refuse, before any work is done, an output that would clobber an input or an existing file."""
    if output == STDIO:
        if sys.stdout is None or sys.stdout.isatty():
            raise AlexCompressError("refusing to write binary data to a terminal; use -o FILE or redirect stdout")
        return
    out = Path(output)
    for source in inputs:
        if source != STDIO and Path(source).exists() and out.exists() and os.path.samefile(source, out):
            raise AlexCompressError(f"{output}: is the input file; refusing to overwrite it (choose another -o)")
    if out.is_dir():
        raise AlexCompressError(f"{output}: is a directory; give a file name with -o")
    if out.exists() and not force:
        raise AlexCompressError(f"{output}: already exists; use --force to overwrite it")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.exists():
        raise AlexCompressError(f"{output}: directory {parent} does not exist")
    if not parent.is_dir():
        raise AlexCompressError(f"{output}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise AlexCompressError(f"{output}: directory {parent} is not writable")


Payload = Union[bytes, Callable[[BinaryIO], None]]


def write_output(output: str, payload: Payload) -> None:
    """Write `payload` (bytes, or a function that writes to a binary file) to stdout, or atomically to a
    file: temporary file in the same directory, fsync, rename."""
    if output == STDIO:
        try:
            _emit(payload, sys.stdout.buffer)
            sys.stdout.buffer.flush()
        except Exception as exc:
            pipe = underlying(exc, BrokenPipeError)  # torch.save reports it as its own RuntimeError
            if pipe is not None and pipe is not exc:
                raise pipe from None
            raise
        return
    write_atomic(Path(output), payload)


def underlying(exc: BaseException, kind: type) -> Optional[BaseException]:
    """The first exception of `kind` in `exc`'s chain (itself, its cause or context), or None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, kind):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _emit(payload: Payload, handle: BinaryIO) -> None:
    if callable(payload):
        payload(handle)
        return
    view = memoryview(payload)
    chunk = 1 << 22  # chunked, so that a signal can interrupt a large write between chunks
    for start in range(0, len(view), chunk):
        handle.write(view[start : start + chunk])


def write_atomic(path: Path, payload: Payload) -> None:
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise AlexCompressError(f"{path}: cannot write in {directory} ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            _emit(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o666 & ~_umask())
        os.replace(tmp_name, path)
    except BaseException as exc:  # KeyboardInterrupt and SIGTERM (raised as one) included: leave nothing
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        interrupt = stop_requested()
        if interrupt is not None and not isinstance(exc, KeyboardInterrupt):
            raise interrupt from exc  # e.g. torch.save's zip writer replaced our KeyboardInterrupt
        failure = underlying(exc, OSError)  # a full disk inside torch.save surfaces as a RuntimeError
        if failure is not None:
            raise AlexCompressError(f"{path}: cannot write ({failure.strerror or failure})") from None
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
