"""`lens generate`: write the sbatch scripts of an experiment and the submit.sh that chains them."""

from __future__ import annotations

import os
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
    StageInput,
    TimeOpt,
    absolute_input,
)
from lens.cluster.predict_cli import BatchSizeOpt, ModelsOpt, NBootOpt, PredOpt, ShardsOpt
from lens.errors import LensError


class Experiment(str, Enum):
    classify = "classify"
    pretrain = "pretrain"
    finetune = "finetune"
    all = "all"
    predict = "predict"


def generate(
    stage: Annotated[Experiment, typer.Option(
        "--stage", help="classify, pretrain, finetune, all (pretrain -> finetune), or "
                        "predict (a trained RUN's models over DATA in --shards N).")],
    data: Annotated[Path, typer.Option("--data", help="Packed HDF5 file (`lens pack`).")],
    run: Annotated[Path, typer.Option("--run", help="Run folder the tasks write into.")],
    out: Annotated[Path | None, typer.Option(
        "--out", help="Where to write the scripts (default RUN/slurm; --stage predict: "
                      "PRED.parts/slurm).")] = None,
    folds: Annotated[int | None, typer.Option(
        "--folds", help="Number of folds K: array tasks 0..K-1 (default: the file's).")] = None,
    config: Annotated[list[str] | None, typer.Option(
        "--config", help="TOML config, [STAGE=]PATH (repeatable per stage).")] = None,
    sets: Annotated[list[str] | None, typer.Option(
        "--set", help="Config override [STAGE:]KEY=VALUE (repeatable).")] = None,
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
    """Write the sbatch scripts of an experiment and the submit.sh that chains them.

    One script per stage (an array over the folds), report.sbatch, and submit.sh:
    the arrays first, then the report (afterany); with --stage all, finetune
    fold K runs after pretrain fold K (aftercorr). Nothing is submitted: read
    the scripts, then run submit.sh.

    Each array task runs `python -m lens train --stage S --data X --fold K
    --out RUN` under srun (one rank per GPU), logs to RUN/logs/, and requeues
    itself from the host when the task checkpoints on SIGUSR2 (exit 75).

    Examples:

      lens generate --stage classify --data lenses.h5 --run runs/exp1 \\
          --profile slurm/profiles/local.toml
      bash runs/exp1/slurm/submit.sh

      lens generate --stage all --data lenses.h5 --run runs/ssl \\
          --config pretrain=jobs/pretrain.toml \\
          --config finetune=jobs/finetune.toml --set pretrain:epochs=50 \\
          --profile slurm/profiles/gpu-cluster.toml --container lens.sif \\
          --bind /scratch --gpus-per-task 4 --array-parallelism 2

    --stage predict writes predict.sbatch (one array task per shard: `lens
    predict RUN DATA --out PRED --shard I/N`), merge.sbatch (`lens predict
    --merge PRED --shards N`, afterany) and submit.sh into PRED.parts/slurm
    (default PRED: RUN/predict/<data name>); logs go to PRED.parts/logs.
    Submitting again redoes only the shards whose part is missing.

      lens generate --stage predict --run runs/exp1 --data survey.h5 --shards 64 \\
          --profile slurm/profiles/gpu-cluster.toml --gpus-per-task 1 \\
          --array-parallelism 16
      bash runs/exp1/predict/survey.parts/slurm/submit.sh
    """
    from lens.cluster import predict_cli
    from lens.cluster.jobs import SUBMIT_SCRIPT, experiment_scripts, new_folders, write_scripts
    from lens.cluster.options import cluster_profile, stage_inputs
    from lens.cluster.plan import array_stages

    prof = cluster_profile(
        profile, partition=partition, account=account, qos=qos, time=time,
        gpus_per_task=gpus_per_task, cpus_per_task=cpus_per_task, mem=mem,
        array_parallelism=array_parallelism, container=container, binds=bind, python=python,
    )
    if stage == Experiment.predict:
        predict_cli.refuse({"--folds": folds, "--config": config, "--set": sets},
                           "is for training stages, not --stage predict")
        predict_cli.generate(run=run, data=data, shards=shards, pred=pred, models=models,
                             batch_size=batch_size, n_boot=n_boot, out=out, profile=prof)
        return
    predict_cli.refuse({"--shards": shards, "--pred": pred, "--models": models,
                        "--batch-size": batch_size, "--n-boot": n_boot},
                       "goes with --stage predict")
    stages = array_stages(stage.value)
    inputs = stage_inputs(stages, config, sets)
    data_path = Path(os.path.abspath(data))
    fold_ids = tuple(range(_fold_count(data_path, folds)))
    inputs = {s: absolute_input(i) for s, i in inputs.items()}
    _check_configs(inputs)
    run_dir = Path(os.path.abspath(run))
    out_dir = Path(os.path.abspath(out)) if out is not None else run_dir / "slurm"
    with new_folders(run_dir, run_dir / "logs"):  # binds need logs/; Slurm logs there
        scripts = experiment_scripts(
            stage.value, data=str(data_path), run_dir=str(run_dir), folds=fold_ids,
            inputs=inputs, profile=prof,
        )
    write_scripts(out_dir, scripts.files)
    typer.echo(f"wrote {', '.join(scripts.names())} to {out_dir}")
    typer.echo(f"{stage.value}: {len(fold_ids)} fold(s); "
               f"submit with: bash {out_dir / SUBMIT_SCRIPT}")


def _fold_count(data: Path, folds: int | None) -> int:
    """K from --folds, checked against (or defaulting to) the folds stored in the file."""
    from lens.data.h5file import read_info

    info = read_info(data)
    if folds is None:
        if info.n_folds < 1:
            raise LensError(f"{data}: has no folds; pack it with --folds K, or give --folds")
        return info.n_folds
    if folds < 1:
        raise LensError(f"--folds {folds}: must be at least 1")
    if info.n_folds and folds > info.n_folds:
        raise LensError(f"--folds {folds}: {data} has only {info.n_folds} folds")
    return folds


def _check_configs(inputs: dict[str, StageInput]) -> None:
    """Fail now, not on the cluster, when a config or --set is wrong for its stage."""
    try:
        from lens.train.config import load_config
    except ImportError:  # the training package is optional for writing scripts
        return
    for stage, item in inputs.items():
        load_config(stage, item.config, item.sets)


def register(app: typer.Typer) -> None:
    app.command("generate")(generate)
