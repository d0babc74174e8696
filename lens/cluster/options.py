"""Command-line options shared by the commands that launch jobs (`lens generate`, `lens submit`).

Each option is an ``Annotated`` type: a command declares ``partition: PartitionOpt = None``
and passes the values to :func:`cluster_profile`, which loads ``--profile`` and applies the
options given on top. :func:`stage_inputs` splits ``--config``/``--set`` per stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from lens.cluster.profiles import SlurmProfile, load_profile, with_overrides
from lens.errors import LensError

_PANEL = "Cluster (override the profile)"

ProfileOpt = Annotated[Path | None, typer.Option(
    "--profile", help="Cluster profile TOML, e.g. slurm/profiles/local.toml.",
    rich_help_panel=_PANEL)]
PartitionOpt = Annotated[str | None, typer.Option(
    "--partition", help="Slurm partition.", rich_help_panel=_PANEL)]
AccountOpt = Annotated[str | None, typer.Option(
    "--account", help="Slurm account to charge.", rich_help_panel=_PANEL)]
QosOpt = Annotated[str | None, typer.Option("--qos", help="Slurm QOS.", rich_help_panel=_PANEL)]
TimeOpt = Annotated[str | None, typer.Option(
    "--time", help="Time limit of one fold, e.g. 04:00:00.", rich_help_panel=_PANEL)]
GpusPerTaskOpt = Annotated[int | None, typer.Option(
    "--gpus-per-task", help="GPUs of one fold (one DDP rank each).", rich_help_panel=_PANEL)]
CpusPerTaskOpt = Annotated[int | None, typer.Option(
    "--cpus-per-task", help="CPUs of each rank.", rich_help_panel=_PANEL)]
MemOpt = Annotated[str | None, typer.Option(
    "--mem", help="Memory per node, e.g. 32G.", rich_help_panel=_PANEL)]
ArrayParallelismOpt = Annotated[int | None, typer.Option(
    "--array-parallelism", help="At most N folds running at once (the %N throttle).",
    rich_help_panel=_PANEL)]
ContainerOpt = Annotated[Path | None, typer.Option(
    "--container", help="Apptainer image (lens.sif) to run every task in.",
    rich_help_panel=_PANEL)]
BindOpt = Annotated[list[str] | None, typer.Option(
    "--bind", help="Extra container mount SRC[:DST[:ro]] (repeatable).", rich_help_panel=_PANEL)]
PythonOpt = Annotated[str | None, typer.Option(
    "--python", help="Interpreter command on the compute nodes (default: this Python).",
    rich_help_panel=_PANEL)]


def cluster_profile(
    profile: Path | None = None,
    *,
    partition: str | None = None,
    account: str | None = None,
    qos: str | None = None,
    time: str | None = None,
    gpus_per_task: int | None = None,
    cpus_per_task: int | None = None,
    mem: str | None = None,
    array_parallelism: int | None = None,
    container: Path | None = None,
    binds: list[str] | None = None,
    python: str | None = None,
) -> SlurmProfile:
    """The profile file (or the defaults) with the command-line options applied on top."""
    base = load_profile(profile) if profile is not None else SlurmProfile()
    return with_overrides(
        base, partition=partition, account=account, qos=qos, time=time,
        gpus_per_task=gpus_per_task, cpus_per_task=cpus_per_task, mem=mem,
        array_parallelism=array_parallelism,
        container=None if container is None else str(container),
        binds=binds or None, python=python,
    )


@dataclass(frozen=True)
class StageInput:
    """The config file and ``--set`` overrides of one training stage."""

    config: str | None = None
    sets: tuple[str, ...] = ()


def absolute_input(item: StageInput) -> StageInput:
    """``item`` with its config file as an absolute path (jobs may start elsewhere), which
    must exist."""
    import dataclasses
    import os

    if item.config is None:
        return item
    config = Path(os.path.abspath(item.config))
    if not config.is_file():
        raise LensError(f"{config}: config file not found")
    return dataclasses.replace(item, config=str(config))


def stage_inputs(
    stages: tuple[str, ...], configs: list[str] | None, sets: list[str] | None
) -> dict[str, StageInput]:
    """Split ``--config [STAGE=]PATH`` and ``--set [STAGE:]KEY=VALUE`` between the stages.

    Without a ``STAGE`` prefix a value applies to every stage of the experiment.
    """
    config: dict[str, str | None] = {s: None for s in stages}
    overrides: dict[str, list[str]] = {s: [] for s in stages}
    for text in configs or ():
        head, sep, rest = text.partition("=")
        targets, path = (_stage(head, stages, f"--config {text}"), rest) if sep and \
            head in _ALL_STAGES else (stages, text)
        for s in targets:
            if config[s] is not None:
                raise LensError(f"--config given twice for stage {s}")
            config[s] = path
    for text in sets or ():
        key, eq, _ = text.partition("=")
        if not eq:
            raise LensError(f"--set {text!r}: expected KEY=VALUE or STAGE:KEY=VALUE")
        head, colon, _ = key.partition(":")
        if colon:
            for s in _stage(head, stages, f"--set {text}"):
                overrides[s].append(text[len(head) + 1:])
        else:
            for s in stages:
                overrides[s].append(text)
    return {s: StageInput(config[s], tuple(overrides[s])) for s in stages}


_ALL_STAGES = ("classify", "pretrain", "finetune")


def _stage(name: str, stages: tuple[str, ...], where: str) -> tuple[str, ...]:
    if name not in stages:
        raise LensError(f"{where}: stage {name!r} is not part of this experiment "
                        f"(its stages: {', '.join(stages)})")
    return (name,)
