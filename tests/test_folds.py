"""Stratified, deterministic fold assignment."""

from __future__ import annotations

import numpy as np
import pytest

from lens.data.folds import assign_folds, check_folds
from lens.data.h5file import NO_FOLD, TEST, TRAIN
from lens.errors import LensError


def dataset(counts: list[int], n_test: int = 7) -> tuple[np.ndarray, np.ndarray]:
    labels = np.concatenate([np.full(c, k) for k, c in enumerate(counts)] + [np.zeros(n_test)])
    split = np.concatenate([np.full(sum(counts), TRAIN), np.full(n_test, TEST)])
    return labels.astype(np.int64), split.astype(np.int8)


def test_every_class_is_spread_evenly_over_the_folds():
    labels, split = dataset([103, 41, 17, 5])
    fold = assign_folds(labels, split, 5, seed=0)
    assert (fold[split == TEST] == NO_FOLD).all()
    train = split == TRAIN
    assert set(fold[train].tolist()) == {0, 1, 2, 3, 4}
    for cls in range(4):
        per_fold = np.bincount(fold[train & (labels == cls)], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1, (cls, per_fold)
    totals = np.bincount(fold[train], minlength=5)
    assert totals.max() - totals.min() <= 1  # classes continue where the previous stopped
    # class proportions of each fold follow the whole training set's
    for k in range(5):
        share = np.bincount(labels[train & (fold == k)], minlength=4) / (fold == k).sum()
        overall = np.bincount(labels[train], minlength=4) / train.sum()
        assert np.abs(share - overall).max() < 0.05


def test_deterministic_and_seed_dependent():
    labels, split = dataset([50, 30])
    a = assign_folds(labels, split, 4, seed=3)
    assert np.array_equal(a, assign_folds(labels.copy(), split.copy(), 4, seed=3))
    b = assign_folds(labels, split, 4, seed=4)
    assert not np.array_equal(a, b)
    assert np.array_equal(np.sort(np.bincount(a[split == TRAIN])),
                          np.sort(np.bincount(b[split == TRAIN])))


def test_pinned_values():
    """The assignment is a documented pure function: pin it so a change is noticed."""
    labels = np.array([0, 0, 0, 0, 1, 1, 1, -1, -1, 0])
    split = np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 1])
    fold = assign_folds(labels, split, 2, seed=0)
    assert fold.dtype == np.int16
    # unlabeled images (-1) form their own group, dealt first
    assert (fold[split == TRAIN] >= 0).all() and fold[-1] == NO_FOLD
    assert fold.tolist() == [0, 0, 1, 1, 0, 1, 0, 1, 0, -1]


def test_check_folds():
    labels, split = dataset([10, 3])
    check_folds(labels, split, 3, ("a", "b"))
    with pytest.raises(LensError, match="at least 2 folds"):
        check_folds(labels, split, 1, ("a", "b"))
    with pytest.raises(LensError, match=r"(?s)smallest class.*b: 3 training image"):
        check_folds(labels, split, 4, ("a", "b"))
    with pytest.raises(LensError, match="no training images"):
        check_folds(labels, np.full_like(split, TEST), 2, ("a", "b"))
