"""The task's output files: result.json and predictions.npz (rank 0, atomic)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from lens import __version__, atomic
from lens.train.context import TaskContext
from lens.train.loop import Progress

COMPLETED = "completed"


def read_completed(path: Path) -> dict[str, Any] | None:
    """The result of a finished task, or None when there is none (or it is not complete)."""
    try:
        result = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return result if isinstance(result, dict) and result.get("status") == COMPLETED else None


def result_dict(ctx: TaskContext, prog: Progress, *, class_names: list[str] | None,
                metrics: dict[str, Any], counts: dict[str, int],
                extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "status": COMPLETED,
        "stage": ctx.stage,
        "fold": ctx.fold,
        "class_names": class_names,
        "metrics": metrics,
        "epochs": prog.epoch,
        "steps": prog.global_step,
        "wall_time_s": prog.wall_time,
        "restarts": prog.restarts,
        **counts,
        "config": ctx.cfg_dict,
        "data": {"path": str(ctx.info.path), "n_folds": ctx.info.n_folds},
        "lens_version": __version__,
        "device": str(ctx.device) if ctx.device.type == "cpu" else _gpu_name(ctx),
        "world_size": ctx.dist.world_size,
        **(extra or {}),
    }


def _gpu_name(ctx: TaskContext) -> str:
    import torch

    return f"{ctx.device} ({torch.cuda.get_device_name(ctx.device)})"


def write_result(ctx: TaskContext, result: dict[str, Any]) -> None:
    if ctx.dist.is_main:
        atomic.write_json(ctx.path("result.json"), result)


def write_predictions(ctx: TaskContext, arrays: dict[str, np.ndarray]) -> None:
    """predictions.npz: val_index, val_label, val_prob, test_index, test_label, test_prob."""
    if ctx.dist.is_main:
        with atomic.atomic_path(ctx.path("predictions.npz")) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
