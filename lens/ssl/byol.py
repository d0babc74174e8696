"""BYOL: Grill et al. 2020, "Bootstrap Your Own Latent: A New Approach to Self-Supervised
Learning" (NeurIPS).

Online network: backbone -> projector -> predictor. Target network: a copy of backbone and
projector that receives no gradients and follows the online weights by an exponential
moving average, updated in ``after_step`` (the training loop calls it after each
optimizer step). Loss, symmetric over the two views (same augmentations as SimCLR):

    L = mean_i [2 - 2 cos(p1_i, t2_i)] + mean_i [2 - 2 cos(p2_i, t1_i)]   in [0, 8]

Momentum: with ``total_steps`` = 0 (default) it is fixed at ``momentum``; with
``total_steps`` = K > 0 it follows the paper's cosine schedule
tau_k = 1 - (1 - momentum) * (cos(pi k / K) + 1) / 2, reaching 1 at step K. The step
counter is a buffer, so it is saved in checkpoints and a resumed run continues the schedule.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lens.augment import apply
from lens.ssl.base import SSLMethod, check, mlp
from lens.ssl.simclr import view_augment


@dataclass(frozen=True)
class BYOLParams:
    hidden_dim: int = 1024
    out_dim: int = 256
    momentum: float = 0.99
    total_steps: int = 0
    max_shift: int = 4
    noise_sigma: float = 0.02
    brightness: float = 0.1
    contrast: float = 0.1

    def __post_init__(self) -> None:
        m = BYOL.name
        check(self.hidden_dim >= 1, m, "hidden_dim", self.hidden_dim, ">= 1")
        check(self.out_dim >= 1, m, "out_dim", self.out_dim, ">= 1")
        check(0 <= self.momentum <= 1, m, "momentum", self.momentum, "in [0, 1]")
        check(self.total_steps >= 0, m, "total_steps", self.total_steps, ">= 0")
        view_augment(self)


def regression_loss(p: Tensor, z: Tensor) -> Tensor:
    """(N, D), (N, D) -> scalar mean of 2 - 2 cos(p_i, z_i) (normalised MSE)."""
    return (2 - 2 * F.cosine_similarity(p.float(), z.float(), dim=1)).mean()


class BYOL(SSLMethod):
    name = "byol"
    Params = BYOLParams

    def __init__(self, backbone: nn.Module, feature_dim: int, **params):
        super().__init__(backbone, feature_dim, **params)
        p = self.params
        self.augment = view_augment(p)
        self.projector = mlp(feature_dim, p.hidden_dim, p.out_dim)
        self.predictor = mlp(p.out_dim, p.hidden_dim, p.out_dim)
        self.target_backbone = copy.deepcopy(backbone).requires_grad_(False)
        self.target_projector = copy.deepcopy(self.projector).requires_grad_(False)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def momentum(self) -> float:
        """The EMA coefficient tau for the current step."""
        p = self.params
        if p.total_steps == 0:
            return p.momentum
        progress = min(int(self.step), p.total_steps) / p.total_steps
        return 1 - (1 - p.momentum) * (math.cos(math.pi * progress) + 1) / 2

    def views(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(N, C, H, W) -> two independently augmented views, each (N, C, H, W)."""
        return apply(x, self.augment, generator), apply(x, self.augment, generator)

    def online(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> predictions (N, out_dim)."""
        return self.predictor(self.projector(self.backbone(x)))

    @torch.no_grad()
    def target(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> target projections (N, out_dim), without gradients."""
        return self.target_projector(self.target_backbone(x))

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        v1, v2 = self.views(x, generator)
        p1, p2 = self.online(v1), self.online(v2)
        t1, t2 = self.target(v1), self.target(v2)
        return regression_loss(p1, t2) + regression_loss(p2, t1)

    @torch.no_grad()
    def after_step(self) -> None:
        """target <- tau * target + (1 - tau) * online; buffers (BN statistics) copied."""
        tau = self.momentum()
        for online, target in ((self.backbone, self.target_backbone),
                               (self.projector, self.target_projector)):
            for po, pt in zip(online.parameters(), target.parameters(), strict=True):
                pt.lerp_(po.detach(), 1 - tau)
            for bo, bt in zip(online.buffers(), target.buffers(), strict=True):
                bt.copy_(bo)
        self.step += 1
