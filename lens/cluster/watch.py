"""Show a run's per-fold table while it changes: `lens submit --wait` and the local driver.

On a terminal the table is redrawn in place (rich Live); in a log or a pipe one summary
line is printed whenever it changes, and the full table at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lens.cluster.status import RunStatus, render_table, run_status, summary_line
from lens.errors import LensError

# A report job sacct has not heard of yet (just submitted): how long to keep asking.
UNKNOWN_GRACE_S = 120.0


class Display:
    """``update(run)`` redraws; use as a context manager."""

    def __init__(self, console: Any) -> None:
        self.console = console
        self.live: Any = None
        self.last_line = ""
        self.status: RunStatus | None = None

    def __enter__(self) -> Display:
        if self.console.is_terminal:
            from rich.live import Live

            self.live = Live(console=self.console, refresh_per_second=2, transient=False)
            self.live.start()
        return self

    def update(self, run: Path, status: RunStatus | None = None) -> RunStatus:
        self.status = status or run_status(run)
        if self.live is not None:
            self.live.update(render_table(self.status))
        else:
            line = summary_line(self.status)
            if line != self.last_line:
                self.console.print(line, highlight=False, soft_wrap=True)
                self.last_line = line
        return self.status

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.stop()
        elif self.status is not None:
            self.console.print(render_table(self.status))


def wait_for_report(run: Path, console: Any, *, poll: float = 3.0,
                    timeout: float | None = None,
                    status_of: Callable[[Path], RunStatus] = run_status) -> RunStatus:
    """Redraw the table until the run's latest report job has finished; its final status."""
    start = time.monotonic()
    unknown_since: float | None = None
    with Display(console) as display:
        while True:
            status = display.update(run, status_of(run))
            report = status.report
            if report is None:
                raise LensError(f"{run}: no report job to wait for")
            now = time.monotonic()
            if report.state == "UNKNOWN":
                unknown_since = unknown_since or now
                if now - unknown_since > UNKNOWN_GRACE_S:
                    return status
            elif report.finished:
                return status
            else:
                unknown_since = None
            if timeout is not None and now - start > timeout:
                raise LensError(f"{run}: still running after {timeout:.0f} s "
                                f"({summary_line(status)})")
            time.sleep(poll)
