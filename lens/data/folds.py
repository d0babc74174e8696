"""Stratified cross-validation folds, assigned once at pack time so every task agrees.

Within each class (unlabeled images form one more group), the training images, in the
packed order (sorted by source path), are shuffled by a keyed hash of (seed, class, rank)
and dealt round-robin into the folds; each class starts where the previous one stopped, so
fold sizes differ by at most one overall and per class. The result depends only on
(labels, n_folds, seed): not on file-system order, numpy's random streams or the platform.
"""

from __future__ import annotations

import hashlib

import numpy as np

from lens.data.h5file import NO_FOLD, TRAIN, UNLABELED
from lens.errors import LensError


def check_folds(
    labels: np.ndarray, split: np.ndarray, n_folds: int, class_names: tuple[str, ...]
) -> None:
    """LensError unless every class has at least ``n_folds`` training images."""
    if n_folds < 2:
        raise LensError(f"--folds {n_folds}: cross-validation needs at least 2 folds")
    train = labels[split == TRAIN]
    if train.size == 0:
        raise LensError(f"--folds {n_folds}: there are no training images to split into folds")
    short = []
    for cls in np.unique(train):
        count = int((train == cls).sum())
        if count < n_folds:
            name = "unlabeled" if cls == UNLABELED else class_names[cls]
            short.append(f"{name}: {count} training image(s)")
    if short:
        raise LensError(
            f"--folds {n_folds}: more folds than the smallest class has training images\n  "
            + "\n  ".join(short)
        )


def assign_folds(labels: np.ndarray, split: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """(N,) int16: the fold of every training image, -1 for test images."""
    labels = np.asarray(labels, dtype=np.int64)
    split = np.asarray(split)
    fold = np.full(labels.shape, NO_FOLD, dtype=np.int16)
    train = np.flatnonzero(split == TRAIN)
    start = 0
    for cls in np.unique(labels[train]):
        members = train[labels[train] == cls]
        order = np.argsort(_keys(seed, int(cls), members.size), kind="stable")
        fold[members[order]] = (start + np.arange(members.size)) % n_folds
        start = (start + members.size) % n_folds
    return fold


def _keys(seed: int, cls: int, n: int) -> np.ndarray:
    """n pseudo-random 64-bit keys, a pure function of (seed, class, rank)."""
    prefix = f"{seed}:{cls}:".encode()
    return np.array(
        [
            int.from_bytes(hashlib.blake2b(prefix + str(j).encode(), digest_size=8).digest(), "big")
            for j in range(n)
        ],
        dtype=np.uint64,
    )
