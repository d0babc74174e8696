"""Predictions on held-out images, gathered from every rank, and their metrics."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from lens.train import data
from lens.train import distributed as dist
from lens.train.context import TaskContext


@torch.no_grad()
def predict(ctx: TaskContext, model: nn.Module, source: data.MemorySource | data.StreamSource,
            batch: int) -> np.ndarray:
    """Softmax probabilities (n, classes) for every image of ``source``, in source order.

    Each rank predicts a disjoint share; shares are gathered (all_gather) and de-duplicated
    by position, so every image is counted exactly once whatever the number of ranks.
    """
    if source.n == 0:
        raise ValueError("predict needs at least one image")
    model.eval()
    plan = data.eval_plan(source.n, batch, ctx.dist.world_size, ctx.dist.rank)
    positions, probs = [], []
    for pos, (x, _) in zip(plan, source.batches(plan), strict=True):
        with ctx.autocast():
            logits = model(x.contiguous(memory_format=ctx.memory_format))
        probs.append(logits.float().softmax(dim=1).cpu().numpy())
        positions.append(pos)
    mine = (np.concatenate(positions) if positions else np.zeros(0, np.int64),
            np.concatenate(probs) if probs else None)
    shares = dist.all_gather_objects(mine)
    all_pos = np.concatenate([p for p, _ in shares])
    all_prob = np.concatenate([q for p, q in shares if q is not None])
    unique, first = np.unique(all_pos, return_index=True)
    if unique.size != source.n:
        raise RuntimeError(f"predictions cover {unique.size} of {source.n} images")
    return all_prob[first]


def metrics(labels: np.ndarray, probs: np.ndarray, class_names: tuple[str, ...],
            n_boot: int, seed: int) -> dict[str, Any]:
    """classification_metrics plus the mean cross-entropy; probabilities, never logits."""
    from lens.train.metrics import classification_metrics

    out = dict(classification_metrics(labels, probs, list(class_names), n_boot=n_boot, seed=seed))
    p_true = probs[np.arange(labels.size), labels]
    out["loss"] = float(-np.log(np.clip(p_true, 1e-12, None)).mean())
    return out
