"""Backbone registry: ``build_backbone(name, in_channels, image_size)`` -> feature extractor.

A backbone maps images (N, C, H, W) to features (N, feature_dim) and carries an int
attribute ``feature_dim``. ``build_classifier`` adds a linear head; its ``.backbone`` is what
a pretraining stage saves and a fine-tuning stage loads (and may freeze).

Weights are always randomly initialised: nothing is downloaded, so jobs run on compute
nodes without network access. All models use autocast-friendly ops and accept
channels_last inputs.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from lens.errors import LensError
from lens.models.cnn_attention import cnn_attention
from lens.models.resnet import resnet18
from lens.models.vit import vit_tiny

# name -> constructor(in_channels, image_size) returning a module with .feature_dim
MODELS: dict[str, Callable[[int, int], nn.Module]] = {
    "resnet18": resnet18,
    "cnn_attention": cnn_attention,
    "vit_tiny": vit_tiny,
}


def build_backbone(name: str, in_channels: int, image_size: int) -> nn.Module:
    """The backbone ``name`` for square images of ``image_size`` pixels."""
    if name not in MODELS:
        raise LensError(f"unknown model {name!r}; valid models: {', '.join(MODELS)}")
    if in_channels < 1:
        raise LensError(f"in_channels must be >= 1, got {in_channels}")
    if image_size < 8:
        raise LensError(f"image_size must be >= 8 pixels, got {image_size}")
    model = MODELS[name](in_channels, image_size)
    assert isinstance(model.feature_dim, int)
    return model


class Classifier(nn.Module):
    """Backbone features -> linear head -> class logits (N, num_classes)."""

    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.feature_dim: int = backbone.feature_dim
        self.head = nn.Linear(backbone.feature_dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))


def build_classifier(name: str, in_channels: int, image_size: int, num_classes: int) -> Classifier:
    """``build_backbone`` plus a linear head with ``num_classes`` outputs."""
    if num_classes < 2:
        raise LensError(f"a classifier needs at least 2 classes, got {num_classes}")
    return Classifier(build_backbone(name, in_channels, image_size), num_classes)


__all__ = ["MODELS", "Classifier", "build_backbone", "build_classifier"]
