"""Per-tensor work on several cores (`alexcompress --jobs N`): each layer's k-means/ECSQ, each tensor's
pruning and entropy coding. Results are gathered in the tensors' order, so a file is byte for byte the same
whatever the number of jobs.

Worker processes, forked, where that is safe (torch not loaded: its thread pools do not survive a fork):
the work is mostly Python-level loops over numpy calls on small arrays, which threads would serialise on
the GIL; forked workers share the parent's arrays (and memory maps) without copying, and send back only
their results. Threads otherwise, and on systems without fork.

>>> set_jobs(2); ordered_map(abs, [-3, 1, -2]); set_jobs(1)
[3, 1, 2]
"""

from __future__ import annotations

import os
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from alexcompress.errors import AlexCompressError

T = TypeVar("T")
R = TypeVar("R")
MAX_JOBS = 256
_settings = {"jobs": 1}
_task: list[Callable[[Any], Any]] = []  # the function forked workers run (inherited, never pickled)


def jobs() -> int:
    return _settings["jobs"]


def set_jobs(count: int) -> None:
    """Use `count` workers for per-tensor work in this process (0: one per core)."""
    if not 0 <= count <= MAX_JOBS:
        raise AlexCompressError(f"--jobs must be between 0 (one per core) and {MAX_JOBS}, got {count}")
    _settings["jobs"] = count or (os.cpu_count() or 1)


def ordered_map(function: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """`[function(x) for x in items]` on `jobs()` workers, in order; the first error is raised, as it would
    be without workers. Items and results cross to forked workers by pickle; `function` does not."""
    return list(ordered_imap(function, items))


def ordered_imap(function: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
    """`ordered_map`, its results yielded in order as they are ready (at most `2 * jobs()` ahead of the
    consumer: results wait in memory until their turn)."""
    items = list(items)
    workers = min(jobs(), len(items))
    if workers <= 1:
        yield from (function(x) for x in items)
        return
    from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor

    pool: Executor
    if _forkable():
        import multiprocessing

        _task[:] = [function]
        pool, call = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork")), _run
    else:
        pool, call = ThreadPoolExecutor(max_workers=workers), function
    try:
        ahead = 2 * workers
        pending: deque[Future] = deque(pool.submit(call, item) for item in items[:ahead])
        for item in items[ahead:]:  # one more submitted as each result is taken
            result = pending.popleft().result()
            pending.append(pool.submit(call, item))
            yield result
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        _task.clear()


def _run(item: Any) -> Any:
    return _task[0](item)


def _forkable() -> bool:
    return hasattr(os, "fork") and sys.platform == "linux" and "torch" not in sys.modules and not _task
