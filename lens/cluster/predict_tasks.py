"""What the jobs of a sharded prediction run (`lens submit --stage predict`).

:class:`ShardRunner` is one array task: ``lens.predict.shards.predict_shard`` for one shard
(the array task id is the shard id). :class:`MergeRunner` is the job after them:
``merge_parts``, which fails naming the missing parts.

A shard has nothing to checkpoint: its part is renamed into place only when complete, and
a complete part is kept. So on SIGUSR2 (time limit, preemption) the task drops its
unfinished part and exits 75, and the host-side wrapper (RUN/logs/requeue.sh, the same as
for training tasks) requeues it; the requeued task starts the shard again. On SIGTERM
(scancel) it also drops the unfinished part and exits, and is not requeued.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lens.cluster.launch import batch_executor
from lens.cluster.requeue import EX_TEMPFAIL
from lens.errors import LensError
from lens.interrupts import Stopped, ignore_late_notices, stop_on_signals
from lens.predict.settings import DEFAULT_BATCH, DEFAULT_N_BOOT


@dataclass(frozen=True)
class ShardRunner:
    """One shard: writes PRED.parts/part_<shard>.h5 (kept as it is when complete).

    ``threads``: torch CPU threads (the task's CPUs) unless OMP_NUM_THREADS is set; in
    this process (debug) nothing global is changed.
    """

    run: str
    data: str
    parts: str
    shard: int
    n_shards: int
    stage: str
    batch_size: int = DEFAULT_BATCH
    threads: int | None = None

    def __call__(self) -> str:
        batch = batch_executor()
        try:
            part = self._predict(batch is not None)
        finally:  # not submitit's handler: it would requeue a finished shard
            if batch is not None:
                ignore_late_notices()
        if batch is not None:
            from lens.predict.output import read_attrs

            attrs = read_attrs(part)
            print(f"lens: shard {self.shard}/{self.n_shards}: rows {attrs['start']}.."
                  f"{attrs['stop'] - 1} of {attrs['data_n']} in {part}", flush=True)
        return str(part)

    def _predict(self, batch: bool) -> Path:
        from lens.predict.shards import predict_shard

        with stop_on_signals(batch):
            try:
                if batch and self.threads and "OMP_NUM_THREADS" not in os.environ:
                    import torch

                    torch.set_num_threads(self.threads)
                return predict_shard(self.run, self.data, self.shard, self.n_shards,
                                     self.parts, stage=self.stage, batch_size=self.batch_size)
            except Stopped as exc:
                if not batch:
                    raise
                print(f"lens: shard {self.shard}/{self.n_shards}: {exc}; its part was not "
                      "written", file=sys.stderr, flush=True)
                raise SystemExit(EX_TEMPFAIL) from None

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit's preemption hook: run the same shard again."""
        import submitit

        return submitit.helpers.DelayedSubmission(self)


@dataclass(frozen=True)
class MergeRunner:
    """The merge job: PRED.parts/part_0.h5 .. part_<N-1>.h5, in order, into PRED.h5 and
    PRED.csv (+ metrics and ROC when labeled), replacing an earlier merge. In a batch job a
    missing part is a one-line error and exit 1, so that sacct and --wait tell the truth."""

    pred: str
    n_shards: int
    n_boot: int = DEFAULT_N_BOOT

    def __call__(self) -> list[str]:
        from lens.predict.output import Outputs
        from lens.predict.shards import merge_parts

        outs = Outputs.of(self.pred)
        try:
            done = merge_parts(outs.parts, self.n_shards, outs.stem, n_boot=self.n_boot,
                               force=True)
        except LensError as exc:
            if batch_executor() is None:
                raise
            print(f"lens: merge failed: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None
        written = [str(p) for p in done.written]
        if batch_executor() is not None:  # one line in the job's log
            print(f"lens: merged {self.n_shards} parts: wrote {', '.join(written)}", flush=True)
        return written

