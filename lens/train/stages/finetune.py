"""finetune: a pretrained encoder plus a new head, judged like classify.

The encoder is RUN/pretrain/fold_<K>/encoder.pt (the same fold: it never saw fold K), or
--pretrained PATH. Modes: ``linear`` (frozen backbone, linear head), ``mlp`` (frozen,
feature_dim -> hidden -> classes), ``full`` (all weights; backbone lr = lr * scale).
Class imbalance: class-weighted loss (default) or balanced sampling.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from lens.data.h5file import read_index
from lens.errors import LensError
from lens.models import Classifier, build_backbone
from lens.train import data, optim
from lens.train.context import TaskContext, seed_everything
from lens.train.stages.classify import train_supervised


def encoder_path(ctx: TaskContext) -> Path:
    if ctx.pretrained is not None:
        return ctx.pretrained
    run_dir = ctx.out_dir.parent.parent  # RUN/finetune/fold_K -> RUN
    return run_dir / "pretrain" / f"fold_{ctx.fold}" / "encoder.pt"


def load_encoder(path: Path, backbone: str, in_channels: int, image_size: int
                 ) -> dict[str, Any]:
    """Read encoder.pt and check that it fits this config and data; LensError otherwise."""
    if not path.is_file():
        raise LensError(
            f"{path}: no pretrained encoder; run `lens train --stage pretrain` for this fold "
            f"first, or pass --pretrained PATH"
        )
    try:
        enc = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise LensError(f"{path}: cannot read the encoder ({type(exc).__name__}: {exc})") from None
    if not isinstance(enc, dict) or not {"backbone", "in_channels", "state_dict"} <= set(enc):
        raise LensError(f"{path}: not a lens encoder (expected backbone, in_channels, "
                        f"image_size, state_dict)")
    if enc["backbone"] != backbone:
        raise LensError(
            f"{path}: the encoder is a {enc['backbone']!r} backbone but this config asks for "
            f"model.name={backbone!r}; set --set model.name={enc['backbone']} or pretrain again"
        )
    if enc["in_channels"] != in_channels:
        raise LensError(
            f"{path}: the encoder was trained on {enc['in_channels']}-channel images but the "
            f"data has {in_channels} channel(s)"
        )
    if enc.get("image_size", image_size) != image_size and backbone == "vit_tiny":
        raise LensError(f"{path}: the encoder expects {enc['image_size']} px images, the data "
                        f"has {image_size} px")
    return enc


def build_model(ctx: TaskContext, enc: dict[str, Any]) -> nn.Module:
    cfg, info = ctx.cfg, ctx.info
    backbone = build_backbone(cfg.model.name, info.channels, ctx.image_size)
    try:
        backbone.load_state_dict(enc["state_dict"])
    except RuntimeError as exc:
        raise LensError(f"encoder weights do not fit {cfg.model.name}: {exc}") from None
    model = Classifier(backbone, info.num_classes)
    mode, dim, hidden = cfg.finetune.mode, model.feature_dim, cfg.finetune.hidden
    if mode == "mlp":  # the notebooks' 512-256-2 head, generalised
        model.head = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(inplace=True),
                                   nn.Linear(hidden, info.num_classes))
    if mode in ("linear", "mlp"):
        backbone.requires_grad_(False)
        # Frozen features come at whatever scale pretraining left them; standardising them
        # (BatchNorm without affine parameters, as in MAE's linear probing) lets the head
        # train at one learning rate whatever the method. Still a linear map in eval mode.
        model.head = nn.Sequential(nn.BatchNorm1d(dim, affine=False), model.head)
    return model


def train_mode(frozen: bool):
    def set_mode(model: nn.Module) -> None:
        model.train()
        if frozen:  # a frozen backbone keeps its BatchNorm statistics too
            model.backbone.eval()

    return set_mode


def run(ctx: TaskContext) -> dict[str, Any]:
    cfg = ctx.cfg
    sel = data.select_labeled(ctx.info, read_index(ctx.info.path), ctx.fold)
    path = encoder_path(ctx)
    enc = load_encoder(path, cfg.model.name, ctx.info.channels, ctx.image_size)
    seed_everything(cfg.seed + ctx.fold)
    model = build_model(ctx, enc)
    lr, wd = cfg.optim.lr, cfg.optim.weight_decay
    groups = optim.param_groups(model.head, lr, wd)
    frozen = cfg.finetune.mode != "full"
    if not frozen:
        groups += optim.param_groups(model.backbone, lr * cfg.finetune.backbone_lr_scale, wd)
    source = {"path": str(path), "method": enc.get("method"), "fold": enc.get("fold")}
    return train_supervised(ctx, sel, model, groups, balance=cfg.finetune.balance,
                            train_mode=train_mode(frozen), extra={"encoder": source})
