"""What `lens pack` does to each image between reading and storing: NaN policy, centre crop,
resize, min-max normalisation and the cast to the stored dtype, in that order."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lens.errors import LensError

NORMALIZE = ("none", "minmax")
NAN_POLICIES = ("error", "zero")
DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class Transform:
    normalize: str = "none"  # none | minmax (per image, per channel, to [0, 1])
    nan: str = "error"  # error | zero (NaN and +-Inf become 0)
    size: int | None = None  # resize to size x size after cropping (antialiased bilinear)
    crop: int | None = None  # centre crop to crop x crop
    dtype: str = "float32"  # stored dtype

    def __post_init__(self) -> None:
        _choice("--normalize", self.normalize, NORMALIZE)
        _choice("--nan", self.nan, NAN_POLICIES)
        _choice("--dtype", self.dtype, DTYPES)
        for name, value in (("--size", self.size), ("--crop", self.crop)):
            if value is not None and value < 1:
                raise LensError(f"{name} {value}: must be a positive number of pixels")

    def output_hw(self, h: int, w: int) -> tuple[int, int]:
        """Stored (H, W) of an image of h x w; ValueError when it is smaller than the crop."""
        if self.crop is not None:
            if h < self.crop or w < self.crop:
                raise ValueError(f"{h}x{w} is smaller than --crop {self.crop}")
            h = w = self.crop
        if self.size is not None:
            h = w = self.size
        return h, w


def _choice(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise LensError(f"{name} {value!r}: expected one of {', '.join(valid)}")


def apply(image: np.ndarray, t: Transform, out: np.ndarray) -> tuple[bool, bool]:
    """Transform ``image`` (C, H, W) into ``out`` (C, H', W', stored dtype).

    Returns (had_nonfinite, overflow). With ``nan="error"`` a non-finite image is not
    transformed (the pack fails anyway). ``overflow``: a finite value is too large for the
    stored dtype (float16 above 65504, float32 above 3.4e38).
    """
    if t.crop is None and t.size is None and t.normalize == "none":
        # The common case, cheapest first: cast, then check only the (smaller) result.
        with np.errstate(over="ignore", invalid="ignore"):
            np.copyto(out, image, casting="unsafe")
        if np.isfinite(out).all():
            return False, False
    x = image
    nonfinite = x.dtype.kind == "f" and not np.isfinite(x).all()
    if nonfinite:
        if t.nan == "error":
            return True, False
        x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    if t.crop is not None:
        x = _centre_crop(x, t.crop)
    if t.size is not None and x.shape[1:] != (t.size, t.size):
        x = _resize(x, t.size)
    if t.normalize == "minmax":
        x = _minmax(x)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported, not warned
        np.copyto(out, x, casting="unsafe")
    return nonfinite, not np.isfinite(out).all()


def _centre_crop(x: np.ndarray, n: int) -> np.ndarray:
    h, w = x.shape[1:]
    top, left = (h - n) // 2, (w - n) // 2
    return x[:, top : top + n, left : left + n]


def _resize(x: np.ndarray, n: int) -> np.ndarray:
    """Bilinear resize of each channel with Pillow, which widens the filter when shrinking
    (antialiasing), on float32 pixels ("F" mode) so nothing is quantised."""
    from PIL import Image

    bilinear = getattr(Image, "Resampling", Image).BILINEAR
    out = np.empty((x.shape[0], n, n), dtype=np.float32)
    for c in range(x.shape[0]):
        channel = Image.fromarray(np.ascontiguousarray(x[c], dtype=np.float32))
        out[c] = np.asarray(channel.resize((n, n), bilinear))
    return out


def _minmax(x: np.ndarray) -> np.ndarray:
    """Per-channel (x - min) / (max - min) in float64; a constant channel becomes zeros."""
    x = x.astype(np.float64)
    lo = x.min(axis=(1, 2), keepdims=True)
    span = x.max(axis=(1, 2), keepdims=True) - lo
    scale = np.divide(1.0, span, out=np.zeros_like(span), where=span > 0)
    return (x - lo) * scale
