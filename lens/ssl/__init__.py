"""Self-supervised pretraining methods: ``METHODS[name](backbone, feature_dim, **params)``.

The common interface, which the training loop relies on:

- ``Method(backbone: nn.Module, feature_dim: int, **params)`` is an ``nn.Module``.
  Unknown params raise LensError listing the valid ones with their defaults;
  ``Method.defaults()`` returns that dict.
- ``forward(x, generator=None) -> Tensor``: ``x`` is a batch of images (N, C, H, W) on
  the device; the method builds its own views or targets with ``lens.augment`` (drawing
  from ``generator`` when given) and returns the scalar loss.
- ``after_step() -> None``: called by the loop after each optimizer step (on the module
  itself, not a DDP wrapper). BYOL updates its EMA target here; the others do nothing.
- ``backbone``: the encoder, saved at the end of pretraining and reused by fine-tuning.

Contrastive losses gather negatives from all ranks under torch.distributed (see
``lens.ssl.ntxent``), so every rank must use the same per-rank batch size (drop_last).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from lens.errors import LensError
from lens.ssl.base import SSLMethod
from lens.ssl.byol import BYOL
from lens.ssl.noise_contrastive import NoiseContrastive
from lens.ssl.rotation import Rotation
from lens.ssl.rotation_contrastive import RotationContrastive
from lens.ssl.simclr import SimCLR

METHODS: dict[str, type[SSLMethod]] = {
    "rotation": Rotation,
    "rotation_contrastive": RotationContrastive,
    "noise_contrastive": NoiseContrastive,
    "simclr": SimCLR,
    "byol": BYOL,
}


def build_method(
    name: str, backbone: nn.Module, feature_dim: int, params: dict[str, Any] | None = None
) -> SSLMethod:
    """``METHODS[name](backbone, feature_dim, **params)``; unknown name -> LensError."""
    if name not in METHODS:
        raise LensError(f"unknown ssl method {name!r}; valid methods: {', '.join(METHODS)}")
    return METHODS[name](backbone, feature_dim, **(params or {}))


__all__ = ["METHODS", "SSLMethod", "build_method"]
