"""Issue 12's classes that need a real process or a real filesystem object: inputs that must be read once
(FIFOs, process substitution), closed stdout, planted symbolic links, control characters in names, the
writer refusing what its reader would refuse, and what hostile `.pt` files may cost in memory."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from alexcompress.errors import ModelError
from alexcompress.models.ptfile import prescan, read_state_dict, write_state_dict
from alexcompress.models.state import load_arrays

CLI = [sys.executable, "-m", "alexcompress"]


def alexcompress(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, **kwargs)


def one_line(done: subprocess.CompletedProcess) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 1 and len(lines) == 1 and lines[0].startswith("alexcompress: error: "), done.stderr
    return lines[0]


@pytest.fixture(scope="module")
def small_dcz(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("dcz") / "m.dcz"
    done = alexcompress("compress", "random:0:10", "-o", path, "-q")
    assert done.returncode == 0, done.stderr
    return path


def test_a_fifo_and_process_substitution_are_read_once(tmp_path, small_dcz):
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(small_dcz.read_bytes()))
    writer.start()
    done = alexcompress("info", fifo)
    writer.join()
    assert done.returncode == 0 and "alexnet, 10 classes" in done.stdout, done.stderr
    script = f"{' '.join(CLI)} decode <(cat {small_dcz}) -o {tmp_path / 'out.pt'} -q"
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
    assert done.returncode == 0 and (tmp_path / "out.pt").exists(), done.stderr


def test_a_dcz_stream_is_read_no_further_than_its_header_declares(tmp_path, small_dcz):
    """An endless source behind a valid file: the reader stops after the file, plus one byte to see the tail."""
    script = f"cat {small_dcz} /dev/zero | {' '.join(CLI)} info -"
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)
    assert "trailing bytes after the last section" in done.stderr


def test_closed_stdout_is_named_as_such(tmp_path):
    done = subprocess.run(["bash", "-c", f"{' '.join(CLI)} compress random:0:10 -o - -q >&-"], capture_output=True, text=True)
    assert "stdout is closed" in one_line(done)


def test_control_characters_in_names_never_reach_the_terminal_raw(tmp_path):
    name = tmp_path / "evil\x1b[31m\nname.pt"
    line = one_line(alexcompress("prune", name))
    assert "\x1b" not in line and "\\x1b[31m\\nname.pt: no such file" in line


def test_report_never_writes_through_a_planted_link(tmp_path, small_dcz):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "figures"
    out.mkdir()
    (out / "ladder.png").symlink_to(victim)
    line = one_line(alexcompress("report", small_dcz, "-o", out, "--force", "-q"))
    assert "ladder.png: is a symbolic link; refusing to write through it" in line
    assert victim.read_text() == "precious"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_the_writer_refuses_what_its_reader_would_refuse_and_leaves_nothing(tmp_path):
    many = OrderedDict((f"t{i}", np.zeros((1, 2), np.float32)) for i in range(5000))  # the reader allows 4096 tensors
    model = tmp_path / "many.pt"
    with open(model, "wb") as handle:
        write_state_dict(many, handle)
    line = one_line(alexcompress("encode", model, "-o", tmp_path / "many.dcz"))
    assert "many.pt: holds 5,000 tensors, more than the 4,096 a .dcz holds" in line  # refused as read, before any work
    assert not (tmp_path / "many.dcz").exists() and not list(tmp_path.glob(".*.tmp"))
    from alexcompress.errors import AlexCompressError
    from alexcompress.models.dcz import encode

    with pytest.raises(AlexCompressError, match=r"cannot store this model in a \.dcz: header: "):  # the writer, called directly
        encode(many, arch="none")


def test_spec_valid_oddities_work_empty_tensors_and_bfloat16(tmp_path):
    state = {"empty.weight": torch.zeros(0, 5), "w.weight": torch.randn(6, 5, dtype=torch.bfloat16), "b": torch.ones(3)}
    model = tmp_path / "odd.pt"
    torch.save(state, model)
    done = alexcompress("compress", model, "-o", tmp_path / "odd.dcz", "--bits", "2")
    assert done.returncode == 0, done.stderr
    done = alexcompress("info", tmp_path / "odd.dcz")
    assert done.returncode == 0 and "empty" in done.stdout, done.stderr


def _peak_mb(code: str) -> float:
    """Peak RSS (MB) of a fresh interpreter running `code`, above the interpreter with numpy imported.

    VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child of this (large) test process
    would report the parent's peak and the check could never fail."""
    hwm = "int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])"
    base = f"import numpy; import alexcompress.models.state; r0 = {hwm}\n"
    done = subprocess.run(
        [sys.executable, "-c", base + code + f"\nprint(({hwm} - r0) / 1024)"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return float(done.stdout.strip().splitlines()[-1])


def _zip(records: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in records.items():
            archive.writestr(name, data)
    return buffer.getvalue()


HOSTILE = {
    "memo index 2**31": _zip({"archive/data.pkl": b"\x80\x02}r\xff\xff\xff\x7f.", "archive/version": b"3\n"}),
    "nested 1e6 deep": _zip({"archive/data.pkl": b"\x80\x02)" + b"\x85" * 1_000_000 + b".", "archive/version": b"3\n"}),
    "deflated 1 GB of zeros": _zip({"archive/data.pkl": b"\x80\x02}.", "archive/data/0": bytes(1 << 30)}, zipfile.ZIP_DEFLATED),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_pt_files_are_refused_within_a_small_memory_budget(tmp_path, name):
    path = tmp_path / "hostile.pt"
    path.write_bytes(HOSTILE[name])
    with pytest.raises(ModelError):
        load_arrays(str(path))
    code = f"from alexcompress.models.state import load_arrays\ntry:\n    load_arrays({str(path)!r})\nexcept Exception as e:\n    pass"
    assert _peak_mb(code) < 64 + 4 * path.stat().st_size / 1e6, name


def test_prescan_accepts_what_torch_writes_and_the_writer_writes():
    buffer = io.BytesIO()
    torch.save(
        {"state_dict": {"w": torch.ones(2)}, "epoch": 3, "optimizer": {"state": {0: {"m": torch.ones(2)}}, "param_groups": [{"lr": 0.1}]}},
        buffer,
    )
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as archive:
        prescan(archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl"))))
    assert read_state_dict(buffer.getvalue())["epoch"] == 3


STALL_AN_IMPORT = (
    "import importlib.abc, runpy, sys, time\n"
    "output, ready, stall = sys.argv[1:4]\n"
    "class Stall(importlib.abc.MetaPathFinder):\n"
    "    def find_spec(self, name, path, target=None):\n"
    "        if name == stall:\n"
    "            open(ready, 'w').close()\n"
    "            time.sleep(60)\n"
    "        return None\n"
    "sys.meta_path.insert(0, Stall())\n"
    "sys.argv = ['alexcompress', 'compress', 'random:0:10', '-o', output]\n"
    "runpy.run_module('alexcompress', run_name='__main__', alter_sys=True)\n"
)


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("module", ["alexcompress.cli.app", "alexcompress.fileio", "typer", "numpy", "torch"])
def test_a_signal_at_any_point_of_start_up_is_one_line(tmp_path, module, signame):
    """The signal lands while `module` is being imported: `python -m alexcompress` run with an import hook
    that stalls there and says so through a file, so the signal arrives at that point however loaded the
    machine is (a fixed sleep once raced the start-up on a busy fresh clone). From `_entry`'s first lines on
    (before them: the interpreter's own start-up and the package's `__init__`, a few milliseconds in which a
    library must not take over the process's signals), it ends in one line, the signal's exit code and no
    output. `torch` stalls inside the command (lazy import): there `fileio`'s handlers unwind it."""
    import signal
    import time

    signum = getattr(signal, signame)
    ready = tmp_path / "ready"
    child = subprocess.Popen(
        [sys.executable, "-c", STALL_AN_IMPORT, str(tmp_path / "x.dcz"), str(ready), module], stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while not ready.exists():
        assert child.poll() is None and time.monotonic() < deadline, f"the start-up never imported {module}"
        time.sleep(0.01)
    child.send_signal(signum)
    _, stderr = child.communicate(timeout=120)
    line = "alexcompress: error: " + ("interrupted" if signum == signal.SIGINT else f"terminated by {signame}")
    assert (child.returncode, stderr.strip().splitlines()) == (130 if signum == signal.SIGINT else 128 + signum, [line]), stderr
    assert not (tmp_path / "x.dcz").exists() and not list(tmp_path.glob(".*"))


def test_start_up_handles_the_signals_the_command_line_handles():
    from alexcompress._entry import STARTUP_SIGNALS
    from alexcompress.fileio import STOP_SIGNALS

    assert STARTUP_SIGNALS == STOP_SIGNALS


def test_ctrl_c_while_typer_builds_the_command_is_one_line(tmp_path):
    """Deterministic version of the window a fresh clone hit: the signal lands inside Typer's get_command,
    outside both Typer's own interrupt handling and any command body."""
    import signal
    import time

    code = (
        "import sys, time, typer.main as tm\n"
        "build, ready = tm.get_command, sys.argv[2]\n"
        "tm.get_command = lambda app: (open(ready, 'w').close(), time.sleep(30), build(app))[-1]\n"
        "sys.argv = ['alexcompress', 'compress', 'random:0:10', '-o', sys.argv[1]]\n"
        "from alexcompress._entry import main\n"
        "main()\n"
    )
    ready = tmp_path / "building"
    child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "x.dcz"), str(ready)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 130 and "Traceback" not in stderr, stderr
    assert stderr.strip().splitlines() == ["alexcompress: error: interrupted"]


def test_report_names_files_for_any_layer_name_and_follows_no_planted_folder(tmp_path):
    """Layer names are the file's to choose: one with '/' once made `report` write into a subfolder (and a
    directory link planted there led outside -o), one of 240 characters made a name too long to create."""
    outside = tmp_path / "outside"
    outside.mkdir()
    state = OrderedDict(
        (name, np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32))
        for name in ("sub/../../x.weight", "y" * 240 + ".weight", "sub/other.weight")
    )
    model = tmp_path / "odd.pt"
    with open(model, "wb") as handle:
        write_state_dict(state, handle)
    out = tmp_path / "figures"
    out.mkdir()
    (out / "sub").symlink_to(outside, target_is_directory=True)
    done = subprocess.run(
        [*CLI, "report", model, "--arch", "none", "--sparsity", "0.5", "--bits", "3", "-o", out, "--force", "-q"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert not list(outside.iterdir())
    figures = [p.name for p in out.iterdir() if p.name.startswith("weights_")]
    assert len(figures) == 3 and all(len(name) < 120 and "/" not in name for name in figures)


def test_predict_reads_an_endless_stdin_only_up_to_its_limit(tmp_path):
    with open("/dev/zero", "rb") as endless:
        done = subprocess.run([*CLI, "predict", "random:0:10", "-"], stdin=endless, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and done.stderr.strip().splitlines() == [
        "alexcompress: error: <stdin>: IMAGE longer than 16 MB (an endless stream?)"
    ]


def test_a_glob_through_a_symbolic_link_loop_ends(tmp_path):
    """glob.glob('s/**/*.png') follows a link back to a parent for ever; the bounded walk reads each folder once."""
    from PIL import Image

    (tmp_path / "s" / "a").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "s" / "a" / "0.png")
    (tmp_path / "s" / "a" / "up").symlink_to(tmp_path / "s", target_is_directory=True)
    done = subprocess.run([*CLI, "predict", "random:0:10", "s/**/*.png"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("s/a/0.png\n") and done.stdout.count(".png") == 1  # once, not once per loop
