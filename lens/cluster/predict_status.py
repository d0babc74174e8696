"""`lens status PRED`: the state of every shard of a sharded prediction and of its merge.

Read from PRED.parts/: a part that exists is COMPLETED (parts are written atomically);
otherwise the shard's latest Slurm task says (sacct), or the local submission's record, or
MISSING. The merge is COMPLETED when PRED.h5 is newer than every part.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from lens.cluster.slurmcli import JobState
from lens.cluster.status import ACTIVE_STATES, RunStatus, TaskStatus, driver_alive, sacct_states
from lens.errors import LensError

SHARD, MERGE = "predict", "merge"


def parts_of(path: str | Path) -> Path | None:
    """PRED.parts/ of a prediction named as PRED, PRED.h5 or PRED.parts; None when there is
    no record of `lens submit --stage predict` there (e.g. a training run folder)."""
    from lens.cluster.predict_submit import RECORD
    from lens.predict.output import Outputs

    path = Path(path)
    parts = path if path.name.endswith(".parts") else Outputs.of(path).parts
    return parts if (parts / RECORD).is_file() else None


def prediction_status(parts: Path, *,
                      query: Callable[[list[str]], dict[str, JobState]] | None = None,
                      record: dict[str, Any] | None = None) -> RunStatus:
    """``record``: PRED.parts/predict.json when the caller has read it already."""
    from lens.cluster.predict_submit import require_record
    from lens.predict.shards import part_path

    record = record if record is not None else require_record(parts)
    n = int(record["n_shards"])
    latest: dict[int, tuple[str, dict[str, Any]]] = {}  # shard -> (executor, submission)
    merge: dict[str, Any] | None = None
    for sub in record.get("submissions") or []:
        for shard in (sub.get("array") or {}).get("shards") or []:
            latest[int(shard)] = (sub.get("executor", ""), sub)
        if sub.get("merge"):
            merge = sub["merge"]
    done = {i for i in range(n) if part_path(parts, i).is_file()}
    wanted = [_task_id(sub, s) for s, (ex, sub) in latest.items() if ex == "slurm"]
    if merge and merge.get("job_id"):
        wanted.append(merge["job_id"])
    notes: list[str] = []
    states: dict[str, JobState] = {}
    if wanted:
        try:
            states = sacct_states(wanted, query)
        except LensError as exc:
            notes.append(f"Slurm's accounting is not available ({exc}); unfinished shards "
                         "show their last recorded state")
    rows = [_shard_row(s, s in done, latest.get(s), states, parts) for s in range(n)]
    rows.append(_merge_row(merge, states, parts, n, done))
    return RunStatus(str(parts), tuple(rows), tuple(notes))


def _task_id(sub: dict[str, Any], shard: int) -> str:
    return f"{sub['array']['job_id']}_{shard}"


def _shard_row(shard: int, done: bool, latest: tuple[str, dict[str, Any]] | None,
               states: dict[str, JobState], parts: Path) -> TaskStatus:
    if latest is None:
        return TaskStatus(SHARD, shard, "COMPLETED" if done else "MISSING",
                          detail="" if done else "not submitted")
    executor, sub = latest
    if executor == "slurm":
        job = _task_id(sub, shard)
        found = states.get(job)
        elapsed = found.elapsed if found else None
        if done:
            return TaskStatus(SHARD, shard, "COMPLETED", job, elapsed)
        state = found.state if found else "UNKNOWN"
        if state == "COMPLETED":  # the task ended well, yet its part is not there
            return TaskStatus(SHARD, shard, "INCOMPLETE", job, elapsed, log=str(parts / "logs"),
                              detail="its task ended without leaving its part")
        return TaskStatus(SHARD, shard, state, job, elapsed, log=str(parts / "logs"))
    recorded = ((sub.get("array") or {}).get("states") or {}).get(str(shard))
    state = "COMPLETED" if done else (recorded if recorded not in (None, "COMPLETED")
                                      else "INCOMPLETE")
    detail = f"{executor} executor"
    if state in ACTIVE_STATES and driver_alive(sub) is False:
        state, detail = "INTERRUPTED", "the `lens submit` process that ran it has ended"
    return TaskStatus(SHARD, shard, state, detail=detail,
                      log=None if done else str(parts / "logs"))


def _merge_row(merge: dict[str, Any] | None, states: dict[str, JobState], parts: Path,
               n: int, done: set[int]) -> TaskStatus:
    from lens.predict.output import Outputs
    from lens.predict.shards import merged_after_parts

    pred_h5 = Outputs(parts.with_suffix("")).h5  # PRED.parts -> PRED.h5
    if merged_after_parts(parts, pred_h5, done, n):
        job = (merge or {}).get("job_id")
        found = states.get(job) if job else None
        return TaskStatus(MERGE, None, "COMPLETED", job, found.elapsed if found else None,
                          detail=str(pred_h5))
    if merge is None:
        return TaskStatus(MERGE, None, "MISSING", detail="not submitted")
    job = merge.get("job_id")
    if job:
        found = states.get(job)
        return TaskStatus(MERGE, None, found.state if found else "UNKNOWN", job,
                          found.elapsed if found else None, log=merge.get("log"))
    return TaskStatus(MERGE, None, str(merge.get("state", "UNKNOWN")),
                      detail=str(merge.get("detail", "")))
