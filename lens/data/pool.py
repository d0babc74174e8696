"""Ordered parallel map with bounded memory: worker processes do the jobs, one consumer
takes the results in order.

At most ``depth`` jobs are in flight, and the next job is submitted only after the consumer
has taken the previous result, so a slow consumer never lets results pile up in memory, and a
job may reuse the buffer (shared-memory slot) of the result ``depth`` jobs before it.
"""

from __future__ import annotations

import multiprocessing
import signal
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Any, TypeVar

from lens import interrupts
from lens.errors import LensError

J = TypeVar("J")
R = TypeVar("R")


def _ignore_sigint() -> None:
    # Ctrl-C reaches the whole process group; only the parent handles it (and cleans up).
    # The process was started with SIGINT blocked (see _sigint_blocked), so a Ctrl-C during
    # its start-up waits here and is discarded by SIG_IGN instead of killing it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


_END = object()


def _nothing() -> None:
    """A job that starts a worker process."""


@contextmanager
def _sigint_blocked() -> Iterator[None]:
    """Processes started in here inherit a blocked SIGINT (fork and exec keep the mask); the
    parent gets a Ctrl-C made meanwhile when the block ends."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _context(warm: Callable[[], Any] | None) -> multiprocessing.context.BaseContext:
    """Workers forked from a fork server (where available), never from this process: safe
    with threads and torch here, and cheaper than spawning, since the server imports warm's
    module once and every worker starts with it."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    if warm is not None:
        ctx.set_forkserver_preload([warm.__module__])  # used when the server first starts
    return ctx


class Pool:
    """``workers`` processes, or none for ``workers == 1``, where jobs run inline."""

    def __init__(self, workers: int, warm: Callable[[], Any] | None = None) -> None:
        if workers < 1:
            raise LensError(f"--workers {workers}: must be at least 1")
        self.workers = workers
        self._executor: ProcessPoolExecutor | None = None
        if workers > 1:
            self._executor = ProcessPoolExecutor(
                max_workers=workers,
                mp_context=_context(warm),
                initializer=_ignore_sigint,
            )
            # One job per worker starts every process (each submit starts one; warm's module
            # is imported there). Starting them waits for the fork server, so a thread does
            # it while the caller goes on with its set-up and its first jobs (see imap).
            self._warm: list[Future[Any]] = []
            self._start_error: BaseException | None = None
            self._starter = threading.Thread(target=self._start, args=(warm,), daemon=True)
            self._starter.start()

    def _start(self, warm: Callable[[], Any] | None) -> None:
        assert self._executor is not None
        try:
            with _sigint_blocked():  # this thread's mask: Ctrl-C goes to the main thread
                self._warm = [self._executor.submit(warm or _nothing) for _ in range(self.workers)]
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            self._start_error = exc

    def _started(self) -> bool:
        if self._starter.is_alive():
            return False
        if self._start_error is not None:
            raise LensError(f"could not start the worker processes: {self._start_error}")
        return all(f.done() for f in self._warm)

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is not None:
            self._kill()  # Ctrl-C or an error: do not wait for (possibly stuck) decoding
        self.close()

    def close(self) -> None:
        if self._executor is not None:
            self._starter.join()
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def _kill(self) -> None:
        if self._executor is None:
            return
        self._starter.join()  # a process being started is then killed too
        terminate = getattr(self._executor, "terminate_workers", None)  # Python >= 3.14
        if terminate is not None:
            terminate()
            return
        for process in list((getattr(self._executor, "_processes", None) or {}).values()):
            process.terminate()

    def imap(
        self,
        fn: Callable[[J], R],
        jobs: Iterable[J],
        depth: int,
        inline: Callable[[J], R] | None = None,
    ) -> Iterator[R]:
        """``fn(job)`` for every job, in job order, at most ``depth`` in flight.

        Jobs run here, as ``inline(job)`` (default ``fn``), when there are no workers, and
        while the workers are still starting, so their start-up costs no wall time."""
        here = inline or fn
        it = iter(jobs)
        if self._executor is None:
            for job in it:
                yield here(job)
            return
        while not self._started():
            job = next(it, _END)
            if job is _END:
                return
            yield here(job)  # type: ignore[arg-type]
        # Every worker is up (the starter made them all), so submitting starts no process.
        pending: deque[Future[R]] = deque()
        for job in it:
            pending.append(self._executor.submit(fn, job))
            if len(pending) >= depth:
                break
        while pending:
            try:
                result = pending.popleft().result()
            except BrokenProcessPool:
                interrupts.check()  # workers killed by a Ctrl-C: that is the news, not a death
                raise LensError(
                    "a worker process died (out of memory?); retry with fewer --workers"
                ) from None
            yield result
            for job in it:
                pending.append(self._executor.submit(fn, job))
                break
