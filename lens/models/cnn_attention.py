"""The original DeepLense SSL notebook's small CNN with multi-head self-attention."""

from __future__ import annotations

from torch import Tensor, nn


def _block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class CNNAttention(nn.Module):
    """3 conv blocks (64, 128, 256) then 8-head self-attention over the spatial tokens.

    Shapes: (N, C, H, W) -> conv (N, 256, H/8, W/8) -> tokens (N, H/8 * W/8, 256)
    -> attention (same) -> mean over tokens (N, 256).
    """

    feature_dim: int = 256

    def __init__(self, in_channels: int, num_heads: int = 8):
        super().__init__()
        self.features = nn.Sequential(_block(in_channels, 64), _block(64, 128), _block(128, 256))
        self.attention = nn.MultiheadAttention(256, num_heads, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.features(x).flatten(2).transpose(1, 2)  # (N, L, 256)
        # need_weights=False lets PyTorch use the fused scaled-dot-product kernel
        attended, _ = self.attention(tokens, tokens, tokens, need_weights=False)
        return attended.mean(dim=1)


def cnn_attention(in_channels: int, image_size: int) -> nn.Module:
    del image_size  # any size of 8 pixels or more gives at least one token
    return CNNAttention(in_channels)
