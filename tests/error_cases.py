"""Every bad input we know of, run through the real CLI, and the exact line a user sees.

`python -m tests.error_cases > docs/ERRORS.md` regenerates the documented table; tests/test_error_docs.py
fails when the table and the program disagree. Cases run in a scratch directory with relative names, so
the messages are the same on every machine.
"""

from __future__ import annotations

import io
import json
import os
import socket
import struct
import tempfile
import zipfile
import zlib
from collections import OrderedDict
from pathlib import Path

import torch
import torchvision
from typer.testing import CliRunner

from alexcompress.cli.app import app
from alexcompress.codec.container import MAGIC, PREAMBLE
from alexcompress.models.state import random_model
from tests.fuzz_dcz import resign, split


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def _resign(data: bytes, mutate) -> bytes:
    header, raw_body = split(data)
    body = bytearray(raw_body)
    mutate(header, body)
    return resign(header, bytes(body))


def _make_files(root: Path) -> None:
    """The scratch files the cases refer to, by relative name."""
    state = random_model("alexnet", num_classes=10, seed=0)
    torch.save(state, root / "alexnet.pt")
    (root / "notes.txt").write_text("not a model")
    (root / "notes.pt").write_text("not a model")
    (root / "cut.pt").write_bytes((root / "alexnet.pt").read_bytes()[:100_000])
    torch.save(torchvision.models.alexnet(num_classes=10), root / "module.pt")
    torch.save({"x": _Evil()}, root / "evil.pt")
    torch.save(torchvision.models.alexnet(num_classes=0).state_dict(), root / "zero.pt")
    torch.save({"w": torch.zeros(2)}, root / "legacy.pt", _use_new_zipfile_serialization=False)
    torch.save(OrderedDict((f"t{i}.weight", torch.ones(2, 2)) for i in range(5000)), root / "many.pt")
    _zip(
        root,
        "records.pt",
        {f"archive/data/{i}": b"" for i in range(40_000)} | {"archive/data.pkl": b"\x80\x02}q\x00.", "archive/version": b"3\n"},
    )
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), root / "script.pt")
    torch.save(
        OrderedDict((k, v.to(torch.int8)) for k, v in torchvision.models.resnet18(num_classes=2).state_dict().items()), root / "int8.pt"
    )
    torch.save({"conv.weight": torch.zeros(3, 3, 3, 3), "classifier.6.weight": torch.zeros(10, 4096)}, root / "other.pt")
    wrong = OrderedDict(state)
    wrong["features.3.weight"] = torch.zeros(192, 64, 3, 3)
    torch.save(wrong, root / "wrong_shape.pt")
    checkpoint = {"format": "alexcompress-checkpoint", "stage": "retrain", "epoch": 0, "model": state, "optimizer": {}}
    torch.save({**checkpoint, "round": 1.5, "rng": [torch.get_rng_state()]}, root / "round.ckpt")
    torch.save({**checkpoint, "round": 1, "rng": [torch.get_rng_state()]}, root / "nomasks.ckpt")
    (root / "existing.pt").write_bytes(b"keep me")
    (root / "empty_dir").mkdir()
    runner = CliRunner()
    runner.invoke(app, ["compress", "alexnet.pt", "-o", "good.dcz", "--sparsity", "0.9", "--bits", "5", "--coder", "huffman", "-q"])
    runner.invoke(app, ["compress", "alexnet.pt", "-o", "rans.dcz", "--sparsity", "0.9", "--bits", "5", "--coder", "context", "-q"])
    good = (root / "good.dcz").read_bytes()
    flipped = bytearray(good)
    flipped[len(flipped) // 2] ^= 0x10
    (root / "flipped.dcz").write_bytes(bytes(flipped))
    (root / "cut.dcz").write_bytes(good[: len(good) // 3])
    (root / "trailing.dcz").write_bytes(good + b"\0\0")
    (root / "v2.dcz").write_bytes(good[:8] + (2).to_bytes(2, "little") + good[10:])

    def bomb(header, body):
        header["tensors"][0]["shape"] = [2**31, 2**31]

    def huge_nnz(header, body):
        header["tensors"][0]["nnz"] = 10**12

    def corrupt_gaps(header, body):
        fc7 = next(t for t in header["tensors"] if t["name"] == "classifier.4.weight")
        gaps = next(s for s in fc7["sections"] if s["kind"] == "gaps")
        body[gaps["offset"] : gaps["offset"] + gaps["length"]] = bytes(gaps["length"])  # all zero bits

    def kraft(header, body):
        table = next(s for s in header["tensors"][0]["sections"] if s["kind"] == "code_lengths")
        body[table["offset"] : table["offset"] + 4] = b"\x01\x01\x01\x01"

    for name, mutate in (("bomb.dcz", bomb), ("nnz.dcz", huge_nnz), ("gaps.dcz", corrupt_gaps), ("kraft.dcz", kraft)):
        (root / name).write_bytes(_resign(good, mutate))
    (root / "rans_gaps.dcz").write_bytes(_resign((root / "rans.dcz").read_bytes(), corrupt_gaps))
    torch.save(random_model("alexnet", num_classes=10, seed=1), root / "unquantized.pt")
    from PIL import Image

    for name in ("a", "b"):
        (root / "images" / name).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(root / "images" / name / "0.png")
    _make_hostile(root, good)


def _zip(root: Path, name: str, records: dict[str, bytes], compress: int = zipfile.ZIP_STORED) -> None:
    with zipfile.ZipFile(root / name, "w", compression=compress) as archive:
        for record, data in records.items():
            archive.writestr(record, data)


def _make_hostile(root: Path, good: bytes) -> None:
    """Files an attacker or a careless user hands over (issue 12's classes), each a few hundred bytes."""
    from PIL import Image

    _zip(root, "memo.pt", {"archive/data.pkl": b"\x80\x02}r\xff\xff\xff\x7f.", "archive/version": b"3\n"})
    _zip(root, "deep.pt", {"archive/data.pkl": b"\x80\x02)" + b"\x85" * 100_000 + b".", "archive/version": b"3\n"})
    plain = io.BytesIO()
    torch.save({"w": torch.zeros(4096, 4096)}, plain)
    with zipfile.ZipFile(io.BytesIO(plain.getvalue())) as archive:
        _zip(root, "zipbomb.pt", {n: archive.read(n) for n in archive.namelist()}, zipfile.ZIP_DEFLATED)
    torch.save({"w": torch.zeros(1).expand(10**9)}, root / "expanded.pt")
    torch.save({"w": torch.eye(4).to_sparse()}, root / "sparse.pt")
    torch.save({"w": torch.zeros(4, 4, device="meta")}, root / "meta.pt")
    table = json.dumps(
        {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}
    )
    (root / "overlap.safetensors").write_bytes(struct.pack("<Q", len(table)) + table.encode() + bytes(12))
    (root / "long.safetensors").write_bytes(struct.pack("<Q", 1 << 60) + b"{}")
    (root / "escape.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "../a.safetensors"}}))

    def deep_header(header, body):
        nested: list = []
        for _ in range(100_000):
            nested = [nested]
        header["options"] = nested

    def int_bias(header, body):
        bias = next(t for t in header["tensors"] if t["name"] == "features.0.bias")
        bias["dtype"] = "int32"

    for name, mutate in (("deep_header.dcz", deep_header), ("int_bias.dcz", int_bias)):
        try:
            (root / name).write_bytes(_resign(good, mutate))
        except RecursionError:  # json.dumps cannot write it either: build the nesting by hand
            raw = json.loads(good[PREAMBLE.size : PREAMBLE.size + PREAMBLE.unpack_from(good)[3]])
            raw["options"] = "@"
            text = json.dumps(raw).replace('"@"', "[" * 100_000 + "]" * 100_000).encode()
            body = good[PREAMBLE.size + PREAMBLE.unpack_from(good)[3] :]
            (root / name).write_bytes(PREAMBLE.pack(MAGIC, 1, 0, len(text), zlib.crc32(text)) + text + body)
    os.symlink("existing.pt", root / "link.pt")
    os.symlink("nowhere/at/all.pt", root / "dangling.pt")
    os.mkfifo(root / "fifo")
    (root / "loop" / "a").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(root / "loop" / "a" / "0.png")
    os.symlink("..", root / "loop" / "a" / "again")
    (root / "wide" / "a").mkdir(parents=True)
    Image.new("L", (7000, 1)).save(root / "wide" / "a" / "0.png")
    (root / "bomb" / "a").mkdir(parents=True)
    Image.new("1", (20_000, 20_000)).save(root / "bomb" / "a" / "0.png")


#: (what is wrong, the command line after `alexcompress`)
CASES = [
    ("input file does not exist", "prune missing.pt"),
    ("input is a directory", "prune empty_dir"),
    ("input is not a torch file", "prune notes.pt"),
    ("input .pt is truncated", "prune cut.pt"),
    ("a pickled nn.Module instead of a state dict", "prune module.pt"),
    ("a pickle that would run a command (nothing runs)", "prune evil.pt"),
    ("an AlexNet state dict with 0 classes", "eval zero.pt --data images"),
    ("a TorchScript archive instead of a state dict", "prune script.pt"),
    ("a legacy (torch < 1.6, pre-zip) .pt: never unpickled, by design", "prune legacy.pt"),
    ("a state dict of int8 weights", "prune int8.pt"),
    ("a state dict of int8 weights, --arch none (nothing to compress)", "prune int8.pt --arch none -o i.pt"),
    ("a state dict of 5,000 tensors (a .dcz holds 4,096)", "info many.pt --arch none"),
    ("a .pt of 40,000 zip records (refused at its directory)", "compress records.pt --arch none -o r.dcz"),
    ("a state dict of another architecture, --arch alexnet", "prune other.pt --arch alexnet"),
    ("an AlexNet state dict with a wrong shape, --arch alexnet", "prune wrong_shape.pt --arch alexnet"),
    ("sparsity outside [0, 1)", "prune alexnet.pt --sparsity 1.5"),
    ("negative std scale", "prune alexnet.pt --std-scale -1"),
    ("bits outside 1..8", "quantize alexnet.pt --fc-bits 9"),
    ("unknown layer in --rates", "prune alexnet.pt --rates conv9=0.5"),
    ("malformed --rates item", "prune alexnet.pt --rates fc6"),
    ("keep rate outside [0, 1]", "prune alexnet.pt --rates fc6=1.5"),
    ("--preset paper on another architecture", "prune random:0:10 --arch resnet18 --preset paper"),
    ("unknown architecture", "compress random --arch lenet"),
    ("output exists, no --force", "prune alexnet.pt -o existing.pt"),
    ("output is the input, even with --force", "prune alexnet.pt -o alexnet.pt --force"),
    ("output directory does not exist", "prune alexnet.pt -o no/such/dir/out.pt"),
    ("output directory is a file", "prune alexnet.pt -o notes.txt/out.pt"),
    ("output is a directory", "prune alexnet.pt -o empty_dir"),
    ("decode of a file that is not a .dcz", "decode alexnet.pt -o decoded.pt"),
    ("encode of a model that is not quantized", "encode unquantized.pt -o unquantized.dcz"),
    ("--index-bits outside 1..12", "encode alexnet.pt --index-bits 13"),
    ("decode --shard-size that is not a size", "decode good.dcz -o shards.safetensors.index.json --shard-size 5XB"),
    ("decode --shard-size without a sharded output", "decode good.dcz -o one.safetensors --shard-size 2GB"),
    (".dcz with a flipped byte", "decode flipped.dcz -o flipped.pt"),
    (".dcz truncated", "decode cut.dcz -o cut2.pt"),
    (".dcz with trailing bytes", "info trailing.dcz"),
    (".dcz of an unknown format version", "info v2.dcz"),
    (".dcz header declaring a 4-exa-element tensor (CRCs valid)", "decode bomb.dcz -o bomb.pt"),
    (".dcz header declaring more nonzeros than elements", "decode nnz.dcz -o nnz.pt"),
    (".dcz with a damaged gap stream (CRCs valid)", "decode gaps.dcz -o gaps.pt"),
    (".dcz with an over-full code table (CRCs valid)", "decode kraft.dcz -o kraft.pt"),
    (".dcz with a damaged rANS gap stream (CRCs valid)", "decode rans_gaps.dcz -o rans_gaps.pt"),
    ("eval on a directory that does not exist", "eval random:0:10 --data nope"),
    ("eval on a directory with no class folders", "eval random:0:10 --data empty_dir"),
    ("--resume without a checkpoint", "prune alexnet.pt -o r.pt --data empty_dir --resume"),
    ("--iterations without --data", "prune alexnet.pt --iterations 3 -o i.pt"),
    ("--device cuda on a machine without CUDA", "eval random:0:10 --data images --device cuda"),
    ("pretrained weights without a network", "prune pretrained -o p.pt"),
    ("a .pt whose pickle memo index is 2**31 (memory bomb)", "prune memo.pt"),
    ("a .pt whose pickle nests 100,000 deep (stack overflow)", "prune deep.pt"),
    ("a .pt with deflated records (zip bomb)", "prune zipbomb.pt"),
    ("a .pt holding a stride-0 view of 10**9 elements", "prune expanded.pt"),
    ("a .pt holding a sparse tensor", "prune sparse.pt"),
    ("a .pt holding a meta tensor", "prune meta.pt"),
    ("a safetensors file whose tensors overlap", "prune overlap.safetensors"),
    ("a safetensors header declaring 2**60 bytes", "prune long.safetensors"),
    ("a safetensors index naming a shard outside its folder", "prune escape.safetensors.index.json"),
    ("a .dcz holding more elements than --max-elements", "--max-elements 1000 info good.dcz"),
    ("an endless device as input", "info /dev/zero"),
    (".dcz header nested 100,000 deep (CRCs valid)", "info deep_header.dcz"),
    (".dcz with an int32 AlexNet bias (CRCs valid)", "decode int_bias.dcz -o int_bias.pt"),
    ("-o is a symbolic link, even with --force", "prune alexnet.pt -o link.pt --force"),
    ("-o is a dangling symbolic link", "prune alexnet.pt -o dangling.pt"),
    ("-o is a FIFO, even with --force", "prune alexnet.pt -o fifo --force"),
    ("--checkpoint is the input", "prune alexnet.pt -o c.pt --data images --checkpoint alexnet.pt"),
    ("--resume with a model file as checkpoint", "prune alexnet.pt -o c.pt --data images --resume --checkpoint unquantized.pt"),
    (
        "--resume from a checkpoint with deflated records (zip bomb)",
        "prune alexnet.pt -o c.pt --data images --resume --checkpoint zipbomb.pt",
    ),
    (
        "--resume from a checkpoint nested 100,000 deep (a segfault once)",
        "prune alexnet.pt -o c.pt --data images --resume --checkpoint deep.pt",
    ),
    ("--resume from a checkpoint holding a foreign global", "prune alexnet.pt -o c.pt --data images --resume --checkpoint evil.pt"),
    ("--resume from a checkpoint whose round is not an integer", "prune alexnet.pt -o c.pt --data images --resume --checkpoint round.ckpt"),
    ("--resume from a retraining checkpoint without masks", "prune alexnet.pt -o c.pt --data images --resume --checkpoint nomasks.ckpt"),
    ("WORLD_SIZE=2 without MASTER_ADDR (not started by torchrun)", "WORLD_SIZE=2 RANK=0 prune alexnet.pt -o w.pt --data images"),
    ("sensitivity --save and --plot naming one file", "sensitivity random:0:10 --data images --save s.png --plot ./s.png"),
    (
        "sensitivity --plot over one of its --data images, even with --force",
        "sensitivity random:0:10 --data images --plot images/a/0.png --force",
    ),
    ("-o inside the --data tree being trained on", "prune alexnet.pt -o images/p.pt --data images"),
    ("--data tree that loops through a symbolic link", "prune alexnet.pt -o c.pt --data loop"),
    ("--data holding a 400-megapixel PNG (decompression bomb)", "eval random:0:10 --data bomb"),
    ("negative --seed", "prune alexnet.pt --seed -1"),
    ("negative --workers", "eval random:0:10 --data images --workers -1"),
    ("--image-size 0", "eval random:0:10 --data images --image-size 0"),
    ("--momentum outside [0, 1)", "prune alexnet.pt -o c.pt --data images --momentum 1.5"),
    ("a seed beyond 2**63 - 1 in random:SEED", "compress random:99999999999999999999 -o s.dcz"),
    ("--num-classes at its maximum (the model would not fit in memory)", "init --num-classes 1000000 -o big.pt"),
    ("predict --sparse of a .pt (dense weights)", "predict alexnet.pt images --sparse"),
    ("--data holding a 7000x1 PNG (resized: 256 x 1,792,000 pixels)", "eval random:0:10 --data wide"),
    ("predict with --classes reading an endless device", "predict random:0:10 images --classes /dev/zero"),
    ("predict with a glob that matches nothing", "predict random:0:10 nothing*.png"),
    ("predict with --classes naming too few classes", "predict random:0:10 images --classes empty_dir"),
    ("--target-ratio without sensitivity curves", "compress random:0:10 --target-ratio 50 -o t.dcz"),
    ("--curves that is not a sensitivity file", "compress random:0:10 --target-ratio 50 --curves alexnet.pt -o t.dcz"),
    ("--quantizer ecsq with a negative --rate-weight", "quantize alexnet.pt --quantizer ecsq --rate-weight -1"),
    ("images too small for the model", "eval random:0:10 --data images --image-size 16 --resize 16"),
    ("--regrow without training images", "prune alexnet.pt -o r.pt --regrow"),
    ("--importance grad2 without training images", "quantize alexnet.pt -o i.pt --importance grad2"),
    ("compress --data (the search) without validation images", "compress alexnet.pt -o s.dcz --data images --max-drop 1"),
    (
        "compress --data with --rates (the search chooses them)",
        "compress alexnet.pt -o s.dcz --data images --val images --max-drop 1 --rates fc6=0.1",
    ),
    ("compress --data without --max-drop or --target-ratio", "compress alexnet.pt -o s.dcz --data images --val images"),
    ("compress --data --resume without a work folder", "compress alexnet.pt -o s.dcz --data images --val images --max-drop 1 --resume"),
    (
        "compress --data --checkpoint naming a file (the work folder)",
        "compress alexnet.pt -o s.dcz --data images --val images --max-drop 1 --resume --checkpoint notes.txt",
    ),
    ("compress --plot without --data", "compress alexnet.pt -o s.dcz --plot s.png"),
]


def _setting(word: str) -> bool:
    """A shell's leading NAME=VALUE word (an environment variable for the command)."""
    return "=" in word and word.split("=", 1)[0].isupper()


def run_cases() -> list[tuple[str, str, int, str]]:
    """(what, command, exit code, stderr) for every case, in a scratch directory."""
    runner = CliRunner()
    results = []
    previous = os.getcwd()
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        os.environ["TORCH_HOME"] = str(Path(tmp) / "torch-home")  # an empty cache: the download is attempted
        try:
            _make_files(Path(tmp))

            def offline(self, *args):  # the machines this runs on have no network; make sure of it
                raise OSError(101, "Network is unreachable")

            def no_dns(*args, **kwargs):
                raise socket.gaierror(-2, "Name or service not known")

            socket.socket.connect, socket.getaddrinfo = offline, no_dns
            for what, line in CASES:
                words = line.split()  # leading NAME=VALUE words set the environment, as in a shell
                env: dict[str, str] = {}
                while words and _setting(words[0]):
                    name, value = words.pop(0).split("=", 1)
                    env[name] = value
                result = runner.invoke(app, words, env=env)
                results.append((what, line, result.exit_code, result.stderr.strip()))
            assert not Path("pwned.txt").exists()
        finally:
            socket.socket.connect, socket.getaddrinfo = real_connect, real_getaddrinfo
            os.chdir(previous)
    return results


def markdown(results: list[tuple[str, str, int, str]]) -> str:
    lines = [
        "# What a user sees for bad input",
        "",
        "Every case below is run by `tests/test_error_docs.py` against the real CLI, so this table is what the",
        "program prints (regenerate it with `python -m tests.error_cases > docs/ERRORS.md`). Each is one line on",
        "stderr, exit code 1, and no output file (nothing partial, nothing overwritten). Bad usage (an unknown",
        "option, a missing argument, a non-number where a number goes, two pruning methods at once) is click's",
        "usage message with exit code 2.",
        "",
        "| bad input | command | exit | message |",
        "|---|---|---|---|",
    ]
    for what, line, code, message in results:
        cell = message.replace("|", "\\|")
        words = line.split()
        env = words[: next(i for i, w in enumerate(words) if not _setting(w))]
        command = " ".join([*env, "alexcompress", *words[len(env) :]])
        lines.append(f"| {what} | `{command}` | {code} | `{cell}` |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(run_cases()), end="")
