"""The task's output files: result.json, predictions.npz and model.pt (rank 0, atomic)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from lens import __version__, atomic
from lens.data.h5file import PackedInfo
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


FAILURE = "failed.json"  # read by lens.report.collect


def write_failure(out_dir: Path, exc: BaseException, rank: int) -> None:
    """Record why the task failed, in a task folder that exists (bad input refused before
    the task began leaves no folder behind). Never raises: the task's error is the news."""
    import datetime

    from lens.errors import LensError

    if not out_dir.is_dir():
        return
    record = {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "rank": rank,
              "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "lens_version": __version__}
    try:
        atomic.write_json(out_dir / FAILURE, record)
    except (OSError, LensError):  # e.g. the full disk that made the task fail
        pass


def clear_failure(out_dir: Path) -> None:
    """A task that starts again is no longer failed."""
    (out_dir / FAILURE).unlink(missing_ok=True)


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


MODEL_FORMAT = "lens-model-1"


def training_data(info: PackedInfo) -> dict[str, Any]:
    """How the training images were packed: what inference must reproduce (`lens predict`)."""
    import h5py

    with h5py.File(info.path, "r") as f:
        attrs = {k: f.attrs[k] for k in ("nan_policy", "size", "crop") if k in f.attrs}
    return {"path": str(info.path), "created": info.created, "channels": info.channels,
            "height": info.height, "width": info.width, "class_names": list(info.class_names),
            "normalize": info.normalize, "dtype": info.dtype,
            "nan_policy": str(attrs.get("nan_policy", "error")),
            "size": int(attrs.get("size", 0)), "crop": int(attrs.get("crop", 0))}


def write_model(ctx: TaskContext, model: Any) -> None:
    """model.pt: the final weights, the config and the training data's packing, so that
    inference rebuilds and checks the model without the checkpoint or the training file."""
    if ctx.dist.is_main:
        import torch

        with atomic.atomic_path(ctx.path("model.pt")) as tmp:
            torch.save({"format": MODEL_FORMAT, "stage": ctx.stage, "fold": ctx.fold,
                        "config": ctx.cfg_dict, "data": training_data(ctx.info),
                        "state_dict": model.state_dict()}, tmp)
