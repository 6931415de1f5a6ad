"""Peak memory of the CLI on hostile inputs, against the input's size: each reader (`.pt`, `.dcz`, images)
must refuse or finish within what the file can justify. Each case is a fresh `alexcompress` process; the
figure is its peak RSS minus that of `alexcompress --version` (the interpreter and imports). The files are
made by a child process: the measuring parent imports neither torch nor numpy, because Linux carries a
parent's peak RSS into its children's ru_maxrss.

    .venv/bin/python benchmarks/bench_hostile.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path

PY = sys.executable


def peak(args: list[str], cwd: Path, stdin: "str | None" = None) -> tuple[float, int, str]:
    source = open(stdin, "rb") if stdin is not None else subprocess.DEVNULL
    child = subprocess.Popen([PY, "-m", "alexcompress", *args], cwd=cwd, stdin=source, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if stdin is not None:
        source.close()
    _, status, usage = os.wait4(child.pid, 0)
    message = child.stderr.read().decode().strip().splitlines()
    child.stderr.close()
    return usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status), (message[-1] if message else "")


def _zip(path: Path, records: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> None:
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in records.items():
            archive.writestr(name, data)


def _numel(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def make(root: Path) -> None:
    """The hostile files, written into `root` (run in a child: it imports torch)."""
    import torch
    from PIL import Image

    from alexcompress.codec.container import MAGIC, PREAMBLE

    _zip(root / "memo.pt", {"archive/data.pkl": b"\x80\x02}r\xff\xff\xff\x7f."})
    _zip(root / "deep.pt", {"archive/data.pkl": b"\x80\x02)" + b"\x85" * 1_000_000 + b"."})
    _zip(root / "zipbomb.pt", {"archive/data.pkl": b"\x80\x02}.", "archive/data/0": bytes(2 << 30)}, zipfile.ZIP_DEFLATED)
    torch.save({"w": torch.zeros(1).expand(10**9)}, root / "expanded.pt")
    subprocess.run([PY, "-m", "alexcompress", "compress", "random:0:10", "-o", str(root / "good.dcz"), "-q"], check=True)
    good = (root / "good.dcz").read_bytes()
    length = PREAMBLE.unpack_from(good)[3]
    header = json.loads(good[PREAMBLE.size : PREAMBLE.size + length])
    header["arch"], header["num_classes"] = "none", 0
    others = sum(_numel(row["shape"]) for row in header["tensors"] if row["name"] != "classifier.1.weight")
    for row in header["tensors"]:  # a valid file declaring the most a header may: 2**28 elements in all
        if row["name"] == "classifier.1.weight":
            row["shape"] = [2**28 - others]
    raw = json.dumps(header).encode()
    (root / "declared.dcz").write_bytes(PREAMBLE.pack(MAGIC, 1, 0, len(raw), zlib.crc32(raw)) + raw + good[PREAMBLE.size + length :])
    (root / "bomb" / "a").mkdir(parents=True)
    Image.new("1", (20_000, 20_000)).save(root / "bomb" / "a" / "0.png")
    (root / "plain" / "a").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(root / "plain" / "a" / "0.png")
    Image.new("L", (7000, 1)).save(root / "wide.png")
    (root / "deep.json").write_text("[" * 1_000_000 + "]" * 1_000_000)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--make":
        make(Path(sys.argv[2]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        subprocess.run([PY, __file__, "--make", str(root)], check=True)
        base, _, _ = peak(["--version"], root)
        cases = [
            (".pt: pickle memo index 2**31", ["info", "memo.pt"], root / "memo.pt", None),
            (".pt: pickle nested 1,000,000 deep", ["info", "deep.pt"], root / "deep.pt", None),
            (".pt: 2 GiB of zeros deflated (zip bomb)", ["info", "zipbomb.pt"], root / "zipbomb.pt", None),
            (".pt: stride-0 view of 10**9 elements", ["info", "expanded.pt"], root / "expanded.pt", None),
            (".dcz: 'none' header declaring 2**28 elements", ["decode", "declared.dcz", "-o", "d.pt"], root / "declared.dcz", None),
            (
                "--data: a 400-megapixel PNG",
                ["eval", "random:0:10", "--data", "bomb", "--device", "cpu"],
                root / "bomb" / "a" / "0.png",
                None,
            ),
            (
                "(reference) --data: one 8x8 PNG",
                ["eval", "random:0:10", "--data", "plain", "--device", "cpu"],
                root / "plain" / "a" / "0.png",
                None,
            ),
            ("/dev/zero as input", ["info", "/dev/zero"], None, None),
            ("predict: a 7000x1 PNG (resized: 256 x 1,792,000)", ["predict", "random:0:10", "wide.png"], root / "wide.png", None),
            ("predict: paths from an endless stdin", ["predict", "random:0:10", "-"], None, "/dev/zero"),
            ("predict --classes /dev/zero", ["predict", "random:0:10", "plain/a/0.png", "--classes", "/dev/zero"], None, None),
            (
                "--resume from a zip-bomb checkpoint",
                ["prune", "random:0:10", "--data", "plain", "--resume", "--checkpoint", "zipbomb.pt", "-o", "r.pt"],
                root / "zipbomb.pt",
                None,
            ),
            (
                "--curves nested 1,000,000 deep",
                ["compress", "random:0:10", "--target-ratio", "20", "--curves", "deep.json", "-o", "c.dcz"],
                root / "deep.json",
                None,
            ),
        ]
        print(f"baseline (alexcompress --version): {base:.0f} MB peak RSS\n")
        print("| hostile input | file size | peak RSS above baseline | exit | message |")
        print("|---|---:|---:|---:|---|")
        for label, args, path, stdin in cases:
            rss, code, message = peak(args, root, stdin)
            size = f"{path.stat().st_size:,} B" if path is not None else "endless"
            print(f"| {label} | {size} | {rss - base:.0f} MB | {code} | `{message[:110]}` |", flush=True)


if __name__ == "__main__":
    main()
