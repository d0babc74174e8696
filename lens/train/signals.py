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


# A SIGUSR2 that came while the task was not training (see remember_early_requests).
_pending = StopFlag()


def remember_early_requests() -> None:
    """From now on SIGUSR2 outside the training loop is remembered, not fatal.

    Its default action ends the process (exit 140): a task still importing torch or reading
    its checkpoint when Slurm signals it would fail instead of being requeued, and one that
    has already written its result would be reported as failed. ``stop_on_signals`` hands a
    remembered request to the loop, which checkpoints at its first step and exits 75.
    SIGTERM keeps its default: a cancel or a preemption during start-up loses nothing.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGUSR2, lambda signum, frame: _pending.request("SIGUSR2"))


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopFlag]:
    """Install flag-setting handlers for SIGUSR2 and SIGTERM; restore the old ones after.

    Outside the main thread (where Python cannot install handlers) the flag is still
    returned and can be set by the caller.
    """
    flag = StopFlag()
    if _pending:  # asked to stop before training began
        flag.request(_pending.signal_name or "SIGUSR2")
        _pending.signal_name = None
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
