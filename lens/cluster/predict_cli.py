"""The `--stage predict` forms of `lens submit` and `lens generate`: their options and what
the commands print. The work is in lens.cluster.predict_submit and predict_scripts."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from lens.cluster.profiles import SlurmProfile
from lens.errors import LensError
from lens.predict.settings import DEFAULT_BATCH, DEFAULT_N_BOOT

_PANEL = "Prediction (--stage predict)"

ShardsOpt = Annotated[int | None, typer.Option(
    "--shards", metavar="N", show_default=False, rich_help_panel=_PANEL,
    help="Split the data file into N contiguous shards, one array task each.")]
PredOpt = Annotated[Path | None, typer.Option(
    "--pred", metavar="PRED", show_default=False, rich_help_panel=_PANEL,
    help="Writes PRED.h5 and PRED.csv (+ PRED.metrics.json, PRED.roc.png when labeled), "
         "as `lens predict --out PRED`; parts, logs and job record in PRED.parts/ "
         "(default RUN/predict/<data name>).")]
ModelsOpt = Annotated[str | None, typer.Option(
    "--models", metavar="STAGE", show_default=False, rich_help_panel=_PANEL,
    help="The fold models of RUN to use: classify or finetune (default: finetune if "
         "trained, else classify).")]
BatchSizeOpt = Annotated[int | None, typer.Option(
    "--batch-size", metavar="N", show_default=False, rich_help_panel=_PANEL,
    help="Images per forward pass (default 256).")]
NBootOpt = Annotated[int | None, typer.Option(
    "--n-boot", metavar="N", show_default=False, rich_help_panel=_PANEL,
    help="Bootstrap resamples of the AUC interval, labeled data (default 1000).")]



def refuse(given: Mapping[str, Any], why: str) -> None:
    """LensError naming the first option in ``given`` that was set (not None, not empty)."""
    for name, value in given.items():
        if value is not None and value != [] and value is not False:
            raise LensError(f"{name}: {why}")


def _models(value: str | None) -> str | None:
    if value is not None and value not in ("classify", "finetune"):
        raise LensError(f"--models {value}: predictions come from classify or finetune models")
    return value


def _need(shards: int | None, run: Path | None) -> tuple[int, Path]:
    if shards is None:
        raise LensError("--stage predict needs --shards N (N = 1 runs one task)")
    if run is None:
        raise LensError("--stage predict needs --run RUN, the trained run whose models predict")
    return shards, run


def _shards_text(shards: list[int]) -> str:
    from lens.cluster.sbatch import array_spec

    return array_spec(shards) if shards else ""


# ---- lens submit --stage predict ---------------------------------------------------------------


def submit(*, run: Path | None, data: Path, shards: int | None, pred: Path | None,
           models: str | None, batch_size: int | None, n_boot: int | None,
           executor: str | None, wait: bool, profile: SlurmProfile,
           command: tuple[str, ...]) -> None:
    """`lens submit --stage predict`: submit (or run here), print what happened."""
    from lens.cluster.predict_submit import PredictRequest, submit_predict

    n_shards, run_dir = _need(shards, run)
    request = PredictRequest(
        run=run_dir, data=data, n_shards=n_shards, profile=profile, pred=pred,
        stage=_models(models), batch_size=DEFAULT_BATCH if batch_size is None else batch_size,
        n_boot=DEFAULT_N_BOOT if n_boot is None else n_boot, executor=executor,
        command=command)
    outcome = submit_predict(request, announce=_print_plan)
    _print_jobs(outcome)
    c = outcome.checked
    if outcome.executor == "slurm":
        if wait and (outcome.merge_job or outcome.plan.merge_active):
            _wait(outcome)
        return
    if outcome.cancelled:
        raise LensError(f"cancelled; submit the same command again to run the missing shards "
                        f"({c.parts})", exit_code=130)
    if outcome.failed:
        listed = "; ".join(f"shard {s}: {why}" for s, why in sorted(outcome.failed.items())[:10])
        raise LensError(f"{len(outcome.failed)} of {c.n_shards} shard(s) have no part "
                        f"({listed}); submit the same command again to run them")
    if outcome.written:
        if outcome.metrics is not None:
            from lens.predict.evaluate import render_metrics

            typer.echo(render_metrics(outcome.metrics), nl=False)
        typer.echo("wrote " + ", ".join(str(p) for p in outcome.written))


def _print_plan(outcome: Any) -> None:
    """Before anything runs: the inputs, the shards skipped and why."""
    c, p = outcome.checked, outcome.plan
    folds = ", ".join(map(str, c.folds))
    typer.echo(f"predict: {c.stage} models (folds {folds}) of {c.run} on {c.data}: "
               f"{c.n:,} images in {c.n_shards} shard(s) -> {c.h5} ({outcome.executor})")
    if p.complete:
        typer.echo(f"skipped shard(s) {_shards_text(p.complete)}: complete (part written)")
    for shard, job in sorted(p.active.items()):
        typer.echo(f"skipped shard {shard}: queued or running (job {job})")
    for note in p.notes:
        typer.secho(f"note: {note}", err=True, fg=typer.colors.YELLOW)
    if not p.merge_needed:
        if p.up_to_date:
            typer.echo(f"nothing to submit: every part is complete and merged into {c.h5}")
        elif p.active:
            typer.echo(f"nothing to submit: the shards left are queued or running, and merge "
                       f"job {p.merge_active} will merge them")
        else:
            typer.echo(f"nothing to submit: merge job {p.merge_active} (queued or running) "
                       "will merge the parts")
    elif p.run_now and outcome.executor != "slurm":
        typer.echo(f"running shard(s) {_shards_text(p.run_now)} here, then the merge")


def _print_jobs(outcome: Any) -> None:
    """After a Slurm submission: the job ids."""
    c, p = outcome.checked, outcome.plan
    if outcome.array_job:
        typer.echo(f"shards: array job {outcome.array_job}, shards {_shards_text(p.run_now)}")
    if outcome.merge_job:
        after = " after the shards (afterany)" if outcome.array_job or p.active_arrays else ""
        typer.echo(f"merge: job {outcome.merge_job}{after}")
        if p.stale_merges:
            typer.echo(f"cancelled the earlier merge job(s) {' '.join(p.stale_merges)}: "
                       "superseded")
    if outcome.executor == "slurm" and outcome.merge_job:
        ids = ",".join(j for j in (outcome.array_job, outcome.merge_job) if j)
        typer.echo(f"follow: sacct -j {ids}   cancel: scancel {ids.replace(',', ' ')}   "
                   f"parts and logs: {c.parts}")


def _wait(outcome: Any) -> None:
    from lens.cluster.predict_submit import wait_for_merge

    state = wait_for_merge(outcome, typer.echo)
    c = outcome.checked
    if state == "COMPLETED":
        written = [c.outs.h5, c.outs.csv, *(p for p in (c.outs.metrics, c.outs.roc)
                                            if p.is_file())]
        typer.echo("wrote " + ", ".join(str(p) for p in written))
        return
    reason = _merge_failure(outcome.merge_log)
    raise LensError(f"the merge job ended {state}{': ' + reason if reason else ''} "
                    f"(log: {outcome.merge_log}); submit the same command again to rerun "
                    "the missing shards")


def _merge_failure(log: str | None) -> str:
    """The merge's own one-line error from its log (the missing parts), if it wrote one."""
    if not log:
        return ""
    try:
        lines = Path(log).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    found = [line for line in lines if line.startswith("lens: merge failed: ")]
    return found[-1][len("lens: merge failed: "):] if found else ""


# ---- lens generate --stage predict --------------------------------------------------------------


def generate(*, run: Path, data: Path, shards: int | None, pred: Path | None,
             models: str | None, batch_size: int | None, n_boot: int | None,
             out: Path | None, profile: SlurmProfile) -> None:
    """`lens generate --stage predict`: write predict.sbatch, merge.sbatch and submit.sh."""
    from lens.cluster.jobs import SUBMIT_SCRIPT, new_folders, write_scripts
    from lens.cluster.predict_scripts import predict_scripts
    from lens.cluster.predict_submit import check

    n_shards, run_dir = _need(shards, run)
    c = check(run_dir, data, n_shards, pred=pred, stage=_models(models),
              batch_size=DEFAULT_BATCH if batch_size is None else batch_size,
              n_boot=DEFAULT_N_BOOT if n_boot is None else n_boot)
    out_dir = Path(os.path.abspath(out)) if out is not None else c.parts / "slurm"
    with new_folders(c.pred.parent, c.parts, c.parts / "logs"):  # binds need logs/
        scripts = predict_scripts(run=str(c.run), data=str(c.data), pred=str(c.pred),
                                  n_shards=c.n_shards, stage=c.stage, batch_size=c.batch_size,
                                  n_boot=c.n_boot, profile=profile)
    write_scripts(out_dir, scripts.files)
    typer.echo(f"wrote {', '.join(scripts.names())} to {out_dir}")
    typer.echo(f"predict: {c.stage} models on {c.n:,} images in {c.n_shards} shard(s) -> "
               f"{c.h5}; submit with: bash {out_dir / SUBMIT_SCRIPT}")
