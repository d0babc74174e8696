"""A PNG grid of random images: one row per (set, group), written atomically."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from lens.atomic import write_bytes
from lens.errors import LensError
from lens.stats.load import Catalog


def write_montage(
    path: str | Path,
    sets: list[tuple[str, Catalog]],
    per_group: int = 6,
    seed: int = 0,
    dpi: int = 80,
) -> None:
    """Rows of ``per_group`` random images of every group of every (label, catalog) set.

    Images are drawn with row 0 at the bottom (``origin="lower"``: y grows upwards, as in
    the simulator's coordinates) on a fixed [0, 1] grey scale.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise LensError(f"{path}: the montage is a PNG file; name it <something>.png")
    rng = np.random.default_rng(seed)
    rows = []
    for label, catalog in sets:
        for group in catalog.groups:
            rows.append((f"{label}: {group}", catalog.read(catalog.sample(group, per_group, rng))))
    n_cols = max(len(images) for _, images in rows)
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(1.6 * n_cols, 1.7 * len(rows)),
                             squeeze=False)  # fmt: skip
    for r, (title, images) in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(images):
                ax.imshow(images[c], origin="lower", cmap="gray", vmin=0.0, vmax=1.0)
            else:
                ax.axis("off")
        axes[r, 0].set_ylabel(title, fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(path, buffer.getvalue())
