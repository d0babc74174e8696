"""ResNet-18 (He et al. 2016) from torchvision, adapted to any number of input channels."""

from __future__ import annotations

import torchvision
from torch import nn


def resnet18(in_channels: int, image_size: int) -> nn.Module:
    """torchvision ResNet-18 without pretrained weights; features (N, 512) after avg-pool.

    The first conv takes ``in_channels``; ``fc`` is an Identity. The adaptive pooling makes
    any image size of 32 pixels or more work (150 px -> 5x5 final map, 64 px -> 2x2).
    State-dict keys stay torchvision's, so a torchvision checkpoint loads directly.
    """
    del image_size  # the adaptive pooling handles every size
    model = torchvision.models.resnet18(weights=None)
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.fc = nn.Identity()
    model.feature_dim = 512
    return model
