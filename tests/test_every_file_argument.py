"""Every command's file arguments and output options, read from the Typer app itself, each attacked with every
hostile variant of its kind of input: a command added tomorrow is attacked the day it is added.

A parameter is a file parameter by its name (FILE_KINDS); one whose help speaks of files and whose name is
in neither table fails `test_every_file_parameter_is_classified`, so a new kind of input cannot slip past.
Each case replaces one parameter of an otherwise valid call (a small SqueezeNet `.dcz`, a folder of images)
and expects: exit 1 or 2, an `alexcompress: error:` line last on stderr and no traceback, and the scratch
folder exactly as it was (nothing written, nothing replaced, no temporary file left).
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from alexcompress.cli.app import app

from .test_train import make_image_folder

#: parameter name -> kind of input
FILE_KINDS = {
    "model": "model",
    "images": "image",
    "data": "tree",
    "val": "tree",
    "curves": "curves",
    "classes": "classes",
    "checkpoint": "checkpoint",
    "output": "output",
    "save": "output",
    "plot": "output",
}
#: parameters whose help mentions files but that name none
NOT_FILES = {
    "force",
    "max_drop",
    "quantizer",
    "coder",
    "index_bits",
    "verbose",
    "keep_checkpoint",
    "resume",
    "sparse",
    "verify",
    "preset",
    "arch",
    "num_classes",
    "pretrained",
    "shard_size",  # a size; the shards it bounds are named after -o and checked as outputs like it
}
#: what makes a parameter be read at all (--curves only with --target-ratio, ...), by parameter name
CONTEXT = {
    "curves": ["--target-ratio", "20"],
    "checkpoint": ["--data", "images", "--resume"],
    "val": ["--data", "images"],
}
#: the hostile variants of each kind: (name, the value given and any words the variant needs after it)
HOSTILE = {
    "model": [
        ("missing", "nope.pt"),
        ("directory", "empty"),
        ("endless device", "/dev/zero"),
        ("zip bomb", "zipbomb.pt"),
        ("evil pickle", "evil.pt"),
        ("safetensors with overlapping tensors", "overlap.safetensors"),
        ("safetensors index naming a shard outside its folder", "escape.safetensors.index.json"),
    ],
    "image": [("endless device", "/dev/zero"), ("7000x1 image", "wide/a/0.png"), ("missing", "nope.png")],
    "tree": [("missing", "nope"), ("a file", "notes.txt"), ("symbolic link loop", "loop"), ("7000x1 image", "wide")],
    "curves": [("nested 100,000 deep", "deep.json"), ("endless device", "/dev/zero"), ("a model file", "zipbomb.pt")],
    "classes": [("endless device", "/dev/zero"), ("missing", "nope.txt")],
    "checkpoint": [("zip bomb", "zipbomb.pt"), ("evil pickle", "evil.pt")],
    "output": [
        ("symbolic link to a file", "link"),
        ("the input", "model.dcz"),
        ("a FIFO", "fifo"),
        ("inside --data", "images/x.out --data images"),
    ],
    "output_dir": [("symbolic link to a folder", "dirlink"), ("a file", "notes.txt")],
}
#: valid values (an output that does not exist yet: a command that wrongly succeeds shows in the snapshot)
VALID = {"model": "model.dcz", "image": "images/a/0.png", "tree": "images", "output": "out.bin", "output_dir": "figures"}

runner = CliRunner()


def _commands() -> dict:
    return typer.main.get_command(app).commands


def _kind(param) -> str | None:
    kind = FILE_KINDS.get(param.name)
    if kind == "output" and "directory" in (param.help or "").lower():
        return "output_dir"
    return kind


def test_every_file_parameter_is_classified():
    words = ("file", "folder", "directory", "png", "json", "path")
    unknown = [
        f"{name} {param.name}"
        for name, command in _commands().items()
        for param in command.params
        if param.name not in FILE_KINDS
        and param.name not in NOT_FILES
        and any(w in (getattr(param, "help", "") or "").lower() for w in words)
    ]
    assert not unknown, f"parameters that may name files: add each to FILE_KINDS (with hostile variants) or NOT_FILES: {unknown}"


def _cases() -> list:
    cases = []
    for name, command in sorted(_commands().items()):
        for param in command.params:
            kind = _kind(param)
            for variant, value in HOSTILE.get(kind or "", []):
                names = {p.name for p in command.params}
                if (variant == "inside --data" and "data" not in names) or (variant == "the input" and "model" not in names):
                    continue
                cases.append(pytest.param(name, param.name, kind, value, id=f"{name}-{param.name}-{variant}"))
    return cases


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    import io
    import zipfile

    import torch
    from PIL import Image

    root = tmp_path_factory.mktemp("attack")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "alexcompress",
            "compress",
            "random:0:2",
            "--arch",
            "squeezenet1_1",
            "--sparsity",
            "0.5",
            "-o",
            root / "model.dcz",
            "-q",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    make_image_folder(root / "images", classes=2, per_class=2, size=32)
    os.rename(root / "images" / "class0", root / "images" / "a")
    (root / "empty").mkdir()
    (root / "notes.txt").write_text("not a model")
    (root / "victim.txt").write_text("precious")
    (root / "link").symlink_to(root / "victim.txt")
    (root / "dirlink").symlink_to(root / "empty", target_is_directory=True)
    os.mkfifo(root / "fifo")
    (root / "loop" / "a").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(root / "loop" / "a" / "0.png")
    (root / "loop" / "a" / "again").symlink_to("..", target_is_directory=True)
    (root / "wide" / "a").mkdir(parents=True)
    Image.new("L", (7000, 1)).save(root / "wide" / "a" / "0.png")
    (root / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    plain = io.BytesIO()
    torch.save({"w": torch.zeros(512, 512)}, plain)
    with zipfile.ZipFile(io.BytesIO(plain.getvalue())) as source, zipfile.ZipFile(root / "zipbomb.pt", "w", zipfile.ZIP_DEFLATED) as bomb:
        for record in source.namelist():
            bomb.writestr(record, source.read(record))

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > pwned.txt",))

    torch.save({"x": Evil()}, root / "evil.pt")
    table = json.dumps(
        {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}
    )
    (root / "overlap.safetensors").write_bytes(struct.pack("<Q", len(table)) + table.encode() + bytes(12))
    (root / "escape.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "../victim.txt"}}))
    return root


def _snapshot(root: Path) -> dict[str, bytes | str]:
    out: dict[str, bytes | str] = {}
    for top, dirs, files in os.walk(root):  # links are not followed: the loop stays one entry
        for name in dirs + files:
            path = Path(top) / name
            key = str(path.relative_to(root))
            out[key] = (
                f"-> {os.readlink(path)}"
                if path.is_symlink()
                else ("fifo" if path.is_fifo() else (path.read_bytes() if path.is_file() else "dir"))
            )
    return out


@pytest.mark.parametrize("command, target, kind, value", _cases())
def test_hostile_input_to_every_file_parameter(scratch, monkeypatch, command, target, kind, value):
    monkeypatch.chdir(scratch)
    params = {p.name: p for p in _commands()[command].params}
    args: list[str] = [command]
    positional = [p for p in params.values() if not p.opts[0].startswith("-")]
    for param in positional:
        args.append(value if param.name == target else VALID[_kind(param) or ""])
    for param in params.values():
        if param in positional:
            continue
        flag = param.opts[0]
        if param.name == target:
            args += [flag, *value.split(), *CONTEXT.get(target, [])]
        elif param.required:
            args += [flag, VALID[_kind(param) or ""]]
    if "image_size" in params:
        args += ["--image-size", "32", "--resize", "32"]
    if "force" in params and kind in ("output", "output_dir"):
        args.append("--force")  # refused even so
    if "output" in params and target != "output":
        args += ["-o", VALID[_kind(params["output"]) or ""]]
    before = _snapshot(scratch)
    result = runner.invoke(app, args)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code in (1, 2), (args, result.exit_code, result.output[-500:])
    assert "Traceback" not in result.output and lines, (args, result.output[-500:])
    if result.exit_code == 1:  # the error last (predict reports each file, logs before, and sums up)
        assert lines[-1].startswith("alexcompress: error: "), (args, lines)
    assert _snapshot(scratch) == before, args
    assert not (scratch / "pwned.txt").exists()
