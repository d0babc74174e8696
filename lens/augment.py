"""Batched augmentations for lensing images, on whatever device the batch lives on.

Every function takes a batch ``x`` of shape (N, C, H, W) and returns a new tensor of the
same shape, dtype and device; nothing goes through PIL or the CPU. Random functions take
an optional ``torch.Generator``: with a seeded generator the result is reproducible. The
per-image random numbers (N of them) are drawn on the generator's device and moved to the
batch; whole-image noise is drawn on the generator's device too, so pass a generator that
lives on the batch's device (``torch.Generator(device=x.device)``) to avoid a copy.

Only label-preserving, lensing-appropriate transforms are here (see the DeepLense data
notes): exact dihedral symmetries, small integer shifts, Gaussian noise, PSF-like blur and
mild brightness/contrast. No hue, grayscale, solarisation or arbitrary-angle rotation.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lens.errors import LensError

# D4 element t (0..7) is: flip left-right if t >= 4, then rotate by (t % 4) * 90 degrees.
N_DIHEDRAL = 8


def _uniform(n: int, x: Tensor, generator: torch.Generator | None) -> Tensor:
    """n uniform [0, 1) floats drawn on the generator's device, returned on x's device."""
    device = generator.device if generator is not None else x.device
    return torch.rand(n, generator=generator, device=device).to(x.device)


def _randint(high: int, n: int, x: Tensor, generator: torch.Generator | None) -> Tensor:
    device = generator.device if generator is not None else x.device
    return torch.randint(0, high, (n,), generator=generator, device=device).to(x.device)


def _check_batch(x: Tensor, square: bool = False) -> None:
    if x.dim() != 4:
        raise LensError(f"augmentations expect a batch (N, C, H, W), got shape {tuple(x.shape)}")
    if square and x.shape[-1] != x.shape[-2]:
        raise LensError(f"rotations need square images, got H x W = {x.shape[-2]} x {x.shape[-1]}")


@functools.lru_cache(maxsize=16)
def _dihedral_index(size: int, device: torch.device) -> Tensor:
    """(8, size*size) table: row t lists, for each output pixel, its source pixel under D4[t]."""
    grid = torch.arange(size * size, device=device).view(size, size)
    rows = []
    for t in range(N_DIHEDRAL):
        g = torch.flip(grid, dims=(-1,)) if t >= 4 else grid
        rows.append(torch.rot90(g, t % 4, dims=(-2, -1)).reshape(-1))
    return torch.stack(rows)


def dihedral_batch(x: Tensor, t: Tensor) -> Tensor:
    """Apply D4 element t[i] (0..7, see N_DIHEDRAL) to image i; exact pixel permutation.

    One gather with a per-image index row: vectorised, no Python loop over images and
    no host-device synchronisation.
    """
    _check_batch(x, square=True)
    n, c, h, w = x.shape
    index = _dihedral_index(h, x.device)[t.to(x.device).long() % N_DIHEDRAL]  # (N, H*W)
    out = x.reshape(n, c, h * w).gather(2, index[:, None, :].expand(n, c, h * w))
    return out.view(n, c, h, w)


def rot90_batch(x: Tensor, k: Tensor) -> Tensor:
    """Rotate image i by k[i] * 90 degrees counter-clockwise (k taken modulo 4)."""
    return dihedral_batch(x, k.to(x.device).long() % 4)


def random_dihedral(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Each image gets an independent, uniformly drawn element of D4 (rot90^k x flip)."""
    _check_batch(x, square=True)
    return dihedral_batch(x, _randint(N_DIHEDRAL, x.shape[0], x, generator))


def random_shift(
    x: Tensor, max_shift: int, generator: torch.Generator | None = None, mode: str = "constant"
) -> Tensor:
    """Translate each image by independent integers dy, dx in [-max_shift, max_shift].

    The batch is padded (``mode``: "constant" = zeros, or "reflect") and each image cropped
    back at its own offset with one advanced-indexing gather.
    """
    _check_batch(x)
    if max_shift < 0:
        raise LensError(f"max_shift must be >= 0, got {max_shift}")
    if max_shift == 0:
        return x.clone()
    n, c, h, w = x.shape
    if mode == "reflect" and max_shift >= min(h, w):
        raise LensError(f"reflect padding needs max_shift < image size, got {max_shift}")
    if mode not in ("constant", "reflect"):
        raise LensError(f"shift padding mode must be 'constant' or 'reflect', got {mode!r}")
    padded = F.pad(x, (max_shift,) * 4, mode=mode)
    offsets = _randint(2 * max_shift + 1, 2 * n, x, generator).view(2, n)
    rows = offsets[0][:, None] + torch.arange(h, device=x.device)  # (N, H)
    cols = offsets[1][:, None] + torch.arange(w, device=x.device)  # (N, W)
    batch = torch.arange(n, device=x.device)[:, None, None]
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]  # (N, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def gaussian_noise(x: Tensor, sigma: float, generator: torch.Generator | None = None) -> Tensor:
    """Add independent N(0, sigma^2) noise to every pixel."""
    if sigma < 0:
        raise LensError(f"noise sigma must be >= 0, got {sigma}")
    if sigma == 0:
        return x.clone()
    device = generator.device if generator is not None else x.device
    # drawn in float32 so a seed gives the same noise whatever the batch's dtype
    noise = torch.randn(x.shape, generator=generator, device=device)
    return x + sigma * noise.to(device=x.device, dtype=x.dtype)


def random_brightness_contrast(
    x: Tensor, brightness: float, contrast: float, generator: torch.Generator | None = None
) -> Tensor:
    """Per image: scale by b ~ U(1-brightness, 1+brightness), then stretch about the mean
    by c ~ U(1-contrast, 1+contrast). Multiplicative, so unnormalised images work too."""
    _check_batch(x)
    for name, value in (("brightness", brightness), ("contrast", contrast)):
        if not 0 <= value < 1:
            raise LensError(f"{name} must be in [0, 1), got {value}")
    n = x.shape[0]
    u = _uniform(2 * n, x, generator).view(2, n, 1, 1, 1).to(x.dtype)
    b = 1 + brightness * (2 * u[0] - 1)
    c = 1 + contrast * (2 * u[1] - 1)
    y = x * b
    mean = y.mean(dim=(1, 2, 3), keepdim=True)
    return (y - mean) * c + mean


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Deterministic PSF-like blur: separable Gaussian of std ``sigma`` pixels, reflect edges."""
    _check_batch(x)
    if sigma < 0:
        raise LensError(f"blur sigma must be >= 0, got {sigma}")
    if sigma == 0:
        return x.clone()
    n, c, h, w = x.shape
    radius = min(max(1, math.ceil(3 * sigma)), min(h, w) - 1)
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    y = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1).contiguous(), groups=c)
    y = F.conv2d(y, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1).contiguous(), groups=c)
    return y


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation; zero values switch a transform off."""

    dihedral: bool = True
    max_shift: int = 0
    noise_sigma: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.dihedral, bool):
            raise LensError(f"augment.dihedral must be true or false, got {self.dihedral!r}")
        if not isinstance(self.max_shift, int) or self.max_shift < 0:
            raise LensError(f"augment.max_shift must be an integer >= 0, got {self.max_shift!r}")
        if self.noise_sigma < 0:
            raise LensError(f"augment.noise_sigma must be >= 0, got {self.noise_sigma}")
        for name in ("brightness", "contrast"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise LensError(f"augment.{name} must be in [0, 1), got {value}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AugmentConfig:
        """Build from a TOML table; unknown keys are an error listing the valid ones."""
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - valid)
        if unknown:
            defaults = ", ".join(f"{k}={v!r}" for k, v in asdict(cls()).items())
            raise LensError(f"unknown augment key(s) {unknown}; valid keys: {defaults}")
        return cls(**data)


def apply(x: Tensor, cfg: AugmentConfig, generator: torch.Generator | None = None) -> Tensor:
    """Compose the configured transforms: dihedral, shift, brightness/contrast, noise."""
    _check_batch(x)
    if cfg.dihedral:
        x = random_dihedral(x, generator)
    if cfg.max_shift:
        x = random_shift(x, cfg.max_shift, generator)
    if cfg.brightness or cfg.contrast:
        x = random_brightness_contrast(x, cfg.brightness, cfg.contrast, generator)
    if cfg.noise_sigma:
        x = gaussian_noise(x, cfg.noise_sigma, generator)
    return x
