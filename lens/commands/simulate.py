"""`lens simulate OUT`: DeepLense-like lensing images with lenstronomy."""

from __future__ import annotations

import time
from pathlib import Path

import typer

DATASET_HELP = "substructure (classes no, sphere, vort) or lensfinding (lens, nonlens)."


def simulate(
    out: Path = typer.Argument(..., help="Output folder (created; must be new or a previous run)."),
    dataset: str = typer.Option("substructure", "--dataset", "-d", help=DATASET_HELP),
    per_class: int = typer.Option(100, "--per-class", "-n", help="Images per class (all shards)."),
    size: int = typer.Option(150, "--size", help="Pixels on a side; the field stays 7.5″."),
    seed: int = typer.Option(0, "--seed", help="Run seed; image k of a class depends only on it."),
    workers: int = typer.Option(1, "--workers", "-j", help="Worker processes."),
    shard: str = typer.Option(
        "0/1", "--shard", help="I/N: make only shard I (0..N-1) of N contiguous shares."
    ),
    unlabeled: bool = typer.Option(
        False, "--unlabeled", help="Write OUT/<k*C+c>.npy in one folder (for pretraining)."
    ),
    preset: str = typer.Option(
        "model-i", "--preset", help="model-i (the documented physics) or common-test-i."
    ),
    params: Path | None = typer.Option(
        None, "--params", help="TOML file of `name = value` lines overriding preset parameters."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Keep images already written by this same run (requeues)."
    ),
) -> None:
    """Simulate strong-lensing images in the layout of DeepLense Common Test I.

    Each image is float64 (1, SIZE, SIZE), min-max normalised to [0, 1],
    written as OUT/<class>/<k>.npy (OUT/<k*C+c>.npy with --unlabeled).
    Image k is reproducible alone: the same seed gives the same image
    whatever --workers or --shard. Physics: docs/SIMULATION.md.

    Examples:

      lens simulate data/sim --per-class 1000 --workers 8

      lens simulate data/small --per-class 50 --size 64 --seed 3

      lens simulate data/lf --dataset lensfinding --per-class 500

      lens simulate data/ct1 --preset common-test-i --per-class 10000

      lens simulate data/custom --params my_physics.toml

      # task I of a Slurm array of 10 (sbatch --array=0-9):

      lens simulate data/ssl --unlabeled -n 100000 --shard $I/10
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from lens.simulate.presets import load_params
    from lens.simulate.run import SimulationSpec, parse_shard, plan, run

    shard_ij = parse_shard(shard)
    spec = SimulationSpec(
        out=out,
        dataset=dataset,
        preset=preset,
        params=load_params(preset, params),
        per_class=per_class,
        size=size,
        seed=seed,
        unlabeled=unlabeled,
    )
    total = len(plan(spec, shard_ij))
    start = time.perf_counter()
    with Progress(
        TextColumn("[bold]simulate[/] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=False,
    ) as progress:
        task = progress.add_task(f"{dataset} {size}px", total=total)
        n = run(spec, shard_ij, workers, resume, on_image=lambda: progress.advance(task))
    elapsed = time.perf_counter() - start
    where = f"shard {shard_ij[0]}/{shard_ij[1]}, " if shard_ij[1] > 1 else ""
    typer.echo(
        f"wrote {n} images ({where}{', '.join(spec.classes)}) to {out} in {elapsed:.1f} s"
    )


def register(app: typer.Typer) -> None:
    app.command("simulate")(simulate)
