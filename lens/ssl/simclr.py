"""SimCLR: Chen, Kornblith, Norouzi & Hinton 2020, "A Simple Framework for Contrastive
Learning of Visual Representations" (ICML).

Two independent views per image from lens.augment (exact dihedral symmetry, small shift,
brightness/contrast, Gaussian noise: the augmentations that suit lensing images), a
projection MLP feature_dim -> hidden_dim -> BN -> ReLU -> out_dim, and NT-Xent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lens.augment import AugmentConfig, apply
from lens.errors import LensError
from lens.ssl.base import SSLMethod, check, mlp
from lens.ssl.ntxent import nt_xent


@dataclass(frozen=True)
class SimCLRParams:
    temperature: float = 0.2
    hidden_dim: int = 512
    out_dim: int = 128
    max_shift: int = 4
    noise_sigma: float = 0.02
    brightness: float = 0.1
    contrast: float = 0.1

    def __post_init__(self) -> None:
        m = SimCLR.name
        check(self.temperature > 0, m, "temperature", self.temperature, "> 0")
        check(self.hidden_dim >= 1, m, "hidden_dim", self.hidden_dim, ">= 1")
        check(self.out_dim >= 1, m, "out_dim", self.out_dim, ">= 1")
        view_augment(self)  # AugmentConfig checks the augmentation values


def view_augment(p: Any) -> AugmentConfig:
    """The augmentation of one view, from params with max_shift, noise_sigma, brightness
    and contrast fields (SimCLR's and BYOL's)."""
    try:
        return AugmentConfig(dihedral=True, max_shift=p.max_shift, noise_sigma=p.noise_sigma,
                             brightness=p.brightness, contrast=p.contrast)
    except LensError as exc:
        raise LensError(f"ssl method params: {exc}".replace("augment.", "")) from None


class SimCLR(SSLMethod):
    name = "simclr"
    Params = SimCLRParams

    def __init__(self, backbone: nn.Module, feature_dim: int, **params):
        super().__init__(backbone, feature_dim, **params)
        p = self.params
        self.augment = view_augment(p)
        self.projector = mlp(feature_dim, p.hidden_dim, p.out_dim)

    def views(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(N, C, H, W) -> two independently augmented views, each (N, C, H, W)."""
        return apply(x, self.augment, generator), apply(x, self.augment, generator)

    def embed(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> projections (N, out_dim)."""
        return self.projector(self.backbone(x))

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        v1, v2 = self.views(x, generator)
        return nt_xent(self.embed(v1), self.embed(v2), self.params.temperature)
