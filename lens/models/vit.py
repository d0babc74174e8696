"""A tiny Vision Transformer (Dosovitskiy et al. 2021) from torchvision's implementation."""

from __future__ import annotations

import math

import torchvision
from torch import nn

from lens.errors import LensError

HIDDEN_DIM, NUM_LAYERS, NUM_HEADS, MLP_DIM = 192, 6, 3, 768
MAX_GRID = 15  # at most 15 x 15 = 225 tokens: attention cost stays small
PATCH_RANGE = range(4, 33)


def choose_patch_size(image_size: int) -> int:
    """The smallest patch in 4..32 that divides ``image_size`` into at most 15 per side.

    150 px -> 10 (15 x 15 tokens), 64 px -> 8 (8 x 8), 32 px -> 4 (8 x 8), 128 px -> 16.
    """
    for patch in PATCH_RANGE:
        if image_size % patch == 0 and image_size // patch <= MAX_GRID:
            return patch
    raise LensError(
        f"vit_tiny: no patch size in {PATCH_RANGE.start}..{PATCH_RANGE.stop - 1} divides "
        f"image_size {image_size} into at most {MAX_GRID}x{MAX_GRID} patches; "
        f"crop or resize the images when packing (e.g. to 150, 128 or 64 pixels)"
    )


def vit_tiny(in_channels: int, image_size: int) -> nn.Module:
    """ViT with hidden 192, 6 layers, 3 heads, MLP 768; features = the class token (N, 192).

    Inputs must be exactly ``image_size`` pixels square (torchvision checks this).
    """
    patch = choose_patch_size(image_size)
    model = torchvision.models.VisionTransformer(
        image_size=image_size,
        patch_size=patch,
        num_layers=NUM_LAYERS,
        num_heads=NUM_HEADS,
        hidden_dim=HIDDEN_DIM,
        mlp_dim=MLP_DIM,
    )
    model.conv_proj = nn.Conv2d(in_channels, HIDDEN_DIM, kernel_size=patch, stride=patch)
    # torchvision's own initialisation of the patch projection
    fan_in = in_channels * patch * patch
    nn.init.trunc_normal_(model.conv_proj.weight, std=math.sqrt(1 / fan_in))
    nn.init.zeros_(model.conv_proj.bias)
    model.heads = nn.Identity()
    model.feature_dim = HIDDEN_DIM
    return model
