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
