"""Signals that stop a command: a Ctrl-C that is never lost, SIGUSR2/SIGTERM that unwind a
task (so its temporary files are removed) instead of killing it, and a SIGUSR2 that comes
too late to matter (:func:`ignore_late_notices`).

Python turns SIGINT into a KeyboardInterrupt raised wherever the main thread happens to be.
If that is inside a weakref callback or a ``__del__`` (h5py and multiprocessing run such
finalizers all the time), Python prints "Exception ignored" and carries on, and the command
would finish as if nothing had happened. ``remember_sigint`` keeps raising at once as usual,
but also remembers the signal, and ``check()`` raises it again at the caller's safe points.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_seen = False


def _handler(signum: int, frame: Any) -> None:
    global _seen
    _seen = True
    raise KeyboardInterrupt


@contextmanager
def remember_sigint() -> Iterator[None]:
    """Within the block, a Ctrl-C raises KeyboardInterrupt now and at every ``check()``."""
    global _seen
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread; nothing to remember here
        return
    _seen = False
    previous = signal.signal(signal.SIGINT, _handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _seen = False


def check() -> None:
    """Raise KeyboardInterrupt if a Ctrl-C came since ``remember_sigint`` began."""
    if _seen:
        raise KeyboardInterrupt


class Stopped(Exception):
    """SIGUSR2 or SIGTERM while a task runs: unwind (temporary files are removed)."""


@contextmanager
def stop_on_signals(active: bool = True) -> Iterator[None]:
    """While active, SIGUSR2 (Slurm's warning before a time limit or preemption) and SIGTERM
    (scancel) raise :class:`Stopped` in the main thread; a second signal during the
    clean-up is ignored."""
    if not active or threading.current_thread() is not threading.main_thread():
        yield
        return
    wanted = (signal.SIGUSR2, signal.SIGTERM)
    previous = {s: signal.getsignal(s) for s in wanted}

    def handler(signum: int, frame: Any) -> None:
        for s in wanted:
            signal.signal(s, signal.SIG_IGN)
        raise Stopped(f"stopped by {signal.Signals(signum).name}")

    for s in wanted:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def ignore_late_notices() -> None:
    """The work is over (done, or checkpointed and exiting 75): ignore SIGUSR2 from now on.

    Slurm's time-limit notice may come while the process ends. Python resets its own handlers
    to the default as it shuts down, and SIGUSR2's default ends the process (exit 140): a task
    whose result is written would be reported FAILED, one that checkpointed not requeued.
    SIGTERM keeps its handler: a cancel still cancels.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)
