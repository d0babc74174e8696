"""AdamW with decoupled weight decay on weights only, and a per-step warm-up + cosine."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

from lens.train.config import OptimConfig


def param_groups(module: nn.Module, lr: float, weight_decay: float) -> list[dict]:
    """Two groups: weights (decayed) and biases/norm parameters (1-D, not decayed)."""
    decay, no_decay = [], []
    for p in module.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    groups = [{"params": decay, "lr": lr, "weight_decay": weight_decay},
              {"params": no_decay, "lr": lr, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(groups: Iterable[dict], cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW, fused where this torch has it (CUDA; CPU since torch 2.4): the same update in
    one kernel over all tensors (on a 2-core CPU, ResNet-18: 32 ms against 111 ms)."""
    groups = list(groups)
    kwargs = {"lr": cfg.lr, "betas": (cfg.beta1, cfg.beta2), "weight_decay": cfg.weight_decay}
    try:
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, ValueError):  # torch 2.3 on CPU: no fused kernel
        return torch.optim.AdamW(groups, foreach=True, **kwargs)


def warmup_cosine(total_steps: int, warmup_steps: int, min_ratio: float) -> Callable[[int], float]:
    """lr multiplier at step s: linear from 1/warmup up to 1, then cosine down to min_ratio."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(1, total_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, steps_per_epoch: int,
                    epochs: int) -> torch.optim.lr_scheduler.LambdaLR:
    total = steps_per_epoch * epochs
    warmup = min(total, round(cfg.warmup_epochs * steps_per_epoch))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(total, warmup, cfg.min_lr_ratio))
