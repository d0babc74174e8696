"""A rich progress bar on stderr with one bar per stage, driven by a ``(stage, done, total)``
callback, so that library code reports progress without knowing about the terminal."""

from __future__ import annotations

from collections.abc import Mapping


class StageProgress:
    """``with StageProgress({"pack": "packing images"}) as progress: progress("pack", 3, 10)``.

    No bar is drawn in logs and pipes (batch jobs), only on a terminal.
    """

    def __init__(self, labels: Mapping[str, str] | None = None) -> None:
        self.labels = dict(labels or {})
        self._tasks: dict[str, int] = {}

    def __enter__(self) -> StageProgress:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        console = Console(stderr=True)
        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                             transient=True, disable=not console.is_terminal)
        self._bar.start()
        return self

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage not in self._tasks:
            self._tasks[stage] = self._bar.add_task(self.labels.get(stage, stage), total=total)
        self._bar.update(self._tasks[stage], completed=done, total=total)

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()
