"""The top K: the images the ensemble finds most lens-like, as a list and as one picture.

Which class is ranked: ``--class NAME``; otherwise the lens class of a lens-finding run
(the one class named lens, lenses or lensed, any case), otherwise the second class of a
binary run (the positive class of the metrics), otherwise every class (one row each).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from lens.errors import LensError

_LENS = re.compile(r"^lens(es|ed)?$", re.IGNORECASE)


def ranked_classes(class_names: list[str], chosen: str | None = None) -> list[int]:
    if chosen is not None:
        if chosen not in class_names:
            raise LensError(f"--class {chosen}: not a class of the run; classes: "
                            f"{', '.join(class_names)}")
        return [class_names.index(chosen)]
    lens_like = [c for c, name in enumerate(class_names) if _LENS.match(name)]
    if len(lens_like) == 1:
        return lens_like
    return [1] if len(class_names) == 2 else list(range(len(class_names)))


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Rows of the k highest scores, highest first; ties go to the earlier row."""
    n = scores.size
    k = min(k, n)
    if k <= 0:
        return np.zeros(0, np.int64)
    if k < n:  # a partial sort, then every row tied with the k-th, in a stable order
        threshold = scores[np.argpartition(-scores, k - 1)[k - 1]]
        candidates = np.flatnonzero(scores >= threshold)
    else:
        candidates = np.arange(n)
    order = np.lexsort((candidates, -scores[candidates]))
    return candidates[order][:k].astype(np.int64)


def top_table(prob: np.ndarray, classes: list[int], class_names: list[str], k: int
              ) -> list[dict[str, Any]]:
    """Per ranked class, its k highest rows: {class, rank, row, p} (sources added later)."""
    out = []
    for c in classes:
        for rank, row in enumerate(top_k(prob[:, c], k), start=1):
            out.append({"class": class_names[c], "rank": rank, "row": int(row),
                        "p": float(prob[row, c])})
    return out


def render_top(top: list[dict[str, Any]]) -> str:
    """The top list as text lines (pure: golden-tested)."""
    lines = []
    for t in top:
        if t["rank"] == 1:
            lines.append(f"top {sum(1 for u in top if u['class'] == t['class'])} by "
                         f"P({t['class']}):")
        lines.append(f"  {t['rank']:>4}  {t['p']:.4f}  {t['source']}  (index {t['index']})")
    return "\n".join(lines) + "\n"


def tile_title(t: dict[str, Any], width: int = 22) -> str:
    """Two lines: rank and score, then the end of the source path (pure)."""
    source = t["source"]
    if len(source) > width:
        source = "…" + source[-(width - 1):]
    return f"#{t['rank']}  P({t['class']})={t['p']:.3f}\n{source}"


def _display(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """(C, H, W) -> what imshow shows: grey for one channel, RGB for three, else channel
    0; each image stretched to its own range (scores are compared, not brightness)."""
    if image.shape[0] == 3:
        x = image.transpose(1, 2, 0)
        cmap = None
    else:
        x, cmap = image[0], "gray"
    lo, hi = float(np.min(x)), float(np.max(x))
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x), cmap


def write_montage(path: str | Path, top: list[dict[str, Any]], images: np.ndarray,
                  columns: int = 8, dpi: int = 90) -> None:
    """One picture of the top images, in rank order, with their scores; one row block per
    class. ``images`` (n, C, H, W) are in the order of ``top``."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lens.atomic import write_bytes

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise LensError(f"{path}: the montage is a PNG file; name it <something>.png")
    if not top:
        raise LensError("no images to put in the montage")
    groups: dict[str, list[int]] = {}
    for i, t in enumerate(top):
        groups.setdefault(t["class"], []).append(i)
    cols = min(columns, max(len(g) for g in groups.values()))
    rows = [g[s:s + cols] for g in groups.values() for s in range(0, len(g), cols)]
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.9 * cols, 2.15 * len(rows)),
                             squeeze=False)
    for r, members in enumerate(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(members):
                ax.axis("off")
                continue
            i = members[c]
            shown, cmap = _display(images[i])
            ax.imshow(shown, origin="lower", cmap=cmap, vmin=0.0, vmax=1.0)
            ax.set_title(tile_title(top[i]), fontsize=6.5)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.08)
    plt.close(fig)
    if not path.parent.is_dir():
        raise LensError(f"{path.parent}: no such folder for the montage")
    write_bytes(path, buffer.getvalue())
