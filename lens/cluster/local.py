"""`lens submit --executor local|debug`: run a submission's tasks on this machine.

No scheduler, so no dependencies: the stages run one after the other (a finetune fold whose
pretraining did not complete is cancelled, as ``--kill-on-invalid-dep`` would), then the
report is written here. local: submitit's LocalExecutor, one subprocess per task (and per
rank), ``local_parallelism`` tasks at a time; debug: in this process, one after another.
run.json records each task's state as it changes, so that `lens status` and `lens cancel`
work from another terminal; SIGTERM (`lens cancel`) or Ctrl-C stops the run: the running
tasks checkpoint, the queued ones never start.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lens.cluster import manifest
from lens.cluster.profiles import SlurmProfile
from lens.cluster.submit import Outcome, Plan, Prepared, record_inputs, task_runner


class StopRequest:
    """SIGTERM (lens cancel) or Ctrl-C to the driver: stop starting tasks, stop the running
    ones (they checkpoint), record them CANCELLED."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def _handler(self, signum: int, frame: object) -> None:
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def local_parallelism(profile: SlurmProfile) -> int:
    """Tasks at once here: the profile's array_parallelism, else as many as the CPUs hold
    (one GPU task at a time when tasks ask for GPUs)."""
    from lens.cluster.launch import ranks_per_task

    if profile.array_parallelism:
        return profile.array_parallelism
    if profile.gpus_per_task:
        return 1
    per_task = ranks_per_task(profile) * profile.cpus_per_task
    return max(1, (os.cpu_count() or 1) // per_task)


def launch_here(prep: Prepared, p: Plan,
                on_update: Callable[[Path], None] | None = None) -> Outcome:
    """Run the plan on this machine, stage after stage (no dependencies exist here), then
    write the report. local: submitit subprocesses, ``local_parallelism`` at a time; debug:
    in-process, one after another."""
    from lens.cluster import launch

    profile = prep.request.profile
    logs = prep.run / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    index = record_inputs(prep)
    prep.manifest["submissions"][index]["driver"] = {"pid": os.getpid(),
                                                     "host": socket.gethostname()}
    outcome = Outcome(prep.run, prep.executor, plan=p)
    for stage in prep.stages:
        for fold in p.folds[stage]:
            manifest.set_fold_job(prep.manifest, stage, fold, {
                "job_id": None, "executor": prep.executor, "state": "PENDING", "log": None,
                "submission": index})
    report_entry = {"job_id": None, "executor": prep.executor, "log": None,
                    "submission": index, "state": "PENDING"}
    prep.manifest["reports"].append(report_entry)
    manifest.write(prep.run, prep.manifest)
    notify = (lambda: on_update(prep.run)) if on_update else (lambda: None)
    notify()
    python = None
    if prep.executor == "local":
        python = launch.task_python(profile, [str(prep.data.parent), str(prep.run)])
    with StopRequest() as stop:
        for stage in prep.stages:
            folds = list(p.folds[stage])
            if stage == "finetune":
                folds = _drop_unpretrained(prep, folds, index)
            if prep.executor == "local":
                _run_local_stage(prep, stage, folds, python or "", stop, notify)
            else:
                _run_debug_stage(prep, stage, folds, stop, notify)
            if stop.requested:
                outcome.cancelled = True
                break
    report_entry.update(state="RUNNING")
    manifest.write(prep.run, prep.manifest)
    notify()
    summary = launch.aggregate(prep.run)
    outcome.report, outcome.missing = summary["report"], summary["missing"]
    report_entry.update(
        state="FAILED" if outcome.missing else "COMPLETED",
        detail=f"{len(outcome.missing)} task(s) missing or failed" if outcome.missing else "")
    manifest.write(prep.run, prep.manifest)
    notify()
    return outcome


def _drop_unpretrained(prep: Prepared, folds: list[int], index: int) -> list[int]:
    """Like --kill-on-invalid-dep: a finetune fold whose pretraining failed is cancelled."""
    keep = []
    for fold in folds:
        if (prep.run / "pretrain" / f"fold_{fold}" / "encoder.pt").is_file():
            keep.append(fold)
            continue
        manifest.set_fold_job(prep.manifest, "finetune", fold, {
            "job_id": None, "executor": prep.executor, "state": "CANCELLED", "log": None,
            "submission": index, "detail": f"pretrain fold {fold} did not complete"})
    if len(keep) != len(folds):
        manifest.write(prep.run, prep.manifest)
    return keep


def _finish_state(prep: Prepared, stage: str, fold: int, stopped: bool) -> str:
    from lens.report.collect import read_result, task_dir

    if read_result(task_dir(prep.run, stage, fold)) is not None:
        return "COMPLETED"
    return "CANCELLED" if stopped else "FAILED"


def _run_local_stage(prep: Prepared, stage: str, folds: list[int], python: str,
                     stop: StopRequest, notify: Callable[[], None]) -> None:
    from lens.cluster import launch

    profile = prep.request.profile
    executor = launch.make_local_executor(prep.run / "logs" / stage, python, profile)
    width = local_parallelism(profile)
    queue = list(folds)
    running: dict[int, tuple[Any, float]] = {}
    signalled = False
    while queue or running:
        if stop.requested and not signalled:  # checkpoint and stop: SIGTERM to each task
            signalled = True
            for job, _ in running.values():
                terminate(job)
            for fold in queue:
                _update(prep, stage, fold, state="CANCELLED", detail="cancelled before it started")
            queue.clear()
            manifest.write(prep.run, prep.manifest)
            notify()
        while queue and len(running) < width and not stop.requested:
            fold = queue.pop(0)
            job = executor.submit(task_runner(prep, stage, fold))
            running[fold] = (job, time.monotonic())
            _update(prep, stage, fold, job_id=job.job_id, state="RUNNING",
                    log=str(job.paths.stdout))
            manifest.write(prep.run, prep.manifest)
            notify()
        finished = [f for f, (job, _) in running.items() if job.done()]
        for fold in finished:
            job, started = running.pop(fold)
            _update(prep, stage, fold, state=_finish_state(prep, stage, fold, stop.requested),
                    elapsed_s=time.monotonic() - started)
        if finished:
            manifest.write(prep.run, prep.manifest)
            notify()
        else:
            time.sleep(0.5)


def terminate(job: Any) -> None:
    """SIGTERM to submitit's local controller, which forwards it to every rank."""
    process = getattr(job, "_process", None)
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGTERM)


def _run_debug_stage(prep: Prepared, stage: str, folds: list[int], stop: StopRequest,
                     notify: Callable[[], None]) -> None:
    import traceback

    import submitit

    executor = submitit.DebugExecutor(folder=prep.run / "logs" / stage)
    for fold in folds:
        if stop.requested:
            _update(prep, stage, fold, state="CANCELLED", detail="cancelled before it started")
            continue
        started = time.monotonic()
        _update(prep, stage, fold, state="RUNNING")
        manifest.write(prep.run, prep.manifest)
        notify()
        detail = ""
        try:
            executor.submit(task_runner(prep, stage, fold)).result()
        except Exception as exc:  # a failed fold is reported, the others still run
            detail = error_line(exc)
            traceback.print_exc()
        _update(prep, stage, fold, state=_finish_state(prep, stage, fold, stop.requested),
                elapsed_s=time.monotonic() - started, detail=detail)
        manifest.write(prep.run, prep.manifest)
        notify()


def _update(prep: Prepared, stage: str, fold: int, **changes: Any) -> None:
    entry = manifest.fold_jobs(prep.manifest, stage).get(fold, {})
    manifest.set_fold_job(prep.manifest, stage, fold, {**entry, **changes})


def error_line(exc: BaseException) -> str:
    """An error in one short line, for a task's record."""
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
