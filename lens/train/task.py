"""run_task(spec): one (stage, fold) task — what `lens train` and every Slurm array task run.

    from lens.train.task import TaskSpec, run_task
    result = run_task(TaskSpec("classify", "data.h5", fold=0, out="runs/exp1"))

Writes RUN/<stage>/fold_<K>/ (see docs/ARCHITECTURE.md, "One task"). Idempotent: a task
whose result.json is complete returns it at once; a task with a checkpoint resumes from it.
Raises LensError on bad input and TaskInterrupted (exit code 75) after checkpointing on
SIGUSR2/SIGTERM. For its duration run_task installs its own SIGUSR2/SIGTERM handlers (and
restores the previous ones), so inside submitit the caller sees TaskInterrupted and decides
about the requeue; submitit's own checkpoint() hook is not reached. Under torch.distributed
(RANK/WORLD_SIZE or srun variables) every rank calls run_task with the same spec; only
rank 0 writes files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lens.errors import LensError
from lens.train import config as config_mod
from lens.train import distributed as dist
from lens.train.signals import TaskInterrupted, stop_on_signals

__all__ = ["TaskInterrupted", "TaskSpec", "run_task", "task_dir"]


@dataclass(frozen=True)
class TaskSpec:
    stage: str
    data: str | Path
    fold: int
    out: str | Path
    config: str | Path | None = None
    overrides: tuple[str, ...] = ()
    pretrained: str | Path | None = None


def task_dir(out: str | Path, stage: str, fold: int) -> Path:
    return Path(out) / stage / f"fold_{fold}"


def _data_identity(info: Any) -> dict[str, Any]:
    """What must not change under a resumed task (the path may: containers remount)."""
    return {"n": info.n, "shape": [info.channels, info.height, info.width],
            "class_names": list(info.class_names), "n_folds": info.n_folds,
            "fold_seed": info.fold_seed, "created": info.created}


def _refuse_mixing(where: Path, what: str, old: dict, new: dict) -> None:
    changes = config_mod.diff(old, new)
    if changes:
        raise LensError(
            f"{where} was made with a different {what} ({'; '.join(changes[:8])}"
            f"{'; ...' if len(changes) > 8 else ''}); use another --out, or delete "
            f"{where.parent} to start this task again"
        )


def run_task(spec: TaskSpec) -> dict[str, Any]:
    """Run (or resume, or skip if done) one task; returns the content of result.json.

    A task that raises leaves failed.json (the error) in its folder, so that a report can
    say FAILED even where no scheduler can be asked (runs from `lens generate`, a laptop)."""
    from lens.train import results

    cfg = config_mod.load_config(spec.stage, spec.config, tuple(spec.overrides))
    cfg_dict = config_mod.to_dict(cfg)
    out_dir = task_dir(spec.out, spec.stage, spec.fold)
    done = results.read_completed(out_dir / "result.json")
    if done is not None:
        _refuse_mixing(out_dir / "result.json", "config", done.get("config", {}), cfg_dict)
        return done
    info_env = dist.env_info()
    if info_env.is_main:
        results.clear_failure(out_dir)
    try:
        return _run(spec, cfg, cfg_dict, out_dir, info_env)
    except Exception as exc:
        results.write_failure(out_dir, exc, info_env.rank)
        raise


def _run(spec: TaskSpec, cfg: Any, cfg_dict: dict[str, Any], out_dir: Path,
         info_env: Any) -> dict[str, Any]:
    from lens.data.h5file import read_info
    from lens.train import checkpoint
    from lens.train.context import TaskContext, determinism, resolve_device, resolve_precision
    from lens.train.stages import STAGES

    info = read_info(spec.data)
    identity = _data_identity(info)
    device = resolve_device(cfg.device, info_env.local_rank)
    started_here = info_env.world_size > 1 and not dist.is_distributed()
    dist_info = dist.init(device.type)
    try:
        ckpt_path = out_dir / "checkpoint.pt"
        resume = checkpoint.load(ckpt_path) if ckpt_path.exists() else None
        if resume is not None:
            _refuse_mixing(ckpt_path, "config", resume["config"], cfg_dict)
            _refuse_mixing(ckpt_path, "data file", resume["data"], identity)
        with stop_on_signals() as stop, determinism(cfg.deterministic):
            ctx = TaskContext(
                stage=spec.stage, fold=spec.fold, cfg=cfg, cfg_dict=cfg_dict, out_dir=out_dir,
                info=info, device=device, dist=dist_info,
                amp_dtype=resolve_precision(cfg.precision, device), stop=stop, resume=resume,
                pretrained=Path(spec.pretrained) if spec.pretrained else None,
                data_identity=identity,
            )
            result = STAGES[spec.stage](ctx)
            dist.barrier()
        return result
    finally:
        if started_here:
            dist.shutdown()
