"""Images grouped by class, from a folder of .npy files or a packed HDF5 file.

A folder may have any layout: every visible ``.npy`` below it belongs to the group named
after the folder that holds it (``dataset/train/no/1.npy`` and ``dataset/val/no/7.npy``
are both ``no``; a flat folder is one group named after itself). A packed file groups by
its class names (``unlabeled`` for label −1), all splits together.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lens.errors import LensError
from lens.stats.measures import as_batch

HDF5_SUFFIXES = (".h5", ".hdf5")
UNLABELED = "unlabeled"


@dataclass
class Catalog:
    """What a source holds: group name → items (file paths, or indices into a packed file)."""

    path: Path
    kind: str  # "folder" or "packed"
    groups: dict[str, list] = field(default_factory=dict)

    def sample(self, group: str, limit: int, rng: np.random.Generator) -> list:
        """Up to ``limit`` items of ``group`` at random (all when limit <= 0), in stored order."""
        items = self.groups[group]
        if limit <= 0 or len(items) <= limit:
            return list(items)
        chosen = np.sort(rng.choice(len(items), size=limit, replace=False))
        return [items[i] for i in chosen]

    def read(self, items: list) -> np.ndarray:
        """(n, H, W) float64 images, each min-max normalised (channels averaged)."""
        if not items:
            return np.zeros((0, 1, 1))
        if self.kind == "packed":
            from lens.data.h5file import read_images

            return as_batch(read_images(self.path, np.asarray(items, dtype=np.int64)))
        images = [_read_npy(p) for p in items]
        shape = images[0].shape
        odd = [p for p, im in zip(items, images, strict=True) if im.shape != shape]
        if odd:
            raise LensError(f"{odd[0]}: size differs from {items[0]} {shape} "
                            f"({len(odd)} file(s) of another size)")  # fmt: skip
        return as_batch(np.stack(images))


def open_catalog(path: str | os.PathLike[str]) -> Catalog:
    path = Path(path)
    if not path.exists():
        raise LensError(f"{path}: no such file or folder")
    if path.is_file():
        if path.suffix.lower() not in HDF5_SUFFIXES:
            raise LensError(f"{path}: expected a folder of .npy files or a packed .h5 file")
        return _packed_catalog(path)
    return _folder_catalog(path)


def _folder_catalog(root: Path) -> Catalog:
    groups: dict[str, list] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        names = sorted((f for f in files if f.endswith(".npy") and not f.startswith(".")),
                       key=_natural_key)  # fmt: skip
        if names:
            group = Path(folder).name
            groups.setdefault(group, []).extend(Path(folder) / f for f in names)
    if not groups:
        raise LensError(f"{root}: no .npy images in this folder or below it")
    return Catalog(root, "folder", dict(sorted(groups.items())))


def _packed_catalog(path: Path) -> Catalog:
    from lens.data.h5file import read_index, read_info

    info = read_info(path)
    labels = read_index(path).labels
    groups: dict[str, list] = {}
    for label in np.unique(labels):
        if label < 0:
            name = UNLABELED
        elif label < len(info.class_names):
            name = info.class_names[label]
        else:
            raise LensError(f"{path}: label {label} has no class name")
        groups[name] = np.flatnonzero(labels == label).tolist()
    if not groups:
        raise LensError(f"{path}: holds no images")
    return Catalog(path, "packed", groups)


def _natural_key(name: str) -> tuple[int, int | str]:
    stem = name[: -len(".npy")]
    return (0, int(stem)) if stem.isdigit() else (1, stem)


def _read_npy(path: Path) -> np.ndarray:
    try:
        image = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise LensError(f"{path}: not a readable .npy image ({exc})") from None
    if image.ndim == 3:
        image = image.mean(axis=0)  # (C, H, W): channels averaged, as in as_batch
    if image.ndim != 2:
        raise LensError(f"{path}: shape {image.shape}, expected (H, W) or (C, H, W)")
    if not np.isfinite(image).all():
        raise LensError(f"{path}: contains NaN or infinite values; pack it with a NaN policy")
    return image

