"""What both inference and merging need, without importing torch (a merge job has no use
for it, and importing it costs seconds)."""

from __future__ import annotations

from collections.abc import Callable

from lens.errors import LensError

DEFAULT_BATCH = 256
DEFAULT_N_BOOT = 1000  # bootstrap resamples of the AUC interval
Progress = Callable[[str, int, int], None]  # (stage, done, total)


def check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise LensError(f"--batch-size {batch_size}: must be at least 1")
