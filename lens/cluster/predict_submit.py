"""`lens submit --stage predict`: a trained run's fold models over a packed file, in N
contiguous shards on Slurm (one array, then a merge job), or here.

    check()    the run's models, the packed data (not a folder: pack survey data once,
               with `lens pack`), the shard count, the output; an earlier submission
    plan()     which shards run now: a shard whose part exists is complete (parts are
               written atomically); one whose task is still queued or running is left to it
    launch     Slurm: one array of the shards to run (array task id = shard id, so a
               resubmission of shards 1 and 4 is ``--array=1,4``; ``%N`` from
               --array-parallelism), then one merge job (``afterany`` on that array and on
               arrays of earlier submissions still running: it runs whatever happened, and
               fails naming the missing parts); a merge job of an earlier submission still
               queued is cancelled (superseded). Every part there: only the merge job.
               local/debug: the shards here, then the merge here.

Where things go: PRED (default RUN/predict/<data stem>) gets PRED.h5 and PRED.csv, and for
labeled data PRED.metrics.json and PRED.roc.png, exactly as an unsharded `lens predict`
writes them. PRED.parts/ holds part_<I>.h5, the record predict.json (the inputs, and each
submission's executor, profile and job ids; written atomically), logs/ and, for
`lens generate`, slurm/.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lens import __version__, atomic
from lens.cluster import manifest
from lens.cluster.profiles import SlurmProfile, with_overrides
from lens.cluster.slurmcli import job_key
from lens.cluster.watch import UNKNOWN_GRACE_S
from lens.errors import LensError
from lens.predict.settings import DEFAULT_BATCH, DEFAULT_N_BOOT

if TYPE_CHECKING:
    from lens.cluster.local import StopRequest
    from lens.predict.output import Outputs

RECORD = "predict.json"
FORMAT = "lens-predict-jobs-1"
_PART = re.compile(r"^part_(\d+)\.h5$")


@dataclass(frozen=True)
class PredictRequest:
    """Everything `lens submit --stage predict` was asked to do."""

    run: Path
    data: Path
    n_shards: int
    profile: SlurmProfile
    pred: Path | None = None
    stage: str | None = None  # classify or finetune models (None: finetune if trained)
    batch_size: int = DEFAULT_BATCH
    n_boot: int = DEFAULT_N_BOOT
    executor: str | None = None  # None: slurm when sbatch is on PATH, else local
    command: tuple[str, ...] = ()


@dataclass(frozen=True)
class Checked:
    """The checked inputs: absolute paths, the models' stage and folds, the data's size."""

    run: Path
    data: Path
    pred: Path  # the stem: PRED.h5, PRED.csv, PRED.parts/
    stage: str
    folds: tuple[int, ...]
    n: int
    data_created: str
    n_shards: int
    batch_size: int
    n_boot: int

    @property
    def outs(self) -> Outputs:
        from lens.predict.output import Outputs

        return Outputs(self.pred)

    @property
    def parts(self) -> Path:
        return self.outs.parts

    @property
    def h5(self) -> Path:
        return self.outs.h5

    @property
    def mounts(self) -> list[str]:
        from lens.cluster.predict_scripts import shard_mounts

        return shard_mounts(data=str(self.data), run=str(self.run), pred=str(self.pred))


def default_pred(run: Path, data: Path) -> Path:
    return run / "predict" / data.stem


def check(run: Path, data: Path, n_shards: int, *, pred: Path | None = None,
          stage: str | None = None, batch_size: int = DEFAULT_BATCH, n_boot: int = DEFAULT_N_BOOT
          ) -> Checked:
    """Everything that would make the jobs fail, checked here before anything is submitted:
    LensError naming the problem."""
    from lens.data.h5file import read_info
    from lens.predict.data import check_compatible
    from lens.predict.models import load_ensemble
    from lens.predict.output import Outputs
    from lens.predict.settings import check_batch_size

    if n_shards < 1:
        raise LensError(f"--shards {n_shards}: must be at least 1")
    check_batch_size(batch_size)
    if n_boot < 0:
        raise LensError(f"--n-boot {n_boot}: must be >= 0")
    run, data = Path(os.path.abspath(run)), Path(os.path.abspath(data))
    if not run.is_dir():
        raise LensError(f"--run {run}: no such run folder")
    if data.is_dir():
        raise LensError(f"--data {data}: is a folder; pack it once with `lens pack {data} "
                        f"{data.name}.h5` (the training file's --size/--normalize) and "
                        "submit the packed file: every shard would otherwise pack it again")
    if not data.is_file():
        raise LensError(f"--data {data}: no such data file")
    info = read_info(data)
    if n_shards > max(info.n, 1):
        raise LensError(f"--shards {n_shards}: {data} holds {info.n} images; use at most "
                        f"{max(info.n, 1)} shards")
    ensemble = load_ensemble(run, stage)
    if ensemble.missing:
        raise LensError(f"{run / ensemble.stage}: fold(s) {', '.join(map(str, ensemble.missing))} "
                        "have no trained model yet; every shard must use the same models, so "
                        "wait until training has finished")
    check_compatible(info, ensemble.trained, data)
    stem = Outputs.of(os.path.abspath(pred) if pred is not None else default_pred(run, data)).stem
    return Checked(run=run, data=data, pred=stem, stage=ensemble.stage,
                   folds=tuple(ensemble.folds), n=info.n, data_created=info.created,
                   n_shards=n_shards, batch_size=batch_size, n_boot=n_boot)


# ---- the record: PRED.parts/predict.json ------------------------------------------------------


def read_record(parts: Path) -> dict[str, Any] | None:
    where = parts / RECORD
    try:
        import json

        data = json.loads(where.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise LensError(f"{where}: unreadable ({exc}); delete {parts} to start again") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise LensError(f"{where}: not a lens prediction record (format {FORMAT!r} expected)")
    return data


def require_record(parts: Path) -> dict[str, Any]:
    record = read_record(parts)
    if record is None:
        raise LensError(f"{parts}: no prediction record ({RECORD})")
    return record


def write_record(parts: Path, data: dict[str, Any]) -> None:
    data["updated"] = manifest.now()
    atomic.write_json(parts / RECORD, data)


def _inputs(c: Checked) -> dict[str, Any]:
    """What must stay the same across the submissions of one prediction."""
    return {"run": str(c.run), "data": str(c.data), "data_n": c.n,
            "data_created": c.data_created, "stage": c.stage, "folds": list(c.folds),
            "n_shards": c.n_shards, "batch_size": c.batch_size}


def new_record(c: Checked) -> dict[str, Any]:
    stamp = manifest.now()
    return {"format": FORMAT, "created": stamp, "updated": stamp, "pred": str(c.pred),
            **_inputs(c), "n_boot": c.n_boot, "submissions": []}


def _another(parts: Path, what: str) -> LensError:
    return LensError(f"{parts}: holds the parts of another prediction ({what}); use another "
                     f"--pred, or delete {parts} to start again")


def check_earlier(c: Checked) -> dict[str, Any] | None:
    """The record of earlier submissions (None: the first); LensError when the record or a
    part there was made by a different command (other data, models, shard count...)."""
    from lens.predict.output import read_attrs
    from lens.predict.shards import same_path

    record = read_record(c.parts)
    if record is not None:
        for key, value in _inputs(c).items():
            if record.get(key) != value:
                raise _another(c.parts, f"{key} {record.get(key)!r}, now {value!r}")
    elif not c.parts.exists():
        for path in (c.outs.h5, c.outs.csv):
            if path.exists():
                raise LensError(f"{path}: already exists; use another --pred, or delete it")
    want = {"n_shards": c.n_shards, "data_created": c.data_created, "stage": c.stage,
            "batch_size": c.batch_size}
    for part in sorted(c.parts.glob("part_*.h5")) if c.parts.is_dir() else []:
        if not _PART.match(part.name):
            continue
        attrs = read_attrs(part)
        for key, value in want.items():
            if attrs.get(key) != value:
                raise _another(c.parts, f"{part.name} has {key} {attrs.get(key)!r}, "
                                        f"now {value!r}")
        for key, value in (("run", c.run), ("data", c.data)):
            if not same_path(attrs.get(key), value):
                raise _another(c.parts, f"{part.name} has {key} {attrs.get(key)}, now {value}")
    return record


# ---- plan ------------------------------------------------------------------------------------


@dataclass
class ShardPlan:
    """The shards to run now, why the others are skipped, and what the merge waits for."""

    run_now: list[int]
    complete: list[int]
    active: dict[int, str] = field(default_factory=dict)  # shard -> live job id
    active_arrays: list[str] = field(default_factory=list)
    stale_merges: list[str] = field(default_factory=list)  # queued merges: superseded
    merge_active: str | None = None  # an earlier merge still queued or running
    up_to_date: bool = False  # every part there, merged after the last of them
    notes: list[str] = field(default_factory=list)

    @property
    def merge_needed(self) -> bool:
        """Submit (or run) a merge now: something new runs, or nothing will merge."""
        if self.run_now:
            return True
        return not self.up_to_date and self.merge_active is None


def _live_jobs(record: dict[str, Any], query: Callable | None, plan: ShardPlan,
               complete: set[int]) -> None:
    """Shards whose latest Slurm task is still queued or running; earlier merge jobs."""
    from lens.cluster.status import ACTIVE_STATES, sacct_states

    latest: dict[int, str] = {}
    merges: list[str] = []
    for sub in record.get("submissions") or []:
        if sub.get("executor") != "slurm":
            continue
        array = sub.get("array") or {}
        for shard in array.get("shards") or []:
            latest[int(shard)] = f"{array['job_id']}_{shard}"
        if (sub.get("merge") or {}).get("job_id"):
            merges.append(sub["merge"]["job_id"])
    wanted = [j for s, j in latest.items() if s not in complete] + merges
    if not wanted:
        return
    try:
        states = sacct_states(wanted, query)
    except LensError as exc:
        plan.notes.append(f"cannot ask Slurm about earlier jobs ({exc}); treating them as "
                          "finished")
        return
    for shard, job in latest.items():
        found = states.get(job)
        if shard not in complete and found is not None and found.state in ACTIVE_STATES:
            plan.active[shard] = job
    plan.active_arrays = sorted({j.split("_")[0] for j in plan.active.values()}, key=job_key)
    for job in merges:
        found = states.get(job)
        if found is not None and found.state == "PENDING":
            plan.stale_merges.append(job)
        elif found is not None and found.state in ACTIVE_STATES:
            plan.merge_active = job
    if plan.stale_merges and plan.merge_active is None:
        plan.merge_active = plan.stale_merges[-1]


def plan(c: Checked, record: dict[str, Any] | None, *, slurm: bool = True,
         query: Callable | None = None) -> ShardPlan:
    """Which shards run now: not those with a part, nor (``slurm``: asking sacct) those
    whose task of an earlier submission is still queued or running."""
    from lens.predict.shards import merged_after_parts, part_path

    complete = {i for i in range(c.n_shards) if part_path(c.parts, i).is_file()}
    result = ShardPlan(run_now=[], complete=sorted(complete))
    if record is not None and slurm:
        _live_jobs(record, query, result, complete)
    result.run_now = [i for i in range(c.n_shards)
                      if i not in complete and i not in result.active]
    result.up_to_date = merged_after_parts(c.parts, c.h5, complete, c.n_shards)
    if not result.run_now and result.merge_active is not None:
        result.stale_merges = []  # nothing new: the queued merge still does the job
    return result


# ---- launch ----------------------------------------------------------------------------------


@dataclass
class PredictOutcome:
    """What was submitted (Slurm) or run (local, debug)."""

    checked: Checked
    executor: str
    plan: ShardPlan
    array_job: str | None = None
    merge_job: str | None = None
    merge_log: str | None = None
    written: list[Path] = field(default_factory=list)  # local, debug: the merged files
    metrics: dict[str, Any] | None = None
    failed: dict[int, str] = field(default_factory=dict)  # local, debug: shard -> why
    cancelled: bool = False  # local, debug: stopped by SIGTERM (lens cancel) or Ctrl-C


def shard_profile(p: SlurmProfile) -> SlurmProfile:
    """A shard is one process with at most one GPU: more GPUs go to more shards."""
    return with_overrides(p, ntasks_per_node=1, gpus_per_task=min(1, p.gpus_per_task))


def _runner(c: Checked, shard: int, profile: SlurmProfile) -> Any:
    from lens.cluster.predict_tasks import ShardRunner

    return ShardRunner(run=str(c.run), data=str(c.data), parts=str(c.parts), shard=shard,
                       n_shards=c.n_shards, stage=c.stage, batch_size=c.batch_size,
                       threads=profile.cpus_per_task)


def _submission(req: PredictRequest, executor: str, p: ShardPlan) -> dict[str, Any]:
    return {"time": manifest.now(), "command": list(req.command), "executor": executor,
            "profile": dataclasses.asdict(req.profile), "lens_version": __version__,
            "git_revision": manifest.git_revision(), "complete": len(p.complete),
            "queued_or_running": {str(s): j for s, j in sorted(p.active.items())},
            "array": None, "merge": None}


def launch_slurm(c: Checked, req: PredictRequest, record: dict[str, Any], p: ShardPlan
                 ) -> PredictOutcome:
    from lens.cluster import launch, slurmcli
    from lens.cluster.predict_tasks import MergeRunner

    profile = shard_profile(req.profile)
    logs = c.parts / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    outcome = PredictOutcome(c, "slurm", p)
    sub = _submission(req, "slurm", p)
    record["submissions"].append(sub)
    submitted: list[str] = []
    try:
        waits = list(p.active_arrays)
        if p.run_now:
            wrapper = launch.write_wrapper(logs, profile.max_requeues)
            python = launch.task_python(profile, c.mounts, wrapper)
            params = launch.array_parameters(profile, "predict")
            executor = launch.make_slurm_executor(logs / "predict", python, params,
                                                  profile.max_requeues)
            jobs = executor.submit_folds({s: _runner(c, s, profile) for s in p.run_now},
                                         profile.array_parallelism)
            outcome.array_job = next(iter(jobs.values())).job_id.split("_")[0]
            submitted.append(outcome.array_job)
            waits.append(outcome.array_job)
            sub["array"] = {"job_id": outcome.array_job, "shards": list(p.run_now),
                            "logs": str(logs / "predict")}
        python = launch.task_python(profile, [str(c.pred.parent)], gpus=False)
        params = launch.report_parameters(profile)
        params["job_name"] = "lens-predict-merge"
        if waits:
            params["dependency"] = "afterany:" + ":".join(sorted(set(waits), key=job_key))
        executor = launch.make_slurm_executor(logs / "merge", python, params, 0)
        job = executor.submit_one(MergeRunner(str(c.pred), c.n_shards, c.n_boot))
        submitted.append(job.job_id)
        outcome.merge_job, outcome.merge_log = job.job_id, str(job.paths.stdout)
        sub["merge"] = {"job_id": job.job_id, "log": outcome.merge_log,
                        "after": params.get("dependency")}
    except BaseException:
        if submitted:  # leave no array without its merge behind
            try:
                slurmcli.scancel(submitted)
            except LensError as exc:
                print(f"could not cancel jobs {' '.join(submitted)}: {exc}", file=sys.stderr)
        raise
    write_record(c.parts, record)
    if p.stale_merges:
        try:
            slurmcli.scancel(p.stale_merges)
            sub["superseded"] = list(p.stale_merges)
            write_record(c.parts, record)
        except LensError as exc:
            print(f"could not cancel the earlier merge job(s) {' '.join(p.stale_merges)}: "
                  f"{exc}", file=sys.stderr)
    return outcome


def launch_here(c: Checked, req: PredictRequest, record: dict[str, Any], p: ShardPlan,
                executor: str) -> PredictOutcome:
    """The shards here (local: submitit subprocesses, ``local_parallelism`` at a time;
    debug: in this process), then the merge here when every part is there. SIGTERM (`lens
    cancel PRED`) or Ctrl-C stops the running shards (they drop their parts) and starts no
    more; the outcome says ``cancelled``."""
    from lens.cluster.local import StopRequest
    from lens.predict.shards import merge_parts, part_path

    profile = shard_profile(req.profile)
    logs = c.parts / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    outcome = PredictOutcome(c, executor, p)
    sub = _submission(req, executor, p)
    sub["driver"] = {"pid": os.getpid(), "host": socket.gethostname()}
    states: dict[str, str] = {str(s): "PENDING" for s in p.run_now}
    sub["array"] = {"job_id": None, "shards": list(p.run_now), "states": states,
                    "logs": str(logs / "predict")}
    record["submissions"].append(sub)
    write_record(c.parts, record)

    def mark(shard: int, state: str) -> None:
        states[str(shard)] = state
        write_record(c.parts, record)

    if p.run_now:
        run = _run_local if executor == "local" else _run_debug
        with StopRequest() as stop:
            outcome.failed = run(c, profile, p.run_now, logs / "predict", stop, mark)
        outcome.cancelled = stop.requested
    if outcome.cancelled:
        sub["merge"] = {"job_id": None, "state": "NOT RUN", "detail": "cancelled"}
        write_record(c.parts, record)
        return outcome
    missing = [i for i in range(c.n_shards) if not part_path(c.parts, i).is_file()]
    for i in missing:
        outcome.failed.setdefault(i, "no part written")
    if missing:
        sub["merge"] = {"job_id": None, "state": "NOT RUN",
                        "detail": f"{len(missing)} part(s) missing"}
        write_record(c.parts, record)
        return outcome
    done = merge_parts(c.parts, c.n_shards, c.pred, n_boot=c.n_boot, force=True)
    outcome.written, outcome.metrics = list(done.written), done.metrics
    sub["merge"] = {"job_id": None, "state": "COMPLETED"}
    write_record(c.parts, record)
    return outcome


Mark = Callable[[int, str], None]  # record a shard's state: (shard, state)


def _run_local(c: Checked, profile: SlurmProfile, shards: list[int], logs: Path,
               stop: StopRequest, mark: Mark) -> dict[int, str]:
    from lens.cluster import launch
    from lens.cluster.local import local_parallelism, terminate
    from lens.predict.shards import part_path

    python = launch.task_python(profile, c.mounts)
    executor = launch.make_local_executor(logs, python, profile)
    width = local_parallelism(profile)
    queue, running, failed = list(shards), {}, {}
    signalled = False
    try:
        while queue or running:
            if stop.requested and not signalled:  # SIGTERM to each shard: it drops its part
                signalled = True
                for job in running.values():
                    terminate(job)
                for shard in queue:
                    mark(shard, "CANCELLED")
                queue.clear()
            while queue and len(running) < width:
                shard = queue.pop(0)
                running[shard] = executor.submit(_runner(c, shard, profile))
                mark(shard, "RUNNING")
            finished = [s for s, job in running.items() if job.done()]
            for shard in finished:
                job = running.pop(shard)
                if part_path(c.parts, shard).is_file():
                    mark(shard, "COMPLETED")
                else:
                    failed[shard] = str(job.paths.stdout)
                    mark(shard, "CANCELLED" if stop.requested else "FAILED")
            if not finished:
                time.sleep(0.2)
    except BaseException:  # Ctrl-C: stop the shards still running (they drop their parts)
        for job in running.values():
            job.cancel(check=False)
        raise
    return failed


def _run_debug(c: Checked, profile: SlurmProfile, shards: list[int], logs: Path,
               stop: StopRequest, mark: Mark) -> dict[int, str]:
    import traceback

    import submitit

    from lens.cluster.local import error_line

    executor = submitit.DebugExecutor(folder=logs)
    failed = {}
    for shard in shards:
        if stop.requested:
            mark(shard, "CANCELLED")
            continue
        mark(shard, "RUNNING")
        try:
            executor.submit(_runner(c, shard, profile)).result()
        except Exception as exc:  # a failed shard is reported, the others still run
            failed[shard] = error_line(exc)
            traceback.print_exc()
        mark(shard, "FAILED" if shard in failed else "COMPLETED")
    return failed


# ---- the whole submission --------------------------------------------------------------------


def submit_predict(req: PredictRequest, *, query: Callable | None = None,
                   announce: Callable[[PredictOutcome], None] | None = None) -> PredictOutcome:
    """Check, plan and launch; ``announce(outcome)`` is called before anything runs or is
    submitted. Nothing to do (every part there and merged, or the work still queued): an
    outcome with no jobs."""
    from lens.cluster.submit import resolve_executor

    executor = resolve_executor(req.executor)
    c = check(req.run, req.data, req.n_shards, pred=req.pred, stage=req.stage,
              batch_size=req.batch_size, n_boot=req.n_boot)
    if req.profile.container and executor != "debug":
        from lens.cluster.submit import check_container

        check_container(req.profile, None)
    record = check_earlier(c)
    p = plan(c, record, slurm=executor == "slurm", query=query)
    if announce is not None:
        announce(PredictOutcome(c, executor, p))
    if not p.merge_needed:
        return PredictOutcome(c, executor, p)
    made = [d for d in (c.pred.parent, c.parts) if not d.exists()]
    c.parts.mkdir(parents=True, exist_ok=True)
    record = record or new_record(c)
    if executor != "slurm":
        return launch_here(c, req, record, p, executor)
    try:
        return launch_slurm(c, req, record, p)
    except BaseException:
        for d in made:  # nothing was submitted: leave nothing behind
            shutil.rmtree(d, ignore_errors=True)
        raise


# ---- --wait ----------------------------------------------------------------------------------


def count_parts(parts: Path, n_shards: int) -> int:
    from lens.predict.shards import part_path

    return sum(part_path(parts, i).is_file() for i in range(n_shards))


POLL_S = 3.0  # --wait: seconds between two looks at sacct


def wait_for_merge(outcome: PredictOutcome, echo: Callable[[str], None], *,
                   poll: float | None = None, grace_s: float = UNKNOWN_GRACE_S,
                   query: Callable | None = None) -> str:
    """Print a line whenever the parts or the merge job change, until the merge job has
    finished; its final state (UNKNOWN when Slurm never heard of it)."""
    from lens.cluster.status import sacct_states

    job = outcome.merge_job or outcome.plan.merge_active
    if job is None:
        return "COMPLETED"
    c = outcome.checked
    last, unknown_since = "", None
    while True:
        states = sacct_states([job], query)
        found = states.get(job)
        state = found.state if found is not None else "UNKNOWN"
        line = f"parts {count_parts(c.parts, c.n_shards)}/{c.n_shards}; merge job {job} {state}"
        if line != last:
            echo(line)
            last = line
        now = time.monotonic()
        if found is None:
            unknown_since = unknown_since or now
            if now - unknown_since > grace_s:
                return state
        elif found.finished:
            return state
        time.sleep(POLL_S if poll is None else poll)
