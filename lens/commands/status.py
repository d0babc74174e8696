"""`lens status RUN`: the state of every task of a submitted run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def status(
    run: Annotated[Path, typer.Argument(
        metavar="RUN|PRED", help="Run folder of `lens submit`, or a prediction of "
        "`lens submit --stage predict` (PRED, as given to --pred, or PRED.parts).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show each task of a run: stage, fold, state, job, elapsed time, restarts.

    States come from the task's result.json (COMPLETED), else Slurm's accounting
    (sacct: PENDING, RUNNING, FAILED, TIMEOUT, CANCELLED, ...), else the local
    executor's processes, else the files (INCOMPLETE, MISSING). Failed tasks show
    their log. The last row is the run's report job.

    For a sharded prediction: each shard (COMPLETED when its part exists, else
    Slurm's state) and the merge job (COMPLETED when PRED.h5 is newer than every
    part).

    Examples:

      lens status runs/exp1

      lens status runs/exp1/predict/survey

      lens status runs/exp1 --json | jq '.summary'
    """
    import json

    from rich.console import Console

    from lens.cluster.predict_status import parts_of, prediction_status
    from lens.cluster.status import render_table, run_status

    parts = parts_of(run)
    result = prediction_status(parts) if parts is not None else run_status(run)
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
        return
    console = Console()
    console.print(render_table(result))
    for note in result.notes:
        console.print(f"note: {note}", style="yellow", highlight=False,
                      soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("status")(status)
