"""Where bytes enter and leave: paths or `-` for stdin/stdout, default output names, atomic writes.

One output policy for every file the tool writes (outputs, checkpoints, report figures): never an input
(same path or same inode), never through a symbolic link, only over a regular file (never a FIFO or a
device) and only with --force; written to a hidden temporary file in the target's directory, fsynced,
then renamed over the target, so an error or any catchable signal leaves nothing behind.

Inputs are read through `read_file` (a one-line error naming the file) and `read_upto` (bounded); what a
MODEL argument may be, and how a stream of one is sniffed, is `alexcompress.sources`'.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, Optional, Union

from alexcompress.errors import AlexCompressError

STDIO = "-"


class Terminated(KeyboardInterrupt):
    """A signal other than SIGINT, unwound like Ctrl-C so that atomic writers remove their temporary files."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


#: every signal whose default action ends the process and that a handler may catch
STOP_SIGNALS = tuple(
    getattr(signal, name)
    for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGXCPU", "SIGXFSZ", "SIGVTALRM", "SIGPROF")
    if hasattr(signal, name)
)

_stop_signal: Optional[int] = None  # set by the handlers: libraries may turn our exception into their own


def install_signal_handlers() -> None:
    """Every catchable terminating signal raises (KeyboardInterrupt for SIGINT, Terminated otherwise) and is
    remembered, so that an interrupt a library converts into its own error is still reported, and cleaned
    up, as an interrupt. SIGPIPE stays ignored (Python's default): writes report EPIPE instead."""

    def handler(signum: int, frame: object) -> None:
        global _stop_signal, _pending_signal
        _stop_signal = signum
        if _deferring:
            _pending_signal = signum
            return
        raise KeyboardInterrupt if signum == signal.SIGINT else Terminated(signum)

    for signum in STOP_SIGNALS:
        try:
            signal.signal(signum, handler)
        except (OSError, ValueError):  # not in the main thread, or not catchable here
            pass


_deferring = False
_pending_signal: Optional[int] = None


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold a stop signal that arrives inside the block until the block has finished, then raise it: a
    training step is applied whole or not at all, so a checkpoint taken on Ctrl-C is an exact resume point.
    (Only the CLI's handlers defer; elsewhere Python's own SIGINT behaviour is unchanged.)"""
    global _deferring, _pending_signal
    outer = _deferring
    _deferring = True
    try:
        yield
    finally:
        _deferring = outer
    if not outer and _pending_signal is not None:
        signum, _pending_signal = _pending_signal, None
        raise KeyboardInterrupt if signum == signal.SIGINT else Terminated(signum)


def stop_requested() -> Optional[BaseException]:
    """The interrupt a signal asked for, if one arrived: for code that sees some other exception instead."""
    if _stop_signal is None:
        return None
    return KeyboardInterrupt() if _stop_signal == signal.SIGINT else Terminated(_stop_signal)


def is_regular(path: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


MAX_LIST_BYTES = 16 << 20  # a list of names (image paths, class names): a million lines of 16 bytes
#: directory entries one walk (a --data tree, a folder or glob given to predict) may look at: ImageNet's
#: training set is 1.3 M files; a walk past this has wandered into a file system
MAX_WALK_ENTRIES = 10_000_000


def count_entries(count: int, root: str) -> int:
    """`count` entries seen so far in the walk of `root`, or an error once past MAX_WALK_ENTRIES."""
    if count > MAX_WALK_ENTRIES:
        raise AlexCompressError(f"{root}: the walk passed {MAX_WALK_ENTRIES:,} entries; name a narrower folder")
    return count


def read_lines(path: str, what: str, limit: int = MAX_LIST_BYTES) -> list[str]:
    """The non-blank lines of a UTF-8 text file or of stdin (`-`), read no further than `limit` bytes (an
    endless device or stream is refused at the limit, not read until memory runs out)."""
    if path == STDIO:
        if sys.stdin is None or sys.stdin.isatty():
            raise AlexCompressError(f"{what} is '-' but nothing is piped into stdin")
        raw, label = read_upto(sys.stdin.buffer, limit + 1), "<stdin>"
    else:
        raw, label = read_file(path, lambda handle: read_upto(handle, limit + 1)), path
    if len(raw) > limit:
        raise AlexCompressError(f"{label}: {what} longer than {limit >> 20} MB (an endless stream?)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise AlexCompressError(f"{label}: {what} is not UTF-8 text") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def read_upto(handle: BinaryIO, size: int) -> bytes:
    """Up to `size` bytes, fewer only at the end of the stream (read in chunks of at most 16 MB)."""
    chunks, left = [], size
    while left > 0:
        chunk = handle.read(min(left, 1 << 24))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_prefix(path: str, size: int) -> bytes:
    """The first `size` bytes of a regular file (sniffing a pipe would consume them: use read_input)."""
    return read_file(path, lambda handle: handle.read(size))


def read_file(path: str, read: Callable[[BinaryIO], bytes]) -> bytes:
    """`read` applied to the opened file, or a one-line error naming it."""
    p = Path(path)
    if not p.exists():
        raise AlexCompressError(f"{path}: no such file")
    if p.is_dir():
        raise AlexCompressError(f"{path}: is a directory, expected a file")
    try:
        with p.open("rb") as handle:
            return read(handle)
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


def check_output(
    output: str,
    *,
    inputs: tuple[str, ...] = (),
    force: bool = False,
    what: str = "",
    option: str = "-o",
    exists: str = "already exists; use --force to overwrite it",
) -> None:
    """Refuse, before any work is done, an output that would clobber an input, follow a link, replace
    something that is not a regular file, or replace an existing file without `force` (`exists` says
    what to do then); `option` is the flag that named it."""
    if output == STDIO:
        if sys.stdout is None:
            raise AlexCompressError("stdout is closed; write to a file with -o FILE")
        if sys.stdout.isatty():
            raise AlexCompressError("refusing to write binary data to a terminal; use -o FILE or redirect stdout")
        return
    label = f"{output}{what}"
    for source in inputs:
        if source != STDIO and same_file(source, output):
            raise AlexCompressError(f"{label}: is the input file; refusing to overwrite it (choose another {option})")
    try:
        info = os.lstat(output)
    except (FileNotFoundError, NotADirectoryError):  # the directory checks below say which
        info = None
    except OSError as exc:
        raise AlexCompressError(f"{label}: cannot inspect ({exc.strerror or exc})") from None
    if info is not None:
        if stat.S_ISLNK(info.st_mode):
            raise AlexCompressError(f"{label}: is a symbolic link; refusing to write through it (remove it or choose another name)")
        if stat.S_ISDIR(info.st_mode):
            raise AlexCompressError(f"{label}: is a directory; give a file name with {option}")
        if not stat.S_ISREG(info.st_mode):
            raise AlexCompressError(f"{label}: is not a regular file (a FIFO, socket or device); refusing to replace it")
        if not force:
            raise AlexCompressError(f"{label}: {exists}")
    out = Path(output)
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.exists():
        raise AlexCompressError(f"{label}: directory {parent} does not exist")
    if not parent.is_dir():
        raise AlexCompressError(f"{label}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise AlexCompressError(f"{label}: directory {parent} is not writable")


def check_outputs(
    outputs: "tuple[tuple[Optional[str], str], ...]",
    *,
    inputs: tuple[str, ...] = (),
    trees: "tuple[Optional[str], ...]" = (),
    force: bool = False,
) -> None:
    """Every output of one command, `(path or None, option)`, before any work: each passes check_output, no
    two name the same file, and none lies inside an input tree (`--data`, `--val`): the command would write
    among the files it reads.

    >>> check_outputs((("a.json", "--save"), ("./a.json", "--plot")))
    Traceback (most recent call last):
    ...
    alexcompress.errors.AlexCompressError: ./a.json: --plot names the same file as --save; give each its own
    """
    seen: dict[str, str] = {}
    roots = [(tree, os.path.realpath(tree)) for tree in trees if tree is not None and tree != STDIO]
    for path, option in outputs:
        if path is None or path == STDIO:
            continue
        real = os.path.realpath(path)
        if real in seen:
            raise AlexCompressError(f"{path}: {option} names the same file as {seen[real]}; give each its own")
        for tree, root in roots:
            if os.path.commonpath([real, root]) == root:
                raise AlexCompressError(f"{path}: is inside {tree}, which this command reads; write {option} elsewhere")
        check_output(path, inputs=inputs, force=force)
        seen[real] = option


def check_folder(folder: str, *, resume: bool, option: str, trees: "tuple[Optional[str], ...]" = (), what: str = "work folder") -> None:
    """A folder a command fills as it goes (the search's work folder), checked before any work: not a link,
    not inside an input tree, absent unless `resume` continues it, present when it does, in a writable
    directory."""
    if folder == STDIO:
        raise AlexCompressError(f"{option}: a {what} is a directory, not stdout; give a path")
    real = os.path.realpath(folder)
    for tree in trees:
        if tree is not None and tree != STDIO and os.path.commonpath([real, os.path.realpath(tree)]) == os.path.realpath(tree):
            raise AlexCompressError(f"{folder}: is inside {tree}, which this command reads; put {option} elsewhere")
    if os.path.islink(folder):
        raise AlexCompressError(f"{folder}: is a symbolic link; refusing to write through it (remove it or choose another {option})")
    if os.path.lexists(folder):
        if not os.path.isdir(folder):
            raise AlexCompressError(f"{folder}: is not a directory; the {what} ({option}) must be one")
        if not resume:
            raise AlexCompressError(f"{folder}: a {what} already exists: --resume continues it, or remove it to start over")
        return
    if resume:
        raise AlexCompressError(f"{folder}: no {what} to resume (give the {option} of the interrupted run)")
    parent = Path(folder).parent if str(Path(folder).parent) else Path(".")
    if not parent.is_dir():
        raise AlexCompressError(f"{folder}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise AlexCompressError(f"{folder}: directory {parent} is not writable")


def same_file(a: str, b: str) -> bool:
    """The same file: the same resolved path, or the same inode (hard links, bind mounts)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


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
    write_group([(path, payload)])


def write_outputs(outputs: "list[tuple[str, Payload]]") -> None:
    """Several files one command writes together (a sharded checkpoint and its index), as one: each to a
    temporary file beside it, then all renamed into place; a failure or an interrupt on the way leaves none
    of them. One output may be stdout (`-`), written as `write_output` does."""
    if len(outputs) == 1:
        write_output(*outputs[0])
        return
    if any(path == STDIO for path, _ in outputs):
        raise AlexCompressError("several files cannot all go to stdout; give a file name")
    write_group([(Path(path), payload) for path, payload in outputs])


def write_group(outputs: "list[tuple[Path, Payload]]") -> None:
    """Each payload to a temporary file in its target's directory (fsync), then every one renamed over its
    target; on any failure (KeyboardInterrupt and SIGTERM, raised as one, included) no temporary is left."""
    temporary: list[tuple[str, Path]] = []
    path = outputs[0][0] if outputs else Path(".")
    try:
        for path, payload in outputs:
            temporary.append((_temporary(path), path))
            with open(temporary[-1][0], "wb") as handle:
                _emit(payload, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temporary[-1][0], 0o666 & ~_umask())
        for tmp_name, path in temporary:
            os.replace(tmp_name, path)
    except BaseException as exc:  # leave nothing
        for tmp_name, _ in temporary:
            try:
                os.unlink(tmp_name)
            except FileNotFoundError:
                pass
        interrupt = stop_requested()
        if interrupt is not None and not isinstance(exc, KeyboardInterrupt):
            raise interrupt from exc  # e.g. torch.save's zip writer replaced our KeyboardInterrupt
        failure = underlying(exc, OSError)  # a full disk inside torch.save surfaces as a RuntimeError
        if failure is not None and not isinstance(exc, AlexCompressError):
            raise AlexCompressError(f"{path}: cannot write ({failure.strerror or failure})") from None
        raise


def _temporary(path: Path) -> str:
    """A new empty file beside `path`, named after it (cut short enough that the name stays within NAME_MAX
    (255) for any legal target)."""
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name[:200]}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise AlexCompressError(f"{path}: cannot write in {directory} ({exc.strerror or exc})") from None
    os.close(fd)
    return tmp_name


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
