"""`lens report RUN`: merge per-fold results into report.json, report.md and ROC figures."""

from __future__ import annotations

from pathlib import Path

import typer

from lens.errors import LensError


def report(
    run: Path = typer.Argument(..., help="Run directory (the --out/--run of train or submit)."),
    allow_partial: bool = typer.Option(
        False, "--allow-partial", help="Exit 0 even when some folds are missing or failed."
    ),
) -> None:
    """Aggregate a run's folds into a cross-validation report.

    Writes RUN/report.json, RUN/report.md and RUN/roc_<stage>.png: a per-fold table,
    mean ± std over folds, pooled out-of-fold ROC-AUC, the test split scored by every
    fold model and by their ensemble, and every missing or failed fold with its log.
    This is also what the aggregation job of `lens submit` runs.

    Examples:

        lens report runs/substructure

        lens report runs/substructure --allow-partial
    """
    from lens.report.build import write_report

    if not run.is_dir():
        raise LensError(f"{run}: no such run directory")
    lookup = None
    try:
        from lens.cluster.status import state_lookup
    except ImportError:
        pass
    else:
        lookup = state_lookup(run)
    result = write_report(run, lookup)
    if not result["stages"]:
        raise LensError(f"{run}: no stage folders (classify/, pretrain/, finetune/) found")
    typer.echo(f"report: {run / 'report.md'}")
    if result["headline"]:
        typer.echo(result["headline"])
    missing = [(s, m) for s, st in result["stages"].items() for m in st["missing"]]
    for stage, m in missing:
        where = m.get("log") or m["task_dir"]
        typer.secho(f"{stage} fold {m['fold']}: {m['state']} ({where})", err=True,
                    fg=typer.colors.YELLOW)
    if missing and not allow_partial:
        raise LensError(f"{len(missing)} task(s) missing or failed; see {run / 'report.md'} "
                        "(use --allow-partial to accept a partial report)")


def register(app: typer.Typer) -> None:
    app.command("report")(report)
