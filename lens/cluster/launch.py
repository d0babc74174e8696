"""What submitit runs, and the executors that run it: one Slurm array per stage, indexed by fold.

:class:`TaskRunner` is the callable of one (stage, fold) task; :class:`ReportRunner` the
aggregation job. :class:`FoldArrayExecutor` submits a stage as ONE ``sbatch --array`` whose
task ids are the fold ids (``--array=1,3%2`` for a resubmission of folds 1 and 3), so that
``aftercorr`` pairs finetune fold K with pretrain fold K, and logs are named by fold.

Requeue design (one path, on the host). lens's own handlers own SIGUSR2 and SIGTERM for the
whole task: a SIGUSR2 that arrives while the task starts is remembered and honoured at the
first training step (lens.train.signals.remember_early_requests), one during training at
the next step, where run_task checkpoints; a SIGTERM before training starts ends the task
at once. Either way the task exits 75 ("checkpointed, run me again"). Every srun rank runs
under a small host-side wrapper (:func:`render_wrapper`, built from lens.cluster.requeue):
it forwards SIGUSR2 and SIGTERM to the rank and, on rank 0, requeues the array task with
``scontrol requeue`` when the rank exits 75 after SIGUSR2 — the same code whether or not
the rank runs inside an Apptainer image (where scontrol usually is missing). A SIGTERM
(``scancel``, `lens cancel`) also checkpoints, but is never requeued. The requeued task
starts again with the same pickle and resumes from checkpoint.pt; its ``restarts`` count
grows by one. ``TaskRunner.checkpoint()`` returns a DelayedSubmission of itself, so
submitit's own USR2 path (its handler is active only for the instants before ``__call__``
starts) requeues the same task too. Once ``__call__`` ends, SIGUSR2 is ignored: a notice
that comes as the process exits must neither requeue a finished task nor kill it (exit 140).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shlex
import signal
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit
from submitit.core import utils
from submitit.slurm.slurm import SlurmExecutor, SlurmJob

from lens.cluster.profiles import SlurmProfile
from lens.cluster.requeue import EX_TEMPFAIL, requeue_block, wait_block
from lens.cluster.sbatch import array_spec
from lens.errors import LensError

WRAPPER = "requeue.sh"
LOCAL_TIMEOUT_MIN = 7 * 24 * 60  # no time limit on a laptop: submitit's local timer never fires


# ---- the callables -------------------------------------------------------------------------


class _SignalRecord:
    """A SIGTERM that arrives before run_task installs its own handlers (imports, set-up)."""

    def __init__(self) -> None:
        self.name: str | None = None

    def handler(self, signum: int, frame: object) -> None:
        self.name = signal.Signals(signum).name


@contextlib.contextmanager
def _record_signals(active: bool) -> Iterator[_SignalRecord]:
    record = _SignalRecord()
    if not active or threading.current_thread() is not threading.main_thread():
        yield record
        return
    from lens.interrupts import ignore_late_notices
    from lens.train.signals import remember_early_requests

    previous = signal.getsignal(signal.SIGTERM)
    remember_early_requests()  # SIGUSR2: handed to the training loop
    signal.signal(signal.SIGTERM, record.handler)
    try:
        yield record
    finally:
        signal.signal(signal.SIGTERM, previous)
        ignore_late_notices()  # not submitit's handler: it would requeue a finished task


def batch_executor() -> str | None:
    """``slurm`` or ``local`` inside a submitit job process; None in-process (debug)."""
    name = os.environ.get("SUBMITIT_EXECUTOR")
    return name if name in ("slurm", "local") else None


@dataclass(frozen=True)
class TaskRunner:
    """One (stage, fold) task: ``lens.train.task.run_task`` under submitit.

    ``overrides`` are the stage's whole resolved config as ``key=value`` items (see
    :func:`config_overrides`): the task runs exactly the config recorded in run.json, even
    if the TOML file changes after submission. ``threads``: torch CPU threads of each rank
    (the task's CPUs), unless OMP_NUM_THREADS is set; in-process (debug) nothing global
    is changed.
    """

    stage: str
    data: str
    fold: int
    run: str
    overrides: tuple[str, ...] = ()
    threads: int | None = None

    def __call__(self) -> dict[str, Any]:
        batch = batch_executor()
        with _record_signals(batch is not None) as early:
            if batch is not None:
                # MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK from srun (or the local
                # executor); CUDA_VISIBLE_DEVICES is left alone: lens picks cuda:LOCAL_RANK
                submitit.helpers.TorchDistributedEnvironment().export(
                    set_cuda_visible_devices=False, overwrite=True)
            if batch is not None and self.threads and "OMP_NUM_THREADS" not in os.environ:
                import torch

                torch.set_num_threads(self.threads)
            from lens.train.task import TaskInterrupted, TaskSpec, run_task

            spec = TaskSpec(stage=self.stage, data=self.data, fold=self.fold, out=self.run,
                            overrides=self.overrides)
            try:
                if early.name is not None:  # cancelled while starting: nothing to save
                    raise TaskInterrupted(f"stopped by {early.name} before training started")
                result = run_task(spec)
            except TaskInterrupted as exc:
                if batch is None:
                    raise
                print(f"lens: {self.stage} fold {self.fold}: {exc}", file=sys.stderr, flush=True)
                # SystemExit, not an exception: submitit writes no result pickle, and the
                # host-side wrapper sees exit code 75
                raise SystemExit(EX_TEMPFAIL) from None
        if batch is not None:  # one line in the task's log
            from lens.commands.train import summary
            from lens.train.task import task_dir

            print(f"lens: {summary(result, task_dir(self.run, self.stage, self.fold))}",
                  flush=True)
        return result

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit's preemption hook: run the same task again (it resumes by itself)."""
        return submitit.helpers.DelayedSubmission(self)


def aggregate(run: Path) -> dict[str, Any]:
    """Write the run's report (with Slurm's view of unfinished folds); returns a summary:
    ``report`` (report.json's content), ``missing`` [(stage, fold, state, where)]."""
    from lens.cluster.status import state_lookup
    from lens.report.build import write_report

    report = write_report(run, state_lookup(run))
    missing = [(stage, m["fold"], m["state"], m.get("log") or m["task_dir"])
               for stage, st in report["stages"].items() for m in st["missing"]]
    return {"report": report, "missing": missing}


@dataclass(frozen=True)
class ReportRunner:
    """The aggregation job: writes the report whatever happened to the folds, then exits 1
    when any fold is missing or failed, so that sacct, `lens status`, `--wait` and mail
    notifications tell the truth (a partial report is still on disk to read)."""

    run: str

    def __call__(self) -> dict[str, Any]:
        outcome = aggregate(Path(self.run))
        report = outcome["report"]
        print(f"report: {Path(self.run) / 'report.md'}", flush=True)
        if report.get("headline"):
            print(report["headline"], flush=True)
        for stage, fold, state, where in outcome["missing"]:
            print(f"{stage} fold {fold}: {state} ({where})", file=sys.stderr, flush=True)
        if outcome["missing"] and batch_executor() is not None:
            print(f"lens: {len(outcome['missing'])} task(s) missing or failed", file=sys.stderr,
                  flush=True)
            raise SystemExit(1)
        return {"headline": report.get("headline", ""), "missing": outcome["missing"]}


# ---- configs as overrides ------------------------------------------------------------------


def _toml_value(value: Any, key: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v, key) for v in value) + "]"
    raise LensError(f"config key {key}: cannot pass {value!r} to a task")


def config_overrides(config: Mapping[str, Any], prefix: str = "") -> tuple[str, ...]:
    """A resolved config dict as ``--set`` items that rebuild it exactly from the defaults."""
    items: list[str] = []
    for key, value in config.items():
        if isinstance(value, Mapping):
            items += config_overrides(value, f"{prefix}{key}.")
        else:
            items.append(f"{prefix}{key}={_toml_value(value, prefix + key)}")
    return tuple(items)


# ---- profile -> submitit parameters ---------------------------------------------------------

_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d{1,2}))?(?::(\d{1,2}))?$")


def time_minutes(text: str) -> int:
    """A Slurm time limit in whole minutes (rounded up, at least 1), as submitit wants it."""
    match = _TIME.match(text)
    if not match:
        raise LensError(f"{text!r} is not a Slurm time (e.g. '30', '04:00:00', '1-12:00:00')")
    days, a, b, c = match.groups()
    parts = [int(x) for x in (a, b, c) if x is not None]
    if days is not None:  # D-H, D-H:M, D-H:M:S
        h, m, s = (parts + [0, 0])[:3]
        seconds = ((int(days) * 24 + h) * 60 + m) * 60 + s
    elif len(parts) == 1:  # M
        seconds = parts[0] * 60
    elif len(parts) == 2:  # M:S
        seconds = parts[0] * 60 + parts[1]
    else:  # H:M:S
        seconds = (parts[0] * 60 + parts[1]) * 60 + parts[2]
    return max(1, math.ceil(seconds / 60))


def ranks_per_task(p: SlurmProfile) -> int:
    """DDP ranks of one task: one per GPU, or ``ntasks_per_node`` (e.g. 2 CPU gloo ranks)."""
    return p.ntasks_per_node or max(1, p.gpus_per_task)


def _extra_sbatch(lines: tuple[str, ...]) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    for line in lines:
        key, eq, value = line[2:].partition("=")
        extra[key] = value if eq else True
    return extra


def _drop_none(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


def array_parameters(p: SlurmProfile, stage: str) -> dict[str, Any]:
    """SlurmExecutor parameters of one stage's array (one task = one fold)."""
    gres = None
    if p.gpus_per_task:
        gres = f"gpu:{p.gpu_type}:{p.gpus_per_task}" if p.gpu_type else f"gpu:{p.gpus_per_task}"
    return _drop_none({
        "job_name": f"lens-{stage}", "partition": p.partition, "account": p.account,
        "qos": p.qos, "time": time_minutes(p.time), "nodes": 1,
        "ntasks_per_node": ranks_per_task(p), "cpus_per_task": p.cpus_per_task, "gres": gres,
        "mem": p.mem, "constraint": p.constraint, "signal_delay_s": p.signal_delay_s,
        "setup": list(p.setup) or None, "stderr_to_stdout": True,
        "additional_parameters": {"requeue": True, **_extra_sbatch(p.extra_sbatch)},
    })


def report_parameters(p: SlurmProfile) -> dict[str, Any]:
    """The aggregation job: one CPU, no GPU, on ``report_partition`` when there is one."""
    return _drop_none({
        "job_name": "lens-report", "partition": p.report_partition or p.partition,
        "account": p.account, "qos": p.qos, "time": time_minutes(p.report_time), "nodes": 1,
        "ntasks_per_node": 1, "cpus_per_task": 1, "mem": p.report_mem,
        "setup": list(p.setup) or None, "stderr_to_stdout": True,
        "additional_parameters": _extra_sbatch(p.extra_sbatch) or None,
    })


# ---- the host-side wrapper ----------------------------------------------------------------


def render_wrapper(max_requeues: int) -> str:
    """``requeue.sh COMMAND...``: one srun rank's command, run and watched from the host.

    Forwards SIGUSR2 and SIGTERM to COMMAND; on rank 0, an exit 75 after SIGUSR2 (a time
    limit or a preemption notice) requeues the array task. After SIGTERM (scancel) it does
    not: a cancelled task must stay cancelled.
    """
    return f"""#!/bin/bash
# lens: run one rank's COMMAND (python, or `apptainer exec ... python`) on the host side of
# any container; forward SIGUSR2/SIGTERM to it; on rank 0 requeue this array task when the
# rank checkpointed after SIGUSR2 and exited {EX_TEMPFAIL}. Written by `lens submit`.
set -uo pipefail
if (($# == 0)); then echo "usage: $0 COMMAND [ARGS...]" >&2; exit 2; fi
"$@" &
child=$!
cancelled=0
trap 'kill -USR2 "$child" 2>/dev/null || true' USR2
trap 'cancelled=1; kill -TERM "$child" 2>/dev/null || true' TERM
{wait_block("child")}
if [[ "${{SLURM_PROCID:-0}}" != 0 ]]; then exit "$status"; fi  # rank 0 alone requeues
if ((cancelled)); then
    echo "lens: cancelled (SIGTERM); not requeueing" >&2
    exit "$status"
fi
{requeue_block(max_requeues)}"""


def write_wrapper(logs: Path, max_requeues: int) -> Path:
    from lens import atomic

    path = logs / WRAPPER
    atomic.write_text(path, render_wrapper(max_requeues))
    os.chmod(path, 0o755)
    return path


# ---- executors ------------------------------------------------------------------------------


def _failed_submission(exc: BaseException) -> LensError:
    text = str(exc).strip() or type(exc).__name__
    return LensError(f"sbatch refused the job: {text}")


class FoldArrayExecutor(SlurmExecutor):
    """A submitit SlurmExecutor whose arrays are indexed by fold (see the module doc)."""

    def submit_one(self, fn: Callable[[], Any]) -> Any:
        try:
            return self.submit(fn)
        except (utils.FailedJobError, utils.FailedSubmissionError) as exc:
            raise _failed_submission(exc) from None

    def submit_folds(self, calls: Mapping[int, Callable[[], Any]],
                     parallelism: int | None = None) -> dict[int, Any]:
        """One ``sbatch --array=<folds>%N``; array task K runs ``calls[K]``.

        submitit's own map_array numbers tasks 0..n-1; this writes each pickle under its
        fold's task id instead (the rest is what map_array does).
        """
        folds = sorted(calls)
        folder = utils.JobPaths.get_first_id_independent_folder(self.folder)
        folder.mkdir(parents=True, exist_ok=True)
        timeout_min = self.parameters.get("time", 5)
        pickles: dict[int, Path] = {}
        for fold in folds:
            delayed = utils.DelayedSubmission(calls[fold])
            delayed.set_timeout(timeout_min, self.max_num_timeout)
            pickles[fold] = folder / f"{uuid.uuid4().hex}.pkl"
            delayed.dump(pickles[fold])
        array = SlurmExecutor(self.folder, self.max_num_timeout, python=self.python)
        array.update_parameters(**self.parameters)
        array.parameters["map_count"] = len(folds)  # %A_%a log names
        extra = dict(array.parameters.get("additional_parameters") or {})
        extra["array"] = array_spec(folds, parallelism)  # replaces submitit's 0-(n-1)
        array.parameters["additional_parameters"] = extra
        try:
            first = array._submit_command(array._submitit_command_str)
        except (utils.FailedJobError, utils.FailedSubmissionError) as exc:
            for path in pickles.values():
                path.unlink(missing_ok=True)
            raise _failed_submission(exc) from None
        jobs = {}
        for fold in folds:  # each task waits up to 60 s for its pickle, as with map_array
            job = SlurmJob(folder=self.folder, job_id=f"{first.job_id}_{fold}",
                           tasks=list(range(first.num_tasks)))
            job.paths.move_temporary_file(pickles[fold], "submitted_pickle")
            jobs[fold] = job
        return jobs


def make_slurm_executor(folder: Path, python: str, params: dict[str, Any],
                        max_requeues: int) -> FoldArrayExecutor:
    try:
        executor = FoldArrayExecutor(folder, max_num_timeout=max_requeues, python=python)
    except RuntimeError as exc:  # no srun on PATH
        raise LensError(f"{exc} (use --executor local on a machine without Slurm)") from None
    executor.update_parameters(**params)
    return executor


def make_local_executor(folder: Path, python: str, p: SlurmProfile) -> Any:
    """submitit's LocalExecutor: subprocesses here, ``ranks_per_task`` ranks per task."""
    executor = submitit.LocalExecutor(folder=folder, python=python)
    executor.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN, tasks_per_node=ranks_per_task(p),
                               gpus_per_node=p.gpus_per_task, stderr_to_stdout=True)
    return executor


def python_command(words: tuple[str, ...] | list[str], wrapper: Path | None = None) -> str:
    """The interpreter command submitit pastes in front of ``-u -m submitit.core._submit``."""
    return shlex.join(["bash", str(wrapper), *words] if wrapper else list(words))


def task_python(profile: SlurmProfile, mounts: list[str], wrapper: Path | None = None, *,
                gpus: bool | None = None) -> str:
    """:func:`python_command` of a job's Python (in the profile's container, ``mounts``
    bound), with the GPUs when the profile's tasks have them unless ``gpus`` says."""
    from lens.cluster.jobs import python_prefix

    use_gpus = profile.gpus_per_task > 0 if gpus is None else gpus
    return python_command(python_prefix(profile, mounts, gpus=use_gpus), wrapper)
