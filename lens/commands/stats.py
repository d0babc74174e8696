"""`lens stats A [B]`: summary statistics of lensing images, per class and overall."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def stats(
    a: Path = typer.Argument(..., help="Folder of .npy images (any layout) or a packed .h5."),
    b: Path | None = typer.Argument(None, help="A second set, compared with A."),
    max_per_class: int = typer.Option(
        500, "--max-per-class", "-n", help="Random images per class (0: all)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the random choice of images."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    montage: Path | None = typer.Option(
        None, "--montage", help="Also write a PNG of random images per class."
    ),
    montage_per_class: int = typer.Option(6, "--montage-per-class", help="Images per row."),
) -> None:
    """Ring, background and light statistics of lensing images, per class.

    Each image is min-max normalised first. Classes are the names of the
    folders holding the .npy files (train/no and val/no are both "no"),
    or the class names of a packed file. With B, each class in both sets
    and the overall values are shown side by side, with the difference of
    the means in units of A's standard deviation. Definitions:
    docs/SIMULATION.md.

    Examples:

      lens stats dataset/train

      lens stats dataset/val data/sim --json

      lens stats data/packed.h5 --max-per-class 0

      lens stats dataset/val data/sim --montage compare.png
    """
    from lens.errors import LensError
    from lens.stats.load import open_catalog
    from lens.stats.summary import collect, compare, render, summarise

    if max_per_class < 0:
        raise LensError(f"--max-per-class must be >= 0 (got {max_per_class})")
    if montage_per_class < 1:
        raise LensError(f"--montage-per-class must be at least 1 (got {montage_per_class})")
    catalogs = [("A", open_catalog(a))] + ([("B", open_catalog(b))] if b is not None else [])
    summaries = []
    for (_, catalog), path in zip(catalogs, [a, b], strict=False):
        values, available = collect(catalog, max_per_class, seed)
        summaries.append(summarise(values, str(path), available))
    if as_json:
        out = {"A": summaries[0]}
        if len(summaries) == 2:
            out["B"] = summaries[1]
            out["difference_in_std_of_A"] = compare(*summaries)
        typer.echo(json.dumps(out, indent=2))
    else:
        typer.echo(render(*summaries), nl=False)
    if montage is not None:
        from lens.stats.montage import write_montage

        write_montage(montage, catalogs, montage_per_class, seed)
        if not as_json:
            typer.echo(f"montage: {montage}")


def register(app: typer.Typer) -> None:
    app.command("stats")(stats)
