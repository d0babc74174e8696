"""`lens submit`: from an experiment to jobs — on Slurm (one array per stage), or here.

    prepare()  check the inputs, resolve the configs, compare with an existing run.json
    plan()     which folds of which stage run now; what each finetune fold waits for
    launch()   Slurm: submit the arrays, chained, then the report; write run.json
               local/debug: run the tasks here, stage after stage, then the report
               (lens.cluster.local)

Slurm chain (``--stage all``): pretrain array -> finetune array (``aftercorr``: fold K starts
when pretrain fold K has succeeded; ``--kill-on-invalid-dep``: it is cancelled when that
failed) -> one report job (``afterany``: it runs whatever happened, and fails when a fold is
missing). A resubmission skips folds with a valid result.json and folds still queued or
running, and submits an array of only the other folds (array task id = fold id, so
``aftercorr`` still pairs the right folds). ``--stage finetune`` on a run whose pretraining
is still queued or running chains each fold onto its own pretrain task.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lens.cluster import manifest
from lens.cluster.options import StageInput, absolute_input
from lens.cluster.plan import array_stages
from lens.cluster.profiles import SlurmProfile
from lens.cluster.slurmcli import job_key
from lens.errors import LensError

EXECUTORS = ("slurm", "local", "debug")


@dataclass(frozen=True)
class Request:
    """Everything `lens submit` was asked to do."""

    experiment: str
    data: Path
    inputs: Mapping[str, StageInput]
    profile: SlurmProfile
    run: Path | None = None
    folds: int | None = None
    executor: str | None = None  # None: slurm when sbatch is on PATH, else local
    command: tuple[str, ...] = ()


@dataclass
class Prepared:
    """The checked inputs of a submission and the run's manifest (new or existing)."""

    request: Request
    executor: str
    run: Path
    data: Path
    n_folds: int
    stages: tuple[str, ...]
    configs: dict[str, dict[str, Any]]
    manifest: dict[str, Any]
    data_identity: dict[str, Any]
    container: dict[str, Any] | None


@dataclass
class Plan:
    """The folds each stage runs now, why the others are skipped, and the dependencies."""

    folds: dict[str, list[int]]
    skipped: dict[str, dict[int, str]]
    # finetune fold -> what it waits for: None, "pretrain" (this submission's array) or the
    # job id of a pretrain array still queued or running from an earlier submission
    waits: dict[int, str | None] = field(default_factory=dict)
    # arrays of earlier submissions with tasks of this run still queued or running: the new
    # report job waits for them too
    active_arrays: list[str] = field(default_factory=list)
    # report jobs of earlier submissions still queued: superseded by the new one
    stale_reports: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not any(self.folds.values())


@dataclass(frozen=True)
class Array:
    stage: str
    job_id: str
    folds: tuple[int, ...]
    dependency: str | None = None


@dataclass
class Outcome:
    """What was submitted (Slurm) or run (local, debug)."""

    run: Path
    executor: str
    arrays: list[Array] = field(default_factory=list)
    report_job: str | None = None
    plan: Plan | None = None
    report: dict[str, Any] | None = None  # local/debug: the written report
    missing: list[tuple] = field(default_factory=list)
    cancelled: bool = False


# ---- prepare -------------------------------------------------------------------------------


def default_executor() -> str:
    """slurm where sbatch exists (a login node), else local (a laptop)."""
    return "slurm" if shutil.which("sbatch") else "local"


def default_run_dir(data: Path, experiment: str) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{data.stem}-{experiment}-{stamp}"


def resolve_configs(stages: tuple[str, ...],
                    inputs: Mapping[str, StageInput]) -> dict[str, dict[str, Any]]:
    """Each stage's config (defaults <- TOML <- --set), checked now rather than on the cluster."""
    from lens.train.config import load_config, to_dict

    out = {}
    for stage in stages:
        item = absolute_input(inputs.get(stage, StageInput()))
        out[stage] = to_dict(load_config(stage, item.config, item.sets))
    return out


def check_container(profile: SlurmProfile, previous: dict[str, Any] | None) -> dict | None:
    """The image exists, its Python matches this one (pickles cross), and its identity."""
    if not profile.container:
        return None
    from lens.cluster.container import check_image_python

    image = Path(os.path.abspath(profile.container))
    if not image.is_file():
        raise LensError(f"container image {image} does not exist "
                        "(build it with: apptainer build lens.sif containers/lens.def)")
    major, minor = check_image_python(str(image))
    same = previous if previous and previous.get("path") == str(image) else None
    return {**manifest.file_identity(image, same), "python": f"{major}.{minor}"}


def resolve_executor(name: str | None) -> str:
    """``--executor`` checked (default: slurm where sbatch is on PATH, else local)."""
    executor = name or default_executor()
    if executor not in EXECUTORS:
        raise LensError(f"--executor {executor!r}: choose one of {', '.join(EXECUTORS)}")
    if executor == "slurm" and shutil.which("sbatch") is None:
        raise LensError("--executor slurm: sbatch is not on PATH (not a Slurm login node?); "
                        "use --executor local to run here")
    return executor


def prepare(req: Request) -> Prepared:
    from lens.data.h5file import read_info

    executor = resolve_executor(req.executor)
    data = Path(os.path.abspath(req.data))
    if not data.is_file():
        raise LensError(f"{data}: no such data file")
    info = read_info(data)
    if info.n_folds < 1:
        raise LensError(f"{data}: has no cross-validation folds; pack it with "
                        "`lens pack ... --folds K`")
    if req.folds is not None and req.folds != info.n_folds:
        raise LensError(f"--folds {req.folds}: {data} was packed with {info.n_folds} folds; "
                        f"use --folds {info.n_folds} (folds are fixed at pack time)")
    stages = array_stages(req.experiment)
    configs = resolve_configs(stages, req.inputs)
    run = Path(os.path.abspath(req.run or default_run_dir(data, req.experiment)))
    if run.exists() and not run.is_dir():
        raise LensError(f"--run {run}: exists and is not a directory")
    existing = manifest.read(run) if run.is_dir() else None
    data_before = (existing or {}).get("data") or {}
    ident = manifest.file_identity(
        data, data_before if data_before.get("path") == str(data) else None)
    if existing is not None:
        _check_same_experiment(run, existing, ident, configs)
    elif run.is_dir() and any((run / s).is_dir() for s in ("classify", "pretrain", "finetune")):
        raise LensError(f"--run {run}: holds task folders but no {manifest.MANIFEST}; "
                        "use another --run (lens submit keeps its runs' records in run.json)")
    container = check_container(req.profile, (existing or {}).get("container"))
    data_entry = {**ident, "n": info.n, "n_folds": info.n_folds,
                  "class_names": list(info.class_names),
                  "shape": [info.channels, info.height, info.width]}
    return Prepared(req, executor, run, data, info.n_folds, stages, configs,
                    existing or manifest.new(run), data_entry, container)


def _check_same_experiment(run: Path, existing: dict[str, Any], ident: dict[str, Any],
                           configs: dict[str, dict[str, Any]]) -> None:
    """A run is one data file and one config per stage: refuse to mix."""
    from lens.train.config import diff

    before = existing.get("data") or {}
    if before.get("sha256") and before["sha256"] != ident["sha256"]:
        raise LensError(f"--run {run}: was made from {before.get('path')} "
                        f"(sha256 {before['sha256'][:12]}), not {ident['path']} "
                        f"(sha256 {ident['sha256'][:12]}); use another --run")
    for stage, cfg in configs.items():
        old = (existing.get("stages", {}).get(stage) or {}).get("config")
        if old is None:
            continue
        changes = diff(old, cfg)
        if changes:
            raise LensError(f"--run {run}: its {stage} tasks ran with another config "
                            f"({'; '.join(changes[:6])}{'; ...' if len(changes) > 6 else ''}); "
                            "use another --run, or the same --config and --set")


# ---- plan ----------------------------------------------------------------------------------


def plan(prep: Prepared, *, query: Callable | None = None) -> Plan:
    """Which folds run now. Skips complete folds and folds still queued or running."""
    from lens.cluster.status import run_status
    from lens.report.collect import read_result, task_dir

    active: dict[tuple[str, int], str] = {}  # (stage, fold) -> job id of a live task
    stale: list[str] = []
    if (prep.run / manifest.MANIFEST).is_file():
        status = run_status(prep.run, query=query)
        active = {(t.stage, t.fold): t.job_id or "?" for t in status.tasks
                  if t.fold is not None and t.active}
        stale = [t.job_id for t in status.tasks
                 if t.fold is None and t.active and t.job_id and t.state == "PENDING"]
    folds: dict[str, list[int]] = {}
    skipped: dict[str, dict[int, str]] = {}
    for stage in prep.stages:
        folds[stage], skipped[stage] = [], {}
        for fold in range(prep.n_folds):
            if read_result(task_dir(prep.run, stage, fold)) is not None:
                skipped[stage][fold] = "complete"
            elif (stage, fold) in active:
                skipped[stage][fold] = f"queued or running (job {active[(stage, fold)]})"
            else:
                folds[stage].append(fold)
    result = Plan(folds, skipped, stale_reports=stale)
    if "finetune" in prep.stages:
        result.waits = _finetune_waits(prep, folds, active)
    result.active_arrays = sorted({job.split("_")[0] for job in active.values()
                                   if job != "?"}, key=job_key)
    return result


def _finetune_waits(prep: Prepared, folds: dict[str, list[int]],
                    active: dict[tuple[str, int], str]) -> dict[int, str | None]:
    """What each finetune fold must wait for; LensError for a fold with no encoder coming."""
    waits: dict[int, str | None] = {}
    missing = []
    for fold in folds["finetune"]:
        if fold in folds.get("pretrain", []):
            waits[fold] = "pretrain"
        elif (prep.run / "pretrain" / f"fold_{fold}" / "encoder.pt").is_file():
            waits[fold] = None
        elif ("pretrain", fold) in active:
            waits[fold] = active[("pretrain", fold)].split("_")[0]
        else:
            missing.append(fold)
    if missing:
        raise LensError(
            f"finetune fold(s) {', '.join(map(str, missing))}: no pretrained encoder in "
            f"{prep.run}/pretrain/fold_K/encoder.pt and no pretrain task queued or running "
            f"for them; submit --stage pretrain (or --stage all) first")
    return waits


# ---- manifest --------------------------------------------------------------------------------


def record_inputs(prep: Prepared) -> int:
    """Stages, data and container into the manifest; a new submission entry; its index."""
    data = prep.manifest
    data["data"] = prep.data_identity
    if prep.container is not None:
        data["container"] = prep.container
    req = prep.request
    for stage in prep.stages:
        item = req.inputs.get(stage, StageInput())
        data["stages"][stage] = {
            "folds": prep.n_folds,
            "config_file": os.path.abspath(item.config) if item.config else None,
            "sets": list(item.sets), "config": prep.configs[stage]}
    data["lens_version"] = manifest.new(prep.run)["lens_version"]
    data["submissions"].append({
        "time": manifest.now(), "command": list(req.command), "experiment": req.experiment,
        "executor": prep.executor, "profile": dataclasses.asdict(req.profile),
        "container": prep.container, "git_revision": manifest.git_revision(),
        "arrays": [], "report": None,
    })
    return len(data["submissions"]) - 1


# ---- launch: Slurm ---------------------------------------------------------------------------


def task_runner(prep: Prepared, stage: str, fold: int) -> Any:
    from lens.cluster.launch import TaskRunner, config_overrides

    return TaskRunner(stage=stage, data=str(prep.data), fold=fold, run=str(prep.run),
                      overrides=config_overrides(prep.configs[stage]),
                      threads=prep.request.profile.cpus_per_task)


def _finetune_groups(p: Plan, pretrain_job: str | None) -> list[tuple[list[int], str | None]]:
    """Finetune folds grouped by the array they wait for: one array (and one aftercorr
    dependency) per group; a fresh `--stage all` is one group."""
    groups: dict[str | None, list[int]] = {}
    for fold in p.folds["finetune"]:
        wait = p.waits.get(fold)
        groups.setdefault(pretrain_job if wait == "pretrain" else wait, []).append(fold)
    return [(folds, f"aftercorr:{job}" if job else None)
            for job, folds in sorted(groups.items(), key=lambda kv: job_key(kv[0] or "0"))]


def launch_slurm(prep: Prepared, p: Plan) -> Outcome:
    from lens.cluster import launch, slurmcli

    profile = prep.request.profile
    logs = prep.run / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    wrapper = launch.write_wrapper(logs, profile.max_requeues)
    mounts = [str(prep.data.parent), str(prep.run)]
    train_python = launch.task_python(profile, mounts, wrapper)
    report_python = launch.task_python(profile, [str(prep.run)], gpus=False)
    index = record_inputs(prep)
    submission = prep.manifest["submissions"][index]
    outcome = Outcome(prep.run, "slurm", plan=p)
    submitted: list[str] = []
    try:
        for stage in prep.stages:
            if not p.folds[stage]:
                continue
            params = launch.array_parameters(profile, stage)
            if stage == "finetune":
                pre = next((a.job_id for a in outcome.arrays if a.stage == "pretrain"), None)
                groups = _finetune_groups(p, pre)
            else:
                groups = [(p.folds[stage], None)]
            for folds, dependency in groups:
                stage_params = dict(params)
                if dependency:
                    stage_params["dependency"] = dependency
                    stage_params["additional_parameters"] = {
                        **params["additional_parameters"], "kill-on-invalid-dep": "yes"}
                executor = launch.make_slurm_executor(logs / stage, train_python, stage_params,
                                                      profile.max_requeues)
                jobs = executor.submit_folds(
                    {f: task_runner(prep, stage, f) for f in folds}, profile.array_parallelism)
                array_id = next(iter(jobs.values())).job_id.split("_")[0]
                submitted.append(array_id)
                outcome.arrays.append(Array(stage, array_id, tuple(folds), dependency))
                for fold, job in jobs.items():
                    manifest.set_fold_job(prep.manifest, stage, fold, {
                        "job_id": job.job_id, "executor": "slurm", "log": str(job.paths.stdout),
                        "submission": index, "submitted": manifest.now()})
        # afterany: every array of this run that is queued or running, new or not
        waits = sorted({a.job_id for a in outcome.arrays} | set(p.active_arrays), key=job_key)
        params = launch.report_parameters(profile)
        params["dependency"] = "afterany:" + ":".join(waits)
        executor = launch.make_slurm_executor(logs / "report", report_python, params, 0)
        job = executor.submit_one(launch.ReportRunner(str(prep.run)))
        submitted.append(job.job_id)
        outcome.report_job = job.job_id
        prep.manifest["reports"].append({
            "job_id": job.job_id, "executor": "slurm", "log": str(job.paths.stdout),
            "submission": index, "submitted": manifest.now()})
    except BaseException:
        if submitted:  # leave no half-chained experiment behind
            try:
                slurmcli.scancel(submitted)
            except LensError as exc:
                print(f"could not cancel jobs {' '.join(submitted)}: {exc}", file=sys.stderr)
        raise
    submission["arrays"] = [dataclasses.asdict(a) for a in outcome.arrays]
    submission["report"] = outcome.report_job
    manifest.write(prep.run, prep.manifest)
    _supersede(prep, p.stale_reports, outcome.report_job)
    return outcome


def _supersede(prep: Prepared, stale: list[str], report_job: str | None) -> None:
    """Cancel earlier report jobs still queued: the new one waits for everything they
    waited for, and one report per run is the truth (an early one would fail on folds
    that are merely still queued)."""
    from lens.cluster import slurmcli

    if not stale:
        return
    try:
        slurmcli.scancel(stale)
    except LensError as exc:
        print(f"could not cancel the earlier report job(s) {' '.join(stale)}: {exc}",
              file=sys.stderr)
        return
    for entry in prep.manifest["reports"]:
        if entry.get("job_id") in stale:
            entry["superseded_by"] = report_job
    manifest.write(prep.run, prep.manifest)


# ---- the whole submission ------------------------------------------------------------------


def submit(req: Request, *, on_update: Callable[[Path], None] | None = None) -> Outcome:
    """Prepare, plan and launch; an empty plan launches nothing. ``on_update(run)`` is called
    whenever a task here starts or ends (local, debug)."""
    prep = prepare(req)
    p = plan(prep)
    if p.empty:
        return Outcome(prep.run, prep.executor, plan=p)
    created = not prep.run.exists()
    prep.run.mkdir(parents=True, exist_ok=True)
    if prep.executor != "slurm":
        from lens.cluster.local import launch_here

        return launch_here(prep, p, on_update)
    try:
        return launch_slurm(prep, p)
    except BaseException:
        if created:  # nothing was submitted (or it was cancelled): leave nothing behind
            shutil.rmtree(prep.run, ignore_errors=True)
        raise
