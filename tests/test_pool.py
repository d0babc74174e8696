"""The decode pool: ordered results, jobs run here while the workers start, bounded depth."""

from __future__ import annotations

import operator
import time
from functools import partial

from lens.data.pool import Pool


def _here(job: int) -> tuple[str, int]:
    time.sleep(0.03)
    return ("here", job)


def test_jobs_run_here_until_the_workers_are_up_then_there_in_order():
    # The workers take a second to start (their warm-up job sleeps); meanwhile jobs run here.
    with Pool(2, warm=partial(time.sleep, 1.0)) as pool:
        results = list(pool.imap(operator.neg, range(80), depth=4, inline=_here))
    here = [r[1] for r in results if isinstance(r, tuple)]
    there = [-r for r in results if not isinstance(r, tuple)]
    assert here and there, results
    assert here + there == list(range(80))  # in order: the first jobs here, the rest there


def test_one_worker_runs_everything_inline():
    with Pool(1) as pool:
        assert list(pool.imap(operator.neg, range(5), depth=1, inline=_here)) == [
            ("here", i) for i in range(5)
        ]
        assert list(pool.imap(operator.neg, range(3), depth=1)) == [0, -1, -2]
