"""`lens inspect FILE.h5`: classes, counts, shape, value range and provenance of a packed file."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def inspect(
    file: Path = typer.Argument(..., metavar="FILE.h5", help="A file written by `lens pack`."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Describe a packed file: classes, counts per split, class and fold, shape, dtype, value
    range (one streaming pass over the pixels), schema version and provenance.

    Examples:

        lens inspect data/substructure.h5

        lens inspect data/substructure.h5 --json | jq .counts
    """
    from lens.data.inspect import render_inspect, summarize

    summary = summarize(file)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        typer.echo(render_inspect(summary), nl=False)


def register(app: typer.Typer) -> None:
    app.command("inspect")(inspect)
