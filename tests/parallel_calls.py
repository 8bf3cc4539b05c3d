"""Calls released together, for tests that race parallel clients against one guarantee."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


def at_once(calls: list[Callable[[], T]], pool: ThreadPoolExecutor | None = None) -> list[T]:
    """Run the calls in parallel threads released together by a barrier, their results in
    order; an exception in any is raised here. `pool`: threads kept across rounds (it must
    have a thread per call); without it, a pool of their own."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], T]) -> T:
        barrier.wait()
        return call()

    if pool is not None:
        return [future.result() for future in [pool.submit(run, call) for call in calls]]
    with ThreadPoolExecutor(len(calls)) as own:
        return [future.result() for future in [own.submit(run, call) for call in calls]]
