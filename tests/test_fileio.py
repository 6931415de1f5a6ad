"""Outputs appear whole or not at all; inputs and existing files are never damaged."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alexcompress.errors import AlexCompressError
from alexcompress.fileio import check_output, default_output, write_atomic, write_outputs

# Runs the real CLI in a child whose disk is "slow": fsync blocks, so the signal lands mid-write, after the
# data is in the temporary file and before the rename.
SLOW_DISK = """
import os, sys, time
os.fsync = lambda fd: time.sleep(60)
from alexcompress.cli.app import main
sys.argv = ["alexcompress"] + sys.argv[1:]
main()
"""


# The same, but every write torch.save makes is slow: the signal lands inside torch's zip writer, which
# replaces our KeyboardInterrupt with its own RuntimeError on the way out.
SLOW_WRITES = """
import sys, time
import alexcompress.fileio as fileio
emit = fileio._emit

class Slow:
    def __init__(self, handle):
        self.handle = handle
    def write(self, data):
        time.sleep(0.02)
        return self.handle.write(data)
    def flush(self):
        self.handle.flush()

fileio._emit = lambda payload, handle: emit(payload, Slow(handle))
from alexcompress.cli.app import main
sys.argv = ["alexcompress"] + sys.argv[1:]
main()
"""


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_default_output_names():
    assert default_output("nets/alexnet.pt", ".pruned.pt") == "nets/alexnet.pruned.pt"
    assert default_output("alexnet.pruned.pt", ".quantized.pt") == "alexnet.quantized.pt"
    assert default_output("m.dcz", ".decoded.pt") == "m.decoded.pt"
    assert default_output("-", ".dcz") == "-"
    assert default_output("random", ".dcz", "alexnet-random") == "alexnet-random.dcz"


def test_failed_write_leaves_nothing_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "out.pt"
    target.write_bytes(b"precious")

    def broken(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(target, b"x" * 10_000)
    assert target.read_bytes() == b"precious"
    assert leftovers(tmp_path) == []


def test_outputs_written_together_appear_together_or_not_at_all(tmp_path):
    """A sharded checkpoint is one output: a failure in its last file leaves none of them, and keeps what
    the names held before."""
    (tmp_path / "a").write_bytes(b"old a")

    def broken(handle):
        handle.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(AlexCompressError, match="c: cannot write"):
        write_outputs([(str(tmp_path / "a"), b"new a"), (str(tmp_path / "b"), b"b"), (str(tmp_path / "c"), broken)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"] and (tmp_path / "a").read_bytes() == b"old a"
    write_outputs([(str(tmp_path / "a"), b"new a"), (str(tmp_path / "b"), b"b")])
    assert (tmp_path / "a").read_bytes() == b"new a" and (tmp_path / "b").read_bytes() == b"b"
    with pytest.raises(AlexCompressError, match="several files cannot all go to stdout"):
        write_outputs([("-", b"x"), (str(tmp_path / "d"), b"d")])


def test_write_error_is_a_one_line_error(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(AlexCompressError, match="No space left on device"):
        write_atomic(tmp_path / "x.pt", b"data")
    assert list(tmp_path.iterdir()) == []


def test_disk_full_inside_a_library_writer_is_still_a_one_line_error(tmp_path):
    def torch_like(handle):  # torch.save reports a failed write as its own RuntimeError
        handle.write(b"partial")
        try:
            raise OSError(28, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos")  # noqa: B904 - as torch does

    with pytest.raises(AlexCompressError, match=r"x.pt: cannot write \(No space left on device\)"):
        write_atomic(tmp_path / "x.pt", torch_like)
    assert list(tmp_path.iterdir()) == []


def test_check_output_refuses_before_any_work(tmp_path):
    existing = tmp_path / "a.pt"
    existing.write_bytes(b"1")
    with pytest.raises(AlexCompressError, match="already exists; use --force"):
        check_output(str(existing))
    with pytest.raises(AlexCompressError, match="is the input file"):
        check_output(str(existing), inputs=(str(existing),), force=True)
    link = tmp_path / "b.pt"
    link.symlink_to(existing)
    with pytest.raises(AlexCompressError, match="is the input file"):
        check_output(str(link), inputs=(str(existing),), force=True)


@pytest.mark.parametrize("script", [SLOW_DISK, SLOW_WRITES], ids=["in-fsync", "in-torch.save"])
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGHUP, 129), (signal.SIGUSR1, 138)])
def test_signal_mid_write_leaves_no_partial_output(tmp_path, sig, code, script):
    target = tmp_path / "model.pt"
    target.write_bytes(b"the user's file")
    child = subprocess.Popen(
        [sys.executable, "-c", script, "init", "-o", str(target), "--num-classes", "2", "--force"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not leftovers(tmp_path) and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.05)
    assert leftovers(tmp_path), "the child never started writing"
    time.sleep(0.5)  # let it reach the blocking fsync
    child.send_signal(sig)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == code, stderr.decode()
    assert stderr.decode().strip().startswith("alexcompress: error: ")
    assert leftovers(tmp_path) == []
    assert target.read_bytes() == b"the user's file"


def test_any_legal_output_name_can_be_written(tmp_path):
    """A 255-byte name (NAME_MAX) is legal; the temporary name beside it must be too, or the command fails
    after all its work."""
    target = tmp_path / ("m" * 252 + ".pt")
    write_atomic(target, b"data")
    assert target.read_bytes() == b"data" and [p.name for p in tmp_path.iterdir()] == [target.name]
