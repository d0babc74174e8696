"""The image statistics used to compare simulated and real lensing images.

Definitions (each image min-max normalised to [0, 1] first; n × m pixels, centre
c = ((n-1)/2, (m-1)/2); x = column index, y = row index):

- radial profile: mean pixel value in integer-radius bins, bin = floor(distance to c);
- ring radius: the bin where the profile peaks;
- ring FWHM: (largest − smallest bin whose profile exceeds half the peak) + 1;
- background mean / std: over the pixels of the four 15 × 15 corner patches together;
- mean pixel; fraction of pixels > 0.5;
- light moments about c with weights w = img · (img > 0.2): mxx = Σw(x−cx)², myy, mxy;
  light ellipticity = hypot(mxx − myy, 2 mxy) / (mxx + myy);
  horizontal elongation = (mxx − myy) / (mxx + myy).

``batch_stats`` computes all of them for (N, H, W) at once; ``image_stats`` for one image.
"""

from __future__ import annotations

import numpy as np

STAT_NAMES: tuple[str, ...] = (
    "ring_radius",
    "ring_fwhm",
    "background_mean",
    "background_std",
    "mean_pixel",
    "bright_fraction",
    "light_ellipticity",
    "horizontal_elongation",
)
STAT_LABELS: dict[str, str] = {
    "ring_radius": "ring radius (px)",
    "ring_fwhm": "ring FWHM (px)",
    "background_mean": "background mean",
    "background_std": "background std",
    "mean_pixel": "mean pixel",
    "bright_fraction": "fraction of pixels > 0.5",
    "light_ellipticity": "light ellipticity",
    "horizontal_elongation": "horizontal elongation",
}
CORNER = 15  # side of each background corner patch, pixels
BRIGHT = 0.5  # threshold of bright_fraction
LIGHT_THRESHOLD = 0.2  # pixels below it carry no weight in the light moments


def as_batch(images: np.ndarray) -> np.ndarray:
    """(N, H, W) float64, each image min-max normalised; accepts (H,W), (N,H,W), (N,C,H,W).

    Channels are averaged (the DeepLense sets are single-channel). A constant image
    becomes all zeros.
    """
    a = np.asarray(images, dtype=np.float64)
    if a.ndim == 2:
        a = a[None]
    elif a.ndim == 4:
        a = a.mean(axis=1)
    elif a.ndim != 3:
        raise ValueError(f"expected (H, W), (N, H, W) or (N, C, H, W) images, got {a.shape}")
    lo = a.min(axis=(1, 2), keepdims=True)
    span = a.max(axis=(1, 2), keepdims=True) - lo
    return np.divide(a - lo, span, out=np.zeros_like(a), where=span > 0)


def radius_bins(height: int, width: int) -> np.ndarray:
    """(H, W) integer radius bin of every pixel: floor of its distance to the centre."""
    y, x = np.indices((height, width), dtype=np.float64)
    return np.floor(np.hypot(x - (width - 1) / 2, y - (height - 1) / 2)).astype(np.int64)


def radial_profiles(batch: np.ndarray) -> np.ndarray:
    """(N, R) mean pixel value per integer-radius bin (every bin 0..R-1 is populated)."""
    n, h, w = batch.shape
    bins = radius_bins(h, w).ravel()
    n_bins = int(bins.max()) + 1
    index = (np.arange(n)[:, None] * n_bins + bins[None, :]).ravel()
    sums = np.bincount(index, weights=batch.reshape(n, -1).ravel(), minlength=n * n_bins)
    counts = np.bincount(bins, minlength=n_bins)
    return sums.reshape(n, n_bins) / counts[None, :]


def ring_radius_and_fwhm(profiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    peak_bin = np.argmax(profiles, axis=1)
    peak = profiles[np.arange(len(profiles)), peak_bin]
    above = profiles > peak[:, None] / 2
    bins = np.arange(profiles.shape[1])
    largest = np.where(above, bins, -1).max(axis=1)
    smallest = np.where(above, bins, profiles.shape[1]).min(axis=1)
    return peak_bin.astype(np.float64), (largest - smallest + 1).astype(np.float64)


def corner_pixels(batch: np.ndarray, size: int = CORNER) -> np.ndarray:
    """(N, 4·size²) pixels of the four corner patches."""
    s = size
    corners = [batch[:, :s, :s], batch[:, :s, -s:], batch[:, -s:, :s], batch[:, -s:, -s:]]
    return np.concatenate([c.reshape(len(batch), -1) for c in corners], axis=1)


def light_moments(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mxx, myy, mxy) per image, weighted by img · (img > 0.2), about the image centre."""
    _, h, w = batch.shape
    weights = batch * (batch > LIGHT_THRESHOLD)
    dx = np.arange(w, dtype=np.float64) - (w - 1) / 2
    dy = np.arange(h, dtype=np.float64) - (h - 1) / 2
    mxx = np.einsum("nyx,x->n", weights, dx**2)
    myy = np.einsum("nyx,y->n", weights, dy**2)
    mxy = np.einsum("nyx,y,x->n", weights, dy, dx)
    return mxx, myy, mxy


def batch_stats(images: np.ndarray) -> dict[str, np.ndarray]:
    """Every statistic of STAT_NAMES for each image: {name: (N,) float64}."""
    batch = as_batch(images)
    radius, fwhm = ring_radius_and_fwhm(radial_profiles(batch))
    corners = corner_pixels(batch)
    mxx, myy, mxy = light_moments(batch)
    trace = mxx + myy
    with np.errstate(invalid="ignore", divide="ignore"):  # no light above 0.2 → NaN
        ellipticity = np.hypot(mxx - myy, 2 * mxy) / trace
        elongation = (mxx - myy) / trace
    return {
        "ring_radius": radius,
        "ring_fwhm": fwhm,
        "background_mean": corners.mean(axis=1),
        "background_std": corners.std(axis=1),
        "mean_pixel": batch.mean(axis=(1, 2)),
        "bright_fraction": (batch > BRIGHT).mean(axis=(1, 2)),
        "light_ellipticity": ellipticity,
        "horizontal_elongation": elongation,
    }


def image_stats(image: np.ndarray) -> dict[str, float]:
    """The statistics of one image (H, W) or (C, H, W)."""
    a = np.asarray(image)
    if a.ndim not in (2, 3):
        raise ValueError(f"expected one (H, W) or (C, H, W) image, got {a.shape}")
    return {k: float(v[0]) for k, v in batch_stats(a[None]).items()}
