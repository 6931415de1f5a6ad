"""Inputs the coverage-guided fuzzers (fuzz/) found, kept as regression tests: each must end in the
reader's own error, never another exception. Add a finding here before fixing it."""

from __future__ import annotations

import base64

import pytest

from alexcompress.errors import AlexCompressError, ModelError
from alexcompress.models.dcz import decode_arrays
from alexcompress.models.ptfile import read_state_dict

PT_FINDINGS = [
    # crash-7cf3782c57f631468e40588600457ad2d44c2577: zipfile raised NotImplementedError ("zip file version 7.5") past our handler
    base64.b64decode(
        "UEsDBBQAAAj/////AACQ8y01xAIAAMQCAAAQABIAYXJjaGl2ZS9kYXRhLnBrbEZCDgBaWlpaWlpaWlpaWlpaWoACY2NvbGxlY3Rp"
        "ZXJzaW9uRkIHAFpaWlpaWlozClBLAQIUABQAAAgAAAAAAACQ8y01xAIAAMQCAAAQAAAAAAAAAAAAAAAAAAAAAABhcmNoaXZlL2Rh"
        "dGEucGtsUEsBAhQAFAAACAAAAAAAALfv/////wAAAQAAABcAAAAAAAAAAAAAAAAABAMAAGFyY2hpdmUvLmZvcm1hdF92ZXJzaW9u"
        "UEsBAhQAFAAACAAAAAAAAD93cekCAAAAAgAAABoAAAAAAAAAAAAAAAAAQQMAAGFyY2hpdmUvLnN0b3JhZ2VfYWxpZ25tZW50UEsB"
        "AhQAFAAACAAAAAAAAIU94xkGAAAABgAAABEAAAAAAAAAAAAAAAAAggMAAGFyY2hpdmUvYnl0ZW9yZGVyUEsBAhQAFAAACAAAAAAA"
        "AOHr2haIAgAAiAIAAA4AAAAAAAAAAAAAAAAAxgMAAGFyY2hpdmUvZGF0YS8wUEsBAhQAFAAACAAAAAAAAPI92JkYAAAAGAAAAA4A"
        "AAAAAAAAAAAAAAAAiAYAAGFyY2hpdmUvZGF0YS8xUEsBAhQACAAAAAAUAAAAAHTI8P3gAQAA4AEAAA4AAAAAAAAAAAAAAAAA2AYA"
        "AGFyY2hpdmUvZGF0YS8yUEsBAhQAFAAACAAAAAAAAIrYresIAAAACAAAAA4AAAAAAAAAAAAAAAAAIAkAAGFyY2hpdmUvZGF0YS8z"
        "UEsBAhQA6wAACAAAAAAAANGeZ1UCAG9yYWdlX2FsaWdubWVudEZCAwBaWlo2NFBLAwQUAAAIAAAjc2lvblBLBQYAAAAACQAJADcC"
        "AADCCQAAAAA="
    ),
    # crash-df897ceca755d4b072ebe282c2eb898ff7fc7122: zipfile raised NotImplementedError ("zip file version 7.5") past our handler
    base64.b64decode(
        "UEsDBBQAAAgAAAAAAACQ8y01xAIAAMQCAAAQABIAYXJjaGl2ZS9kYXRhLnBrbEZCDgBaWlpaWlpaWlpaWlpaWoACY2NvbGxlY3Rp"
        "b25zCk9yZGVyZWREaWN0CilSKFgLAAAAY29udi53ZWlnaHRjdG9yY2guX3V0aWxzCl9yZWJ1aWxkX3RlbnNvcl92MgooKFgHAAAA"
        "c3RvcmFnZWN0b3JjaApGbG9hdFN0b3JhZ2UKWAEAAAAwWAMAAABjcHVLonRRSwAoSwZLA0sDSwN0KEsbSwlLA0sBdIljY29sbGVj"
        "dGlvbnMKT3JkZXJlZERpY3QKKVJ0UlgJAAAAY29udi5iaWFzY3RvcmNoLl91dGlscwpfcmVidWlsZF90ZW5zb3JfdjIKKChYBwAA"
        "AHN0b3JhZ2VjdG9yY2gKRmxvYXRTdG9yYWdlClgBAAAAMVgDAAAAY3B1SwZ0UUsAKEsGdChLAXSJY2NvbGxlY3Rpb25zCk9yZGVy"
        "ZWREaWN0CilSdFJYCQAAAGZjLndlaWdodGN0b3JjaC5fdXRpbHMKX3JlYnVpbGRfdGVuc29yX3YyCigoWAcAAABzdG9yYWdlY3Rv"
        "cmNoCkZsb2F0U3RvcmFnZQpYAQAAADJYAwAAAGNwdUt4dFFLAChLBEsedChLHksBdIljY29sbGVjdGlvbnMKT3JkZXJlZERpY3QK"
        "KVJ0UlgYAAAAbm8/UpGIP3tEQz3jqWo/vuy9Pvb5HD952Bu+XKjOlcO+6lonQC0hpr4MUZy/f8FOPn0RH71TfYg/M/Brv+4BTj+5"
        "TVo/ju0qv3ApJz4prFS/uCEWQH5CNL9g+ee+YW2Iv882sb6vi8C71I1EP9pIHL+HOz6+hk+1v6LQU78nXzBAdUeFP2gLSL/VL6u/"
        "zL95vwixsby6Pg49a44+v3mupL+AELY/UUPnPmHHv74D9WG+T48HvyvoO8Ac4Ow9mQeJv/ZXgL9QSwMEFAAACAAAAAAAAIrYresI"
        "AAAACAAAAA4ANABhcmNoaXZlL2RhdGEvM0ZCMABaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpa"
        "WloDAAAAAAAAAFBLAwQUAAAIAAAAAAAA0Z5nVQIAAAACAAAADwALAGFyY2hpdmUvdmVyc2lvbkZCBwBaWlpaWlpaMwpQSwECFAAU"
        "AAAIAAAAAAAAkPMtNcQCAADEAgAAEAAAAAAAAAAAAAAAAAAAAAAAYXJjaGl2ZS9kYXRhLnBrbFBLAQIUABQAAAggAAAAAAC379yD"
        "AQAAAAEAAAAXAAAAAAAAAAAAAAAAAAQDAABhcmNoaXZlLy5mb3JtYXRfdmVyc2lvblBLAQIUABQAAAgAAAAAAAA/d3HpAgAAAAIA"
        "AAAaAAAAAAAAAAAAAAAAAEEDAABhcmNoaXZlLy5zdG9yYWdlX2FsaWdubWVudFBLAQIUABQAAAgAAAAAAACFPeMZBgAAAAYAAAAR"
        "AAAAAAAAAAAAAAAAAIIDAABhcmNoaXZlL2J5dGVvcmRlclBLAQIUABQAAAgAAAAAAADh69oWiAIAAIgCAAAOAAAAAAAAAAAAAAAA"
        "AMYDAABhcmNoaXZlL2RhdGEvMFBLAQIUABQAAAgAAAAAAADyPdiZGAAAABgAAAAOAAAAAAAAAAAAAAAAAIgGAABhcmNoaXZlL2Rh"
        "dGEvMVBLAQICq0tkAAAAAAAAAAB0yPD94AEAAOABAAAOAAAAAAAAAAAAAAAAANgGAABhcmNoaXZlL2RhdGEvMlBLAQIUABQAAAgA"
        "AAAAAACK2K3rCAAAAAgAAAAOAAAAAAAAAAAAAAAAACAJAABhcmNoaXZlL2RhdGEvM1BLAQIUABQAAAgAAAAAAADRnmdVAgAAAAIA"
        "AAAPAAAAAAAAAAAAAAAAAIgJAABhcmNoaXZlL3ZlcnNpb25QSwUGAAAAAAkACQA3AgAAwgkAAAAA"
    ),
]

DCZ_FINDINGS: list[bytes] = [
    # an unknown architecture name in a re-signed header: the reader imported torchvision to look it up
    # (3.6 s, 680 MB) before refusing it; names outside the shipped index are refused without torch now
    base64.b64decode(
        "iURDWg0KGgoBAAAAlgYAAPwC9el7ImFyY2giOiAibm9uZyIsICJmb3JtYXQiOiAiZGN6IiwgIm51bV9jbGFzc2VzIjogMCwgIm9w"
        "dGlvbnMiOiB7ImNvbnZfYml0cyI6IDIsICJmY19iaXRzIjogMiwgImluZGV4X2JpdHMiOiAiYXV0byIsICJpbml0IjogImxpbmVh"
        "ciIsICJwcnVuZSI6ICJnbG9iYWwgc3BhcnNpdHkgMC45IiwgInNlZWQiOiAwLCAic2hhcmVkX2NvZGVib29rIjogZmFsc2V9LCAi"
        "cHJvZHVjZXIiOiAiYWxleGNvbXByZXNzIDAuMi4wIiwgInRlbnNvcnMiOiBbeyJjb2RlX2JpdHMiOiA3MiwgImNvZGVib29rX3Np"
        "emUiOiA0LCAiZHR5cGUiOiAiZmxvYXQzMiIsICJlbmNvZGluZyI6ICJzcGFyc2VfaHVmZm1hbiIsICJlbnRyaWVzIjogNDYsICJn"
        "YXBfYml0cyI6IDY1LCAiaW5kZXhfYml0cyI6IDIsICJuYW1lIjogImNvbnYud2VpZ2h0IiwgIm5ueiI6IDEzLCAic2VjdGlvbnMi"
        "OiBbeyJjcmMzMiI6IDI4ODU2MTkxMTgsICJraW5kIjogImNvZGVib29rIiwgImxlbmd0aCI6IDE2LCAib2Zmc2V0IjogMH0sIHsi"
        "Y3JjMzIiOiAzNDQ1MzU4MzgzLCAia2luZCI6ICJjb2RlX2xlbmd0aHMiLCAibGVuZ3RoIjogNSwgIm9mZnNldCI6IDE2fSwgeyJj"
        "cmMzMiI6IDM1NzU3NjE1NjMsICJraW5kIjogImdhcF9sZW5ndGhzIiwgImxlbmd0aCI6IDQsICJvZmZzZXQiOiAyMX0sIHsiY3Jj"
        "MzIiOiAzMDc2NzcwMzE3LCAia2luZCI6ICJjb2RlcyIsICJsZW5ndGgiOiA5LCAib2Zmc2V0IjogMjV9LCB7ImNyYzMyIjogMjg5"
        "NDk5MTk2OCwgImtpbmQiOiAiZ2FwcyIsICJsZW5ndGgiOiA5LCAib2Zmc2V0IjogMzR9XSwgInNoYXBlIjogWzYsIDMsIDMsIDNd"
        "fSwgeyJkdHlwZSI6ICJmbG9hdDMyIiwgImVuY29kaW5nIjogInJhdyIsICJuYW1lIjogImNvbnYuYmlhcyIsICJzZWN0aW9ucyI6"
        "IFt7ImNyYzMyIjogMTkzMDQ5NTcwOSwgImtpbmQiOiAiZGF0YSIsICJsZW5ndGgiOiAyNCwgIm9mZnNldCI6IDQzfV0sICJzaGFw"
        "ZSI6IFs2XX0sIHsiY29kZV9iaXRzIjogNjQsICJjb2RlYm9va19zaXplIjogNCwgImR0eXBlIjogImZsb2F0MzIiLCAiZW5jb2Rp"
        "bmciOiAic3BhcnNlX2h1ZmZtYW4iLCAiZW50cmllcyI6IDM3LCAiZ2FwX2JpdHMiOiA1OSwgImluZGV4X2JpdHMiOiAyLCAibmFt"
        "ZSI6ICJmYy53ZWlnaHQiLCAibm56IjogMTUsICJzZWN0aW9ucyI6IFt7ImNyYzMyIjogMzI3OTI2NDQ1MSwgImtpbmQiOiAiY29k"
        "ZWJvb2siLCAibGVuZ3RoIjogMTYsICJvZmZzZXQiOiA2N30sIHsiY3JjMzIiOiAyMjkwNTM3MTE3LCAia2luZCI6ICJjb2RlX2xl"
        "bmd0aHMiLCAibGVuZ3RoIjogNSwgIm9mZnNldCI6IDgzfSwgeyJjcmMzMiI6IDM1NzU3NjE1NjMsICJraW5kIjogImdhcF9sZW5n"
        "dGhzIiwgImxlbmd0aCI6IDQsICJvZmZzZXQiOiA4OH0sIHsiY3JjMzIiOiAyNTc5NzY2MDE3LCAia2luZCI6ICJjb2RlcyIsICJs"
        "ZW5ndGgiOiA4LCAib2Zmc2V0IjogOTJ9LCB7ImNyYzMyIjogNzE2ODQxNzYzLCAia2luZCI6ICJnYXBzIiwgImxlbmd0aCI6IDgs"
        "ICJvZmZzZXQiOiAxMDB9XSwgInNoYXBlIjogWzQsIDMwXX0sIHsiZHR5cGUiOiAiaW50NjQiLCAiZW5jb2RpbmciOiAicmF3Iiwg"
        "Im5hbWUiOiAibm9ybXVtLm5fYmF0Y2hlc190cmFja2VkIiwgInNlY3Rpb25zIjogW3siY3JjMzIiOiAzOTU0MDM4OTIyLCAia2lu"
        "ZCI6ICJkYXRhIiwgImxlbmd0aCI6IDgsICJvZmZzZXQiOiAxMDh9XSwgInNoYXBlIjogW119XX2gDhnAnSLav5pm5z+3TRVAAwMD"
        "AwECAwMBAlfUBRRBhOA0ApcA4whDYB+AZx0hvz0RbT4lPTM/duUpPwZ6/D//L1Y+NmclwFKS279j5PA/bRc/QAQCAwQBAgMDAUen"
        "TZgIsEd6ckspgMaDGkADAAAAAAAAAA=="
    ),
]


@pytest.mark.parametrize("data", PT_FINDINGS, ids=lambda d: f"{len(d)}B")
def test_pt_findings_end_in_a_model_error(data):
    with pytest.raises(ModelError):
        read_state_dict(data)


@pytest.mark.parametrize("data", DCZ_FINDINGS, ids=lambda d: f"{len(d)}B")
def test_dcz_findings_end_in_the_readers_error(data):
    with pytest.raises(AlexCompressError):
        decode_arrays(data)


def test_the_harnesses_run_a_few_seconds_without_a_finding(tmp_path):
    """A short coverage-guided run of each harness in fuzz/ (atheris is in the test extra): a new harness is
    run the day it is added."""
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("atheris")
    root = Path(__file__).resolve().parents[1]
    harnesses = sorted(p.name for p in (root / "fuzz").glob("*.py") if p.stem not in ("__init__", "seeds"))
    assert {"pt_reader.py", "dcz_reader.py", "curves_reader.py", "checkpoint_reader.py", "image_loader.py"} <= set(harnesses)
    for harness in harnesses:
        # A fixed seed and count: the same inputs on every run, so CI is deterministic. Started through a
        # shell that forks it: Linux carries ru_maxrss (libFuzzer's RSS reading) across exec, so a direct
        # child of this large test process would start "out of memory".
        command = [
            sys.executable,
            str(root / "fuzz" / harness),
            str(tmp_path / harness),
            "-seed=1",
            "-runs=3000",
            "-rss_limit_mb=2048",
            f"-artifact_prefix={tmp_path}/",
        ]
        done = subprocess.run(["bash", "-c", '"$@"; exit $?', "fuzz", *command], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "Done 3000 runs" in done.stderr


def test_a_reader_refuses_an_unknown_architecture_without_importing_torch():
    """The slow finding above, as its cause: a name read from a file never makes the reader import torch."""
    import subprocess
    import sys

    code = (
        "import sys, base64\n"
        "from tests.test_fuzz_findings import DCZ_FINDINGS\n"
        "from alexcompress.models.dcz import decode_arrays\n"
        "try:\n    decode_arrays(DCZ_FINDINGS[0])\nexcept Exception as exc:\n    print(type(exc).__name__, exc)\n"
        "print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.splitlines() == ["DczError header: unknown architecture 'nong' (written by alexcompress 0.2.0)", "False"], (
        done.stderr
    )


def test_checkpoint_with_a_damaged_record_is_one_error(tmp_path):
    """fuzz/checkpoint_reader.py, within its first 20 runs: a checkpoint whose data.pkl fails zipfile's CRC-32
    escaped `ptfile.check_archive` as BadZipFile (a traceback on --resume)."""
    import io
    import struct
    import zipfile

    import torch

    from alexcompress.train.checkpoint import load_checkpoint

    buffer = io.BytesIO()
    torch.save({"format": "alexcompress-checkpoint", "epoch": 1}, buffer)
    data = bytearray(buffer.getvalue())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        info = archive.getinfo(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    name_length, extra_length = struct.unpack_from("<HH", data, info.header_offset + 26)  # the local header's own lengths
    start = info.header_offset + 30 + name_length + extra_length
    data[start + 2] ^= 0xFF  # inside the pickle: its CRC-32 no longer matches
    path = tmp_path / "c.ckpt"
    path.write_bytes(bytes(data))
    with pytest.raises(AlexCompressError, match="c.ckpt: not a readable torch file, or truncated"):
        load_checkpoint(str(path))
