"""The original DeepLense notebook's "rotation pretext": NT-Xent between an image and a
randomly rot90-rotated copy of it (contrastive learning with rotation as the only
augmentation; the loss is SimCLR's, Chen et al. 2020).

The copy is rotated by k * 90 degrees with k uniform in {1, 2, 3}, so the two views always
differ. The head follows the notebook: feature_dim -> 128 -> ReLU -> 4 (``hidden_dim``,
``out_dim``); a wider ``out_dim`` (e.g. 128) usually gives a stronger contrastive signal.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lens.augment import rot90_batch
from lens.ssl.base import SSLMethod, check, mlp
from lens.ssl.ntxent import nt_xent


@dataclass(frozen=True)
class RotationContrastiveParams:
    temperature: float = 0.5
    hidden_dim: int = 128
    out_dim: int = 4

    def __post_init__(self) -> None:
        m = RotationContrastive.name
        check(self.temperature > 0, m, "temperature", self.temperature, "> 0")
        check(self.hidden_dim >= 1, m, "hidden_dim", self.hidden_dim, ">= 1")
        check(self.out_dim >= 1, m, "out_dim", self.out_dim, ">= 1")


class RotationContrastive(SSLMethod):
    name = "rotation_contrastive"
    Params = RotationContrastiveParams

    def __init__(self, backbone: nn.Module, feature_dim: int, **params):
        super().__init__(backbone, feature_dim, **params)
        p = self.params
        self.projector = mlp(feature_dim, p.hidden_dim, p.out_dim, batch_norm=False)

    def views(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(N, C, H, W) -> (x, x with image i rotated by k[i] * 90, k[i] in 1..3)."""
        device = generator.device if generator is not None else x.device
        k = torch.randint(1, 4, (x.shape[0],), generator=generator, device=device)
        return x, rot90_batch(x, k.to(x.device))

    def embed(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> projections (N, out_dim)."""
        return self.projector(self.backbone(x))

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        v1, v2 = self.views(x, generator)
        return nt_xent(self.embed(v1), self.embed(v2), self.params.temperature)
