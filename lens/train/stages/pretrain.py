"""pretrain: a self-supervised method (lens.ssl) trains a backbone without labels.

Uses the train-split images outside fold K (the held-out fold stays unseen, so a finetune
of fold K is judged on images the encoder never saw), or every image of an unfolded file.
Saves encoder.pt for finetune. When the file has labels and folds, a linear probe
(logistic regression on frozen features, fit on fold != K, scored on fold K) is reported.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lens.atomic import atomic_path
from lens.data.h5file import read_index
from lens.models import build_backbone
from lens.ssl import METHODS, build_method
from lens.train import data, optim, results
from lens.train.context import TaskContext, seed_everything
from lens.train.loop import Trainable, fit
from lens.train.parallel import wrap

PROBE_MAX_TRAIN = 20_000  # images used to fit the linear probe (features are cheap, the fit not)


def run(ctx: TaskContext) -> dict[str, Any]:
    cfg, info = ctx.cfg, ctx.info
    index = read_index(info.path)
    sel = data.select_unlabeled(info, index, ctx.fold)
    seed_everything(cfg.seed + ctx.fold)
    backbone = build_backbone(cfg.model.name, info.channels, ctx.image_size)
    steps = data.steps_per_epoch(len(sel.train), cfg.batch_size)
    params = dict(cfg.method.params)
    if cfg.method.name in METHODS and "total_steps" in METHODS[cfg.method.name].defaults():
        params.setdefault("total_steps", steps * cfg.epochs)  # e.g. BYOL's momentum schedule
    method = build_method(cfg.method.name, backbone, backbone.feature_dim, params)
    method = method.to(ctx.device, memory_format=ctx.memory_format)
    ddp = wrap(method, ctx)

    groups = optim.param_groups(method, cfg.optim.lr, cfg.optim.weight_decay)
    optimizer = optim.build_optimizer(groups, cfg.optim)
    mode = data.choose_mode(cfg.data_mode, info, len(sel.train), cfg.memory_limit_gb)
    storage = data.choose_storage_device(cfg.data_on_device, ctx.device,
                                         data.subset_bytes(info, len(sel.train)))
    source = data.make_source(mode, info, sel.train, ctx.device, storage, cfg.num_workers)
    t = Trainable(
        model=method,
        loss=lambda x, y, g: ddp(x, generator=g),
        optimizer=optimizer,
        scheduler=optim.build_scheduler(optimizer, cfg.optim, steps, cfg.epochs),
        scaler=torch.amp.GradScaler(ctx.device.type, enabled=ctx.amp_dtype == torch.float16),
        train_mode=method.train,
        after_step=method.after_step,
    )
    prog = fit(ctx, t, source)
    del source

    if ctx.dist.is_main:
        with atomic_path(ctx.path("encoder.pt")) as tmp:
            torch.save({
                "backbone": cfg.model.name, "in_channels": info.channels,
                "image_size": ctx.image_size, "state_dict": backbone.state_dict(),
                "method": cfg.method.name, "method_params": params,
                "stage": "pretrain", "fold": ctx.fold,
            }, tmp)
    use_probe = cfg.linear_probe and ctx.dist.is_main  # rank 0 alone writes the result
    probe = linear_probe(ctx, backbone, index) if use_probe else None
    metrics = {"loss_curve": [line["train_loss"] for line in prog.history],
               "final_loss": prog.history[-1]["train_loss"], "linear_probe": probe}
    counts = {"n_train": len(sel.train), "n_val": 0, "n_test": 0}
    result = results.result_dict(ctx, prog, class_names=list(info.class_names) or None,
                                 metrics=metrics, counts=counts,
                                 extra={"encoder": str(ctx.path("encoder.pt"))})
    results.write_result(ctx, result)
    return result


@torch.no_grad()
def features(ctx: TaskContext, backbone: torch.nn.Module, subset: data.Subset) -> np.ndarray:
    """Frozen-backbone features (n, feature_dim) of a subset, every rank computing all of it
    (the probe is small; no gather needed)."""
    backbone.eval()
    source = data.MemorySource(ctx.info, subset, torch.device("cpu"), ctx.device)
    batch = max(1, 2 * ctx.cfg.batch_size)
    plan = [np.arange(i, min(i + batch, source.n)) for i in range(0, source.n, batch)]
    out = []
    for x, _ in source.batches(plan):
        with ctx.autocast():
            out.append(backbone(x.contiguous(memory_format=ctx.memory_format)).float().cpu())
    return torch.cat(out).numpy()


def linear_probe(ctx: TaskContext, backbone: torch.nn.Module, index: Any
                 ) -> dict[str, Any] | None:
    """Logistic regression on frozen features: fit on labeled fold != K, score fold K."""
    info = ctx.info
    if info.n_folds < 2 or info.num_classes < 2 or not index.labeled:
        return None
    try:
        sel = data.select_labeled(info, index, ctx.fold)
    except Exception:  # e.g. a partly labeled file: the probe is optional
        return None
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from lens.train.evaluate import metrics

    rng = np.random.default_rng(ctx.cfg.seed + ctx.fold)
    train = sel.train
    if len(train) > PROBE_MAX_TRAIN:
        keep = np.sort(rng.choice(len(train), PROBE_MAX_TRAIN, replace=False))
        train = data.Subset("train", train.index[keep], train.labels[keep])
    x_train, x_val = features(ctx, backbone, train), features(ctx, backbone, sel.val)
    scaler = StandardScaler().fit(x_train)
    clf = LogisticRegression(max_iter=2000).fit(scaler.transform(x_train), train.labels)
    probs = clf.predict_proba(scaler.transform(x_val))
    m = metrics(sel.val.labels, probs, info.class_names, n_boot=0, seed=ctx.cfg.seed)
    return {k: m[k] for k in ("macro_auc", "accuracy", "balanced_accuracy")} | {
        "n_train": len(train), "n_val": len(sel.val)}
