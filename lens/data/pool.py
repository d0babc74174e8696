"""Ordered parallel map with bounded memory: worker processes decode, one consumer writes.

At most ``depth`` jobs are in flight, and the next job is submitted only after the consumer
has taken the previous result, so a slow writer never lets results pile up in memory, and a
job may reuse the buffer (shared-memory slot) of the result ``depth`` jobs before it.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from lens.errors import LensError

J = TypeVar("J")
R = TypeVar("R")


def _ignore_sigint() -> None:
    # Ctrl-C reaches the whole process group; only the parent handles it (and cleans up).
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Pool:
    """``workers`` processes (spawned: safe with threads and torch in the parent), or none
    for ``workers == 1``, where jobs run inline."""

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise LensError(f"--workers {workers}: must be at least 1")
        self.workers = workers
        self._executor: ProcessPoolExecutor | None = None
        if workers > 1:
            self._executor = ProcessPoolExecutor(
                max_workers=workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_ignore_sigint,
            )

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is not None:
            self._kill()  # Ctrl-C or an error: do not wait for (possibly stuck) decoding
        self.close()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def _kill(self) -> None:
        if self._executor is None:
            return
        terminate = getattr(self._executor, "terminate_workers", None)  # Python >= 3.14
        if terminate is not None:
            terminate()
            return
        for process in list((getattr(self._executor, "_processes", None) or {}).values()):
            process.terminate()

    def imap(self, fn: Callable[[J], R], jobs: Iterable[J], depth: int) -> Iterator[R]:
        """``fn(job)`` for every job, in job order, at most ``depth`` in flight."""
        if self._executor is None:
            for job in jobs:
                yield fn(job)
            return
        pending: deque[Future[R]] = deque()
        it = iter(jobs)
        for job in it:
            pending.append(self._executor.submit(fn, job))
            if len(pending) >= depth:
                break
        while pending:
            try:
                result = pending.popleft().result()
            except BrokenProcessPool:
                raise LensError(
                    "a worker process died (out of memory?); retry with fewer --workers"
                ) from None
            yield result
            for job in it:
                pending.append(self._executor.submit(fn, job))
                break
