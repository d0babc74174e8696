"""Stop requests: SIGUSR2 (Slurm/submitit before a time limit) and SIGTERM (preemption).

The handler only sets a flag; the training loop checks it at each step boundary, writes a
checkpoint and raises ``TaskInterrupted`` (exit code 75, EX_TEMPFAIL: run me again). Doing
real work inside a handler can deadlock (e.g. inside a collective or a CUDA call).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

EXIT_TEMPFAIL = 75
STOP_SIGNALS = (signal.SIGUSR2, signal.SIGTERM)


class TaskInterrupted(Exception):
    """Raised after the checkpoint is written; the task should be run again to resume."""

    exit_code = EXIT_TEMPFAIL


class StopFlag:
    """Set by a signal handler (or by tests/callers via ``request``), read by the loop."""

    def __init__(self) -> None:
        self.signal_name: str | None = None

    def request(self, name: str = "request") -> None:
        self.signal_name = name

    def __bool__(self) -> bool:
        return self.signal_name is not None


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopFlag]:
    """Install flag-setting handlers for SIGUSR2 and SIGTERM; restore the old ones after.

    Outside the main thread (where Python cannot install handlers) the flag is still
    returned and can be set by the caller.
    """
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: object) -> None:
        flag.request(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
