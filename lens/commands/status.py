"""`lens status RUN`: the state of every task of a submitted run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def status(
    run: Annotated[Path, typer.Argument(help="Run folder of `lens submit`.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show each task of a run: stage, fold, state, job, elapsed time, restarts.

    States come from the task's result.json (COMPLETED), else Slurm's accounting
    (sacct: PENDING, RUNNING, FAILED, TIMEOUT, CANCELLED, ...), else the local
    executor's processes, else the files (INCOMPLETE, MISSING). Failed tasks show
    their log. The last row is the run's report job.

    Examples:

      lens status runs/exp1

      lens status runs/exp1 --json | jq '.summary'
    """
    import json

    from rich.console import Console

    from lens.cluster.status import render_table, run_status

    result = run_status(run)
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
