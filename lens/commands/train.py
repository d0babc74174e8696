"""`lens train`: run one (stage, fold) task here, the same code every Slurm array task runs."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer


class Stage(str, Enum):
    classify = "classify"
    pretrain = "pretrain"
    finetune = "finetune"


def train(
    stage: Annotated[Stage, typer.Option("--stage", help="What to train.")],
    data: Annotated[Path, typer.Option("--data", help="Packed HDF5 file (`lens pack`).")],
    fold: Annotated[int, typer.Option("--fold", help="Held-out fold K (0 .. n_folds-1).")],
    out: Annotated[Path, typer.Option("--out", help="Run folder; writes OUT/<stage>/fold_<K>/.")],
    config: Annotated[Path | None, typer.Option(
        "--config", help="TOML config, e.g. jobs/classify.toml (defaults when omitted).")] = None,
    overrides: Annotated[list[str] | None, typer.Option(
        "--set", help="Override a config key, e.g. --set optim.lr=0.01 (repeatable).")] = None,
    pretrained: Annotated[Path | None, typer.Option(
        "--pretrained", help="finetune: encoder.pt to start from "
                             "(default OUT/pretrain/fold_<K>/encoder.pt).")] = None,
) -> None:
    """Train one task: a stage on one cross-validation fold.

    Writes config.json, checkpoint.pt (every epoch), metrics.jsonl, result.json and, for
    classify/finetune, predictions.npz (out-of-fold and test), or encoder.pt (pretrain).
    Running the same command again resumes from the checkpoint, or returns at once when
    result.json is complete. On SIGUSR2 or SIGTERM it checkpoints and exits with code 75.
    Under srun/torchrun (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) every rank runs it.

    Examples:

      lens train --stage classify --data lenses.h5 --fold 0 --out runs/exp1

      lens train --stage classify --data lenses.h5 --fold 1 --out runs/exp1 \\
          --config jobs/classify.toml --set epochs=5 --set optim.lr=3e-4

      lens train --stage pretrain --data unlabeled.h5 --fold 0 --out runs/ssl \\
          --config jobs/pretrain.toml --set method.name=byol

      lens train --stage finetune --data lenses.h5 --fold 0 --out runs/ssl \\
          --config jobs/finetune.toml --set finetune.mode=full
    """
    from lens.train.signals import TaskInterrupted, remember_early_requests

    # first, before anything imports torch (seconds): Slurm may signal a starting task
    remember_early_requests()
    from lens.train.distributed import env_info
    from lens.train.task import TaskSpec, run_task, task_dir

    spec = TaskSpec(stage=stage.value, data=data, fold=fold, out=out, config=config,
                    overrides=tuple(overrides or ()), pretrained=pretrained)
    try:
        result = run_task(spec)
    except TaskInterrupted as exc:
        typer.secho(str(exc), err=True, fg=typer.colors.YELLOW)
        # SystemExit, not typer.Exit: lens.cli.main runs the app with standalone_mode=False,
        # where click returns typer.Exit's code instead of exiting with it
        raise SystemExit(exc.exit_code) from None
    if env_info().is_main:  # one line per task, not per rank
        typer.echo(summary(result, task_dir(out, stage.value, fold)))


def summary(result: dict, where: Path) -> str:
    """One line per task: what finished and its headline number."""
    metrics = result.get("metrics") or {}
    val = metrics.get("val")
    if isinstance(val, dict) and "macro_auc" in val:
        headline = f"val macro AUC {val['macro_auc']:.4f}, accuracy {val['accuracy']:.4f}"
    elif "final_loss" in metrics:
        headline = f"final loss {metrics['final_loss']:.4f}"
    else:
        headline = "done"
    return (f"{result['stage']} fold {result['fold']}: {headline} "
            f"({result['epochs']} epoch{'s' * (result['epochs'] != 1)}, "
            f"{result['wall_time_s']:.1f} s) -> {where}")


def register(app: typer.Typer) -> None:
    app.command("train")(train)
