"""The reader under fuzzing: every case ends in DczError or a clean decode, within time and memory bounds."""

from __future__ import annotations

import numpy as np

from alexcompress.codec.container import read_dcz
from tests.fuzz_dcz import run, sample_file


def test_fuzzed_files_end_in_dcz_error_or_a_clean_decode():
    original = read_dcz(sample_file(0))[1]

    def codebook_values_only(tensors):  # coded tensors decode to zeros and finite codebook values
        for name in ("a.weight", "b.weight", "c.weight", "d.weight", "e.weight", "f.weight"):
            assert np.isfinite(tensors[name]).all()

    report = run(3000, seed=0, check=codebook_values_only)
    assert report.cases == 3000
    assert report.crashes == []
    assert report.over_budget == []  # never more than the declared dense output + 64 MiB
    assert report.errors > 2500  # the mutations really do break files
    # a hang guard, not a benchmark: the slowest case takes milliseconds
    assert report.slowest < 5.0, report.slowest_case
    assert set(original) == {"a.weight", "b.weight", "c.weight", "a.bias", "d.weight", "e.weight", "f.weight"}
