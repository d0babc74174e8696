"""RotNet: Gidaris, Singh & Komodakis 2018, "Unsupervised Representation Learning by
Predicting Image Rotations" (ICLR).

The backbone sees each image rotated by k * 90 degrees and a linear head predicts k
(4-way cross-entropy). With ``all_rotations`` (the default, the paper's best setting) all
four rotations of every image are in the batch, so the step costs 4 forward passes;
otherwise each image gets one random k.

Caveat for sky images: lensing images have no preferred orientation, so the pretext can
only be solved through image-specific cues; keep it as the baseline the notebooks used.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lens.augment import rot90_batch
from lens.ssl.base import SSLMethod, check


@dataclass(frozen=True)
class RotationParams:
    all_rotations: bool = True

    def __post_init__(self) -> None:
        check(isinstance(self.all_rotations, bool), Rotation.name, "all_rotations",
              self.all_rotations, "true or false")


class Rotation(SSLMethod):
    """Predict the rotation k in {0, 1, 2, 3} (x 90 degrees) of each image."""

    name = "rotation"
    Params = RotationParams

    def __init__(self, backbone: nn.Module, feature_dim: int, **params):
        super().__init__(backbone, feature_dim, **params)
        self.head = nn.Linear(feature_dim, 4)

    def rotated(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(N, C, H, W) -> rotated images (M, C, H, W) and their labels k (M,).

        all_rotations: M = 4N, image i appears as rows i, N+i, 2N+i, 3N+i with k = 0..3.
        otherwise: M = N, k[i] uniform in 0..3.
        """
        n = x.shape[0]
        if self.params.all_rotations:
            k = torch.arange(4, device=x.device).repeat_interleave(n)
            return rot90_batch(x.repeat(4, 1, 1, 1), k), k
        device = generator.device if generator is not None else x.device
        k = torch.randint(0, 4, (n,), generator=generator, device=device).to(x.device)
        return rot90_batch(x, k), k

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """x: (N, C, H, W) -> scalar cross-entropy of the rotation classifier."""
        images, k = self.rotated(x, generator)
        return F.cross_entropy(self.head(self.backbone(images)).float(), k)
