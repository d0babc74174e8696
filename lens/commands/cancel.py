"""`lens cancel RUN`: stop the queued and running tasks of a run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def cancel(
    run: Annotated[Path, typer.Argument(
        metavar="RUN|PRED", help="Run folder of `lens submit`, or a prediction of "
        "`lens submit --stage predict` (PRED or PRED.parts).")],
) -> None:
    """Cancel every queued or running task of a run, and its report job.

    Slurm: scancel of the run's jobs that have not finished. Local executor: the
    running tasks are stopped (SIGTERM). Running tasks write a checkpoint first, so
    submitting the same run again resumes them; complete folds are kept.

    For a sharded prediction: its shards and merge job still queued or running
    (complete parts are kept; submitting again runs only the missing shards).

    Examples:

      lens cancel runs/exp1

      lens cancel runs/exp1/predict/survey

      lens cancel runs/exp1 && lens submit --stage classify --data lenses.h5 --run runs/exp1
    """
    from lens.cluster.cancel import cancel as run_cancel
    from lens.cluster.cancel import cancel_prediction
    from lens.cluster.predict_status import parts_of

    parts = parts_of(run)
    done = cancel_prediction(parts) if parts is not None else run_cancel(run)
    if not done:
        typer.echo(f"{run}: nothing queued or running")
    for line in done:
        typer.echo(line)


def register(app: typer.Typer) -> None:
    app.command("cancel")(cancel)
