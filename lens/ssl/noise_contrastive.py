"""The original DeepLense notebook's Gaussian-noise pretext: NT-Xent (SimCLR's loss, Chen
et al. 2020) between each clean image and a copy with N(0, sigma^2) pixel noise added.

Head as in the notebooks: feature_dim -> 128 -> ReLU -> 4 (``hidden_dim``, ``out_dim``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lens.augment import gaussian_noise
from lens.ssl.base import SSLMethod, check, mlp
from lens.ssl.ntxent import nt_xent


@dataclass(frozen=True)
class NoiseContrastiveParams:
    sigma: float = 0.1
    temperature: float = 0.5
    hidden_dim: int = 128
    out_dim: int = 4

    def __post_init__(self) -> None:
        m = NoiseContrastive.name
        check(self.sigma > 0, m, "sigma", self.sigma, "> 0")
        check(self.temperature > 0, m, "temperature", self.temperature, "> 0")
        check(self.hidden_dim >= 1, m, "hidden_dim", self.hidden_dim, ">= 1")
        check(self.out_dim >= 1, m, "out_dim", self.out_dim, ">= 1")


class NoiseContrastive(SSLMethod):
    name = "noise_contrastive"
    Params = NoiseContrastiveParams

    def __init__(self, backbone: nn.Module, feature_dim: int, **params):
        super().__init__(backbone, feature_dim, **params)
        p = self.params
        self.projector = mlp(feature_dim, p.hidden_dim, p.out_dim, batch_norm=False)

    def views(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(N, C, H, W) -> (x, x + sigma * noise)."""
        return x, gaussian_noise(x, self.params.sigma, generator)

    def embed(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> projections (N, out_dim)."""
        return self.projector(self.backbone(x))

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        v1, v2 = self.views(x, generator)
        return nt_xent(self.embed(v1), self.embed(v2), self.params.temperature)
