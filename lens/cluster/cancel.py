"""`lens cancel RUN`: stop every queued or running task of a run.

Slurm: ``scancel`` of the run's tasks and report job that are still queued or running (a
running task gets SIGTERM, checkpoints and is not requeued). Local executor: SIGTERM to the
`lens submit` process that drives the run and to submitit's controller of each running
task, which forwards it to the ranks (they checkpoint and exit). A later `lens submit` of
the same run resumes from the checkpoints.
"""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

from lens.cluster import manifest
from lens.cluster.status import process_alive, run_status
from lens.errors import LensError

LOCAL_CONTROLLER = "submitit.local._local"


def cancel(run: Path) -> list[str]:
    """Cancel what still runs; returns one line per job or process signalled."""
    from lens.cluster import slurmcli

    data = manifest.require(run)
    status = run_status(run)
    done: list[str] = []
    slurm = [t for t in status.tasks if t.active and t.job_id and _executor(data, t) == "slurm"]
    if slurm:
        ids = [t.job_id for t in slurm if t.job_id]
        slurmcli.scancel(ids)
        done += [f"scancel {t.job_id} ({_what(t.stage, t.fold)})" for t in slurm]
    host = socket.gethostname()
    for i, sub in enumerate(data.get("submissions") or []):
        driver = sub.get("driver") or {}
        if driver.get("host") == host and process_alive(driver.get("pid")) and \
                _has_running_local(data, i):
            _kill(driver["pid"])
            done.append(f"SIGTERM to lens submit (pid {driver['pid']})")
    subs = data.get("submissions") or []
    for t in status.tasks:
        if t.state != "RUNNING" or not t.job_id or _executor(data, t) != "local":
            continue
        entry = manifest.fold_jobs(data, t.stage).get(t.fold) or {}
        index = entry.get("submission")
        here = isinstance(index, int) and 0 <= index < len(subs) and \
            (subs[index].get("driver") or {}).get("host") == host
        pid = int(t.job_id)
        if here and process_alive(pid, LOCAL_CONTROLLER):  # a pid of this machine
            _kill(pid)
            done.append(f"SIGTERM to pid {pid} ({_what(t.stage, t.fold)})")
    if not done and any(t.state == "UNKNOWN" for t in status.tasks):
        raise LensError(f"{run}: nothing to cancel that this machine can see "
                        "(some jobs are UNKNOWN: see `lens status`)")
    return done


def cancel_prediction(parts: Path) -> list[str]:
    """`lens cancel PRED`: scancel the shards and merge still queued or running; SIGTERM to
    a `lens submit --stage predict` of this machine still running its shards here."""
    from lens.cluster import slurmcli
    from lens.cluster.predict_status import prediction_status
    from lens.cluster.predict_submit import require_record

    record = require_record(parts)
    status = prediction_status(parts, record=record)
    done: list[str] = []
    active = [t for t in status.tasks if t.active and t.job_id]
    if active:
        slurmcli.scancel([t.job_id for t in active if t.job_id])
        done += [f"scancel {t.job_id} ({'merge' if t.fold is None else f'shard {t.fold}'})"
                 for t in active]
    host = socket.gethostname()
    for sub in record.get("submissions") or []:
        driver = sub.get("driver") or {}
        shards = ((sub.get("array") or {}).get("states") or {}).values()
        unfinished = any(state in ("PENDING", "RUNNING") for state in shards)
        # a driver of this machine still running its shards (not a recycled pid)
        if driver.get("host") == host and unfinished and \
                process_alive(driver.get("pid"), "lens"):
            _kill(driver["pid"])
            done.append(f"SIGTERM to lens submit (pid {driver['pid']})")
    return done


def _executor(data: dict, task) -> str | None:
    if task.fold is None:
        report = manifest.latest_report(data) or {}
        return report.get("executor")
    return (manifest.fold_jobs(data, task.stage).get(task.fold) or {}).get("executor")


def _has_running_local(data: dict, submission: int) -> bool:
    for stage in (data.get("jobs") or {}):
        for entry in manifest.fold_jobs(data, stage).values():
            if entry.get("submission") == submission and \
                    entry.get("state") in ("PENDING", "RUNNING"):
                return True
    return False


def _what(stage: str, fold: int | None) -> str:
    return stage if fold is None else f"{stage} fold {fold}"


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
