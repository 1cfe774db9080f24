"""Both cores: independent pieces of work on worker threads, the BLAS pinned to one thread each.

NumPy runs an elementwise pass on one core, and its BLAS spreads each matrix product
over all of them. Work that splits into independent pieces (the importance-sampled
evaluation, image by image; a training step, a part of the batch each) runs faster on
Python threads, which NumPy lets run at once, than as one piece on the BLAS's
threads, but only if the BLAS does not also spread each piece's products over every
core: its threads and the workers would fight for the cores. :func:`pinned` limits
the BLAS to one thread while the workers run (with threadpoolctl, the one extra
dependency; the README gives the measured reason) and restores it afterwards.

Evaluation never depends on the number of threads: each piece is computed the same
way whoever runs it (with the BLAS on one thread whatever the count, and from its own
seeded noise), and pieces are combined in a fixed order. A data-parallel training
step sums one gradient per worker, so its bits depend on the worker count: with a
fixed count it repeats exactly; with another, it agrees up to rounding. :func:`threads` is how many
workers a job gets: an explicit count, or the machine's cores.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import os
import threading
from typing import Callable, Iterable, Iterator, TypeVar

from threadpoolctl import ThreadpoolController

__all__ = ["threads", "pinned", "pool_map"]

T = TypeVar("T")
R = TypeVar("R")

_lock = threading.Lock()


def threads(n: int | None = None) -> int:
    """The number of worker threads: ``n`` if given (>= 1), else the cores this process may use."""
    if n is not None:
        if int(n) < 1:
            raise ValueError(f"threads must be >= 1, got {n}")
        return int(n)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@functools.lru_cache(maxsize=None)
def _controller() -> ThreadpoolController:
    """The loaded thread pools, found once (looking them up again costs a third of a millisecond)."""
    return ThreadpoolController()


@contextlib.contextmanager
def pinned() -> Iterator[None]:
    """The BLAS on one thread for the duration (nestable; restored afterwards)."""
    with _lock:
        limits = _controller().limit(limits=1, user_api="blas")
    try:
        yield
    finally:
        with _lock:
            limits.restore_original_limits()


@functools.lru_cache(maxsize=None)
def _pool(n: int) -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(n, thread_name_prefix="minivae")


def pool_map(fn: Callable[[T], R], items: Iterable[T], n: int) -> list[R]:
    """``[fn(item) for item in items]``, on ``n`` worker threads when n > 1, in order.
    The caller pins the BLAS (:func:`pinned`) around it."""
    items = list(items)
    if n <= 1 or len(items) <= 1:
        return [fn(item) for item in items]
    return list(_pool(n).map(fn, items))
