"""Self-describing checkpoints: everything a task needs to continue exactly where it stopped.

A checkpoint is a plain dict of tensors and plain Python values, so it loads with
``torch.load(weights_only=True)`` (no pickled code runs when reading a file):

    format, stage, fold, config, data (identity of the packed file), model, optimizer,
    scheduler, scaler, progress (epoch, step_in_epoch, global_step, images and seconds of
    the current epoch, wall time, restarts, per-epoch history), per_rank (each rank's
    running loss and RNG states: python, numpy, torch CPU, CUDA)

The data-order and augmentation generators need no saved state: lens.train.loop draws each
epoch's order from (seed, fold, epoch) and re-seeds the augmentation generator every step
from (seed, fold, step, rank). It is written to a temporary sibling and renamed, so a
crash leaves the previous checkpoint.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lens.atomic import atomic_path
from lens.errors import LensError

FORMAT = "lens-checkpoint-1"


def rng_state() -> dict[str, Any]:
    """Global RNG states as tensors and plain values (weights_only-loadable)."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": {
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
    }
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state({
        "bit_generator": "MT19937",
        "state": {"key": np_state["key"].numpy().astype(np.uint32), "pos": np_state["pos"]},
        "has_gauss": np_state["has_gauss"],
        "gauss": np_state["gauss"],
    })
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: Path, checkpoint: dict[str, Any]) -> None:
    """Atomic torch.save of a checkpoint dict (rank 0 only: the caller decides)."""
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **checkpoint}, tmp)


def load(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by ``save``; LensError if it is not one."""
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise LensError(
            f"{path}: cannot read this checkpoint ({type(exc).__name__}: {exc}); "
            f"delete it to start the task again from scratch"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise LensError(f"{path}: not a lens checkpoint (expected format {FORMAT})")
    return ckpt
