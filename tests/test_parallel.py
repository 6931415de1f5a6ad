"""`alexcompress --jobs N`: per-tensor work on threads, the same bytes for any N."""

from __future__ import annotations

import subprocess
import sys

import pytest

from alexcompress.errors import AlexCompressError
from alexcompress.parallel import jobs, ordered_map, set_jobs

CLI = [sys.executable, "-m", "alexcompress"]


def test_ordered_map_keeps_order_and_raises_the_first_error():
    set_jobs(3)
    try:
        assert ordered_map(lambda x: x + 1, range(20)) == list(range(1, 21))

        def fail(x):
            if x == 5:
                raise ValueError("five")
            return x

        with pytest.raises(ValueError, match="five"):
            ordered_map(fail, range(10))
    finally:
        set_jobs(1)
    assert jobs() == 1
    with pytest.raises(AlexCompressError, match="--jobs"):
        set_jobs(-1)


@pytest.mark.parametrize("extra", [[], ["--quantizer", "ecsq"]], ids=["k-means", "ecsq"])
def test_any_number_of_jobs_writes_the_same_file(tmp_path, extra):
    files = []
    for j in (1, 2, 0):
        target = tmp_path / f"j{j}.dcz"
        done = subprocess.run(
            [*CLI, "--jobs", str(j), "compress", "random:0:10", "--arch", "resnet18", "--sparsity", "0.7", *extra, "-o", target, "-q"],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        files.append(target.read_bytes())
    assert files[0] == files[1] == files[2]


def test_forked_workers_write_the_same_file_and_report_a_worker_s_error(tmp_path):
    """A safetensors input loads no torch, so --jobs forks worker processes (test_any_number_of_jobs... runs threads)."""
    import ml_dtypes
    import numpy as np

    from alexcompress.models import safetensors

    rng = np.random.default_rng(0)
    state = {f"layers.{i}.weight": (0.05 * rng.standard_normal((256, 512))).astype(ml_dtypes.bfloat16) for i in range(6)}
    state["norm.weight"] = np.ones(512, dtype=ml_dtypes.bfloat16)
    with open(tmp_path / "m.safetensors", "wb") as handle:
        safetensors.write(state, handle)
    code = "import sys, runpy; sys.argv = ['alexcompress'] + sys.argv[1:]; runpy.run_module('alexcompress', run_name='__main__')"
    files = []
    for j in (1, 2, 3):
        target = tmp_path / f"j{j}.dcz"
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                code,
                "--jobs",
                str(j),
                "compress",
                str(tmp_path / "m.safetensors"),
                "--sparsity",
                "0.6",
                "-o",
                str(target),
                "-q",
            ],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        files.append(target.read_bytes())
    assert files[0] == files[1] == files[2]
    state["layers.4.weight"][3, 3] = np.nan
    with open(tmp_path / "bad.safetensors", "wb") as handle:
        safetensors.write(state, handle)
    done = subprocess.run(
        [*CLI, "--jobs", "2", "compress", str(tmp_path / "bad.safetensors"), "--sparsity", "0.6", "-o", str(tmp_path / "bad.dcz")],
        capture_output=True,
        text=True,
    )
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 1 and lines[-1] == "alexcompress: error: layers.4.weight contains NaN or infinite weights", done.stderr
    assert not (tmp_path / "bad.dcz").exists() and not list(tmp_path.glob(".bad.dcz*"))
