"""Per-tensor work on several cores (`alexcompress --jobs N`): k-means/ECSQ of each layer, each tensor's
entropy coding. Threads, not processes: the work is numpy's and bitarray's (which release the GIL on large
arrays), the tensors are shared rather than pickled, and results are gathered in the tensors' order, so a
file is byte for byte the same whatever the number of jobs.

>>> set_jobs(2); ordered_map(lambda x: x * x, [3, 1, 2]); set_jobs(1)
[9, 1, 4]
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import TypeVar

from alexcompress.errors import AlexCompressError

T = TypeVar("T")
R = TypeVar("R")
MAX_JOBS = 256
_settings = {"jobs": 1}


def jobs() -> int:
    return _settings["jobs"]


def set_jobs(count: int) -> None:
    """Use `count` threads for per-tensor work in this process (0: one per core)."""
    if not 0 <= count <= MAX_JOBS:
        raise AlexCompressError(f"--jobs must be between 0 (one per core) and {MAX_JOBS}, got {count}")
    _settings["jobs"] = count or (os.cpu_count() or 1)


def ordered_map(function: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """`[function(x) for x in items]`, on `jobs()` threads, in order; the first error is raised (as one
    job's would be), after the others have stopped."""
    items = list(items)
    if jobs() <= 1 or len(items) <= 1:
        return [function(x) for x in items]
    from concurrent.futures import ThreadPoolExecutor

    # the largest tensors first would balance better, but order of submission does not change results
    with ThreadPoolExecutor(max_workers=min(jobs(), len(items))) as pool:
        return list(pool.map(function, items))
