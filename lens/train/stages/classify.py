"""classify: a fresh classifier per fold, trained on the other folds, judged on its own.

Also the supervised half of finetune (``train_supervised``): the loss, the per-epoch
validation, the out-of-fold and test predictions and their metrics. The model of the last
epoch is the one reported: choosing an epoch by the held-out fold would leak it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lens.data.h5file import read_index
from lens.models import build_classifier
from lens.train import data, evaluate, optim, results
from lens.train.context import TaskContext, seed_everything
from lens.train.loop import Trainable, fit
from lens.train.parallel import wrap


def run(ctx: TaskContext) -> dict[str, Any]:
    cfg = ctx.cfg
    sel = data.select_labeled(ctx.info, read_index(ctx.info.path), ctx.fold)
    seed_everything(cfg.seed + ctx.fold)  # a fresh, fold-specific initialisation
    model = build_classifier(cfg.model.name, ctx.info.channels, ctx.image_size,
                             ctx.info.num_classes)
    groups = optim.param_groups(model, cfg.optim.lr, cfg.optim.weight_decay)
    balance = "weighted_loss" if cfg.class_weighting else "none"
    return train_supervised(ctx, sel, model, groups, balance=balance)


def weighted_cross_entropy(weights: torch.Tensor | None
                           ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Mean of w[y] * CE. The weights average 1 over the training images, so the loss is
    a plain mean over the batch and a mean over ranks equals the one-process loss."""
    def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(logits.float(), y, reduction="none")
        return (ce * weights[y]).mean() if weights is not None else ce.mean()

    return loss


def train_supervised(ctx: TaskContext, sel: data.Selection, model: nn.Module,
                     groups: list[dict], *, balance: str,
                     train_mode: Callable[[nn.Module], None] | None = None,
                     extra: dict[str, Any] | None = None) -> dict[str, Any]:
    cfg, info = ctx.cfg, ctx.info
    model = model.to(ctx.device, memory_format=ctx.memory_format)
    sources = make_sources(ctx, sel)
    class_w = data.balanced_weights(sel.train.labels, info.num_classes)
    weights = torch.tensor(class_w, dtype=torch.float32, device=ctx.device)
    loss_fn = weighted_cross_entropy(weights if balance == "weighted_loss" else None)
    sample_weights = class_w[sel.train.labels] if balance == "sampler" else None
    ddp = wrap(model, ctx)

    optimizer = optim.build_optimizer(groups, cfg.optim)
    steps = data.steps_per_epoch(len(sel.train), cfg.batch_size)
    eval_batch = max(1, 2 * cfg.batch_size // ctx.dist.world_size)

    def evaluate_val() -> dict[str, Any]:
        probs = evaluate.predict(ctx, model, sources["val"], eval_batch)
        m = evaluate.metrics(sel.val.labels, probs, info.class_names, n_boot=0, seed=cfg.seed)
        return {k: m[k] for k in ("loss", "macro_auc", "micro_auc", "accuracy",
                                  "balanced_accuracy")}

    t = Trainable(
        model=model,
        loss=lambda x, y, g: loss_fn(ddp(x), y),
        optimizer=optimizer,
        scheduler=optim.build_scheduler(optimizer, cfg.optim, steps, cfg.epochs),
        scaler=torch.amp.GradScaler(ctx.device.type, enabled=ctx.amp_dtype == torch.float16),
        train_mode=(lambda: train_mode(model)) if train_mode else model.train,
        evaluate=evaluate_val,
        sample_weights=sample_weights,
    )
    prog = fit(ctx, t, sources["train"])

    final: dict[str, Any] = {"val": None, "test": None}
    arrays: dict[str, np.ndarray] = {}
    for name in ("val", "test"):
        subset = getattr(sel, name)
        probs = (evaluate.predict(ctx, model, sources[name], eval_batch) if len(subset)
                 else np.zeros((0, info.num_classes), np.float32))
        arrays.update({f"{name}_index": subset.index, f"{name}_label": subset.labels,
                       f"{name}_prob": probs.astype(np.float32)})
        if len(subset) and (subset.labels >= 0).all():
            final[name] = evaluate.metrics(subset.labels, probs, info.class_names,
                                           n_boot=cfg.n_boot, seed=cfg.seed)
    results.write_model(ctx, model)
    results.write_predictions(ctx, arrays)
    counts = {"n_train": len(sel.train), "n_val": len(sel.val), "n_test": len(sel.test)}
    result = results.result_dict(ctx, prog, class_names=list(info.class_names),
                                 metrics=final, counts=counts, extra=extra)
    results.write_result(ctx, result)
    return result


def make_sources(ctx: TaskContext, sel: data.Selection
                 ) -> dict[str, data.MemorySource | data.StreamSource]:
    """Batch sources for train/val/test: all in memory (on the GPU when they fit) or all
    streamed, decided once from the size of the images this task touches."""
    cfg = ctx.cfg
    n_total = len(sel.train) + len(sel.val) + len(sel.test)
    mode = data.choose_mode(cfg.data_mode, ctx.info, n_total, cfg.memory_limit_gb)
    storage = data.choose_storage_device(cfg.data_on_device, ctx.device,
                                         data.subset_bytes(ctx.info, n_total))
    return {name: data.make_source(mode, ctx.info, getattr(sel, name), ctx.device, storage,
                                   cfg.num_workers)
            for name in ("train", "val", "test")}
