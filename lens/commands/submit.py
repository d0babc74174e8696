"""`lens submit`: run an experiment's folds as Slurm array jobs (or here), then the report."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from lens.cluster.options import (
    AccountOpt,
    ArrayParallelismOpt,
    BindOpt,
    ContainerOpt,
    CpusPerTaskOpt,
    GpusPerTaskOpt,
    MemOpt,
    PartitionOpt,
    ProfileOpt,
    PythonOpt,
    QosOpt,
    TimeOpt,
)
from lens.cluster.predict_cli import BatchSizeOpt, ModelsOpt, NBootOpt, PredOpt, ShardsOpt
from lens.commands.generate import Experiment
from lens.errors import LensError


class ExecutorName(str, Enum):
    slurm = "slurm"
    local = "local"
    debug = "debug"


def submit(
    stage: Annotated[Experiment, typer.Option(
        "--stage", help="classify, pretrain, finetune, all (pretrain -> finetune), or "
                        "predict (a trained --run's models over --data in --shards N).")],
    data: Annotated[Path, typer.Option("--data", help="Packed HDF5 file (`lens pack`).")],
    folds: Annotated[int | None, typer.Option(
        "--folds", help="Number of folds K; must be the file's (default: the file's).")] = None,
    run: Annotated[Path | None, typer.Option(
        "--run", help="Run folder (default runs/<data>-<stage>-<time>); an existing run is "
                      "resumed: complete folds are skipped.")] = None,
    config: Annotated[list[str] | None, typer.Option(
        "--config", help="TOML config, [STAGE=]PATH (repeatable per stage).")] = None,
    sets: Annotated[list[str] | None, typer.Option(
        "--set", help="Config override [STAGE:]KEY=VALUE (repeatable).")] = None,
    executor: Annotated[ExecutorName | None, typer.Option(
        "--executor", help="slurm (sbatch arrays), local (subprocesses here) or debug "
                           "(in-process); default: slurm when sbatch exists, else local.")] = None,
    wait: Annotated[bool, typer.Option(
        "--wait", help="Slurm: show a live per-fold table until the report job ends.")] = False,
    ranks_per_task: Annotated[int | None, typer.Option(
        "--ranks-per-task", help="DDP ranks of one fold (default: one per GPU, or 1); "
                                 "e.g. 2 CPU ranks with gloo.",
        rich_help_panel="Cluster (override the profile)")] = None,
    profile: ProfileOpt = None,
    partition: PartitionOpt = None,
    account: AccountOpt = None,
    qos: QosOpt = None,
    time: TimeOpt = None,
    gpus_per_task: GpusPerTaskOpt = None,
    cpus_per_task: CpusPerTaskOpt = None,
    mem: MemOpt = None,
    array_parallelism: ArrayParallelismOpt = None,
    container: ContainerOpt = None,
    bind: BindOpt = None,
    python: PythonOpt = None,
    shards: ShardsOpt = None,
    pred: PredOpt = None,
    models: ModelsOpt = None,
    batch_size: BatchSizeOpt = None,
    n_boot: NBootOpt = None,
) -> None:
    """Run every fold of an experiment as Slurm array jobs, then aggregate the report.

    One array per stage, one task per fold (DDP over the task's GPUs), at most
    --array-parallelism folds at once. --stage all chains pretrain -> finetune
    fold by fold (aftercorr) -> one report job (afterany) that writes RUN/report.md
    and fails when a fold is missing. Returns at once and prints the run folder and
    job ids (--wait: follow the live table). Tasks checkpoint before their time
    limit and requeue themselves. run.json records the command, configs, data hash,
    versions and job ids.

    Submitting the same --run again skips folds whose result is complete (or still
    queued) and submits only the others. Without Slurm (--executor local, the default
    on a laptop) the same tasks run here, stage after stage, then the report.

    Examples:

      lens submit --stage classify --folds 5 --data lenses.h5 --run runs/exp1 \\
          --profile slurm/profiles/local.toml

      lens submit --stage all --data lenses.h5 --run runs/ssl \\
          --config pretrain=jobs/pretrain.toml --config finetune=jobs/finetune.toml \\
          --profile slurm/profiles/gpu-cluster.toml --container lens.sif \\
          --bind /scratch --gpus-per-task 4 --array-parallelism 2 --wait

      lens submit --stage finetune --data lenses.h5 --run runs/ssl \\
          --set finetune.mode=full     # chains onto a pretraining still queued

      lens submit --stage classify --data lenses.h5 --executor local --set epochs=5

      lens status runs/exp1; lens cancel runs/exp1; lens report runs/exp1

    --stage predict: the fold models of a trained --run over a packed --data
    file in --shards N contiguous shards, one array task each (one GPU each
    on a GPU profile), then a merge job (afterany) that writes PRED.h5 and
    PRED.csv in the data file's order, as `lens predict` would, and fails
    naming missing parts. PRED is --pred (default RUN/predict/<data name>);
    parts, logs and job ids (predict.json) are in PRED.parts/. Submitting the
    same command again runs only the shards without a part (and not those
    still queued), then a new merge.

      lens submit --stage predict --run runs/exp1 --data survey.h5 --shards 64 \\
          --profile slurm/profiles/gpu-cluster.toml --array-parallelism 16 --wait

      lens submit --stage predict --run runs/ssl --data test.h5 --shards 4 \\
          --models finetune --pred preds/test --executor local
    """
    from rich.console import Console

    from lens.cluster import predict_cli
    from lens.cluster.options import cluster_profile, stage_inputs
    from lens.cluster.plan import array_stages
    from lens.cluster.profiles import with_overrides
    from lens.cluster.submit import Request
    from lens.cluster.submit import submit as run_submit
    from lens.cluster.watch import Display, wait_for_report

    if stage == Experiment.predict:
        predict_cli.refuse({"--folds": folds, "--config": config, "--set": sets,
                            "--ranks-per-task": ranks_per_task},
                           "is for training stages, not --stage predict")
    else:
        predict_cli.refuse({"--shards": shards, "--pred": pred, "--models": models,
                            "--batch-size": batch_size, "--n-boot": n_boot},
                           "goes with --stage predict")
    if ranks_per_task is not None and ranks_per_task < 1:
        raise LensError(f"--ranks-per-task {ranks_per_task}: must be at least 1")
    prof = cluster_profile(
        profile, partition=partition, account=account, qos=qos, time=time,
        gpus_per_task=gpus_per_task, cpus_per_task=cpus_per_task, mem=mem,
        array_parallelism=array_parallelism, container=container, binds=bind, python=python,
    )
    prof = with_overrides(prof, ntasks_per_node=ranks_per_task)
    command = tuple(["lens", *sys.argv[1:]] if Path(sys.argv[0]).name == "lens"
                    else ["lens", "submit"])
    if stage == Experiment.predict:
        predict_cli.submit(run=run, data=data, shards=shards, pred=pred, models=models,
                           batch_size=batch_size, n_boot=n_boot,
                           executor=executor.value if executor else None, wait=wait,
                           profile=prof, command=command)
        return
    inputs = stage_inputs(array_stages(stage.value), config, sets)
    request = Request(
        experiment=stage.value, data=data, inputs=inputs, profile=prof, run=run, folds=folds,
        executor=executor.value if executor else None, command=command,
    )
    console = Console()
    display = Display(console)
    if executor in (ExecutorName.local, ExecutorName.debug) or (
            executor is None and _runs_here()):
        with display:
            outcome = run_submit(request, on_update=display.update)
    else:
        outcome = run_submit(request)
    _print_outcome(outcome)
    if outcome.executor == "slurm":
        if wait and (outcome.report_job or not outcome.plan or outcome.plan.empty):
            status = wait_for_report(outcome.run, console)
            _finish(outcome.run, status.report.state if status.report else "UNKNOWN")
        return
    if outcome.plan is not None and outcome.plan.empty:
        return
    if outcome.report is not None and outcome.report.get("headline"):
        typer.echo(outcome.report["headline"])
    for stage_name, fold, state, where in outcome.missing:
        _warn(f"{stage_name} fold {fold}: {state} ({where})")
    if outcome.cancelled:
        raise LensError(f"cancelled; submit the same command again to resume ({outcome.run})",
                        exit_code=130)
    if outcome.missing:
        raise LensError(f"{len(outcome.missing)} task(s) missing or failed; see "
                        f"{outcome.run / 'report.md'}")


def _runs_here() -> bool:
    from lens.cluster.submit import default_executor

    return default_executor() != "slurm"


def _warn(text: str) -> None:
    typer.secho(text, err=True, fg=typer.colors.YELLOW)


def _print_outcome(outcome) -> None:
    from lens.cluster.sbatch import array_spec

    typer.echo(f"run: {outcome.run} ({outcome.executor})")
    for array in outcome.arrays:
        after = f", after {array.dependency}" if array.dependency else ""
        typer.echo(f"{array.stage}: array job {array.job_id}, folds "
                   f"{array_spec(array.folds)}{after}")
    if outcome.report_job:
        typer.echo(f"report: job {outcome.report_job}, after the folds (afterany)")
    p = outcome.plan
    if p is not None:
        for stage, skipped in p.skipped.items():
            for fold, why in sorted(skipped.items()):
                typer.echo(f"skipped {stage} fold {fold}: {why}")
        if p.empty:
            typer.echo("nothing to submit: every fold is complete or still queued or running")
    if outcome.executor == "slurm":
        typer.echo(f"follow: lens status {outcome.run}   cancel: lens cancel {outcome.run}")
    elif outcome.report is not None:
        typer.echo(f"report: {outcome.run / 'report.md'}")


def _finish(run: Path, state: str) -> None:
    """After --wait: the headline, and an exit code that says whether every fold is there."""
    import json

    try:
        report = json.loads((run / "report.json").read_text())
    except (OSError, json.JSONDecodeError):
        report = None
    if report and report.get("headline"):
        typer.echo(report["headline"])
    if report:
        typer.echo(f"report: {run / 'report.md'}")
        for stage, st in report.get("stages", {}).items():
            for m in st.get("missing", []):
                _warn(f"{stage} fold {m['fold']}: {m['state']} ({m.get('log') or m['task_dir']})")
    if state != "COMPLETED":
        raise LensError(f"the report job ended {state}: some folds are missing or failed "
                        f"(lens status {run})")


def register(app: typer.Typer) -> None:
    app.command("submit")(submit)
