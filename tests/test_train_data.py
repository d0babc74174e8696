"""lens.train.data: which images a task uses, the epoch order, sharding, batch sources.

Also home of ``make_packed``: small synthetic packed files with a learnable signal, used by
the other training tests (``from test_train_data import make_packed``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lens.data.h5file import read_index, read_info, write_packed
from lens.errors import LensError
from lens.train import data


def make_packed(path: Path, n: int = 240, *, classes: int = 2, size: int = 32,
                n_folds: int = 3, n_test: int = 40, seed: int = 0,
                class_probs: list[float] | None = None, channels: int = 1,
                unlabeled: bool = False) -> Path:
    """Noise images; class c >= 1 adds a ring (class 2: an arc) of random radius.

    Folds are stratified by class; the last ``n_test`` images are the test split.
    """
    rng = np.random.default_rng(seed)
    labels = rng.choice(classes, size=n, p=class_probs)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    r, theta = np.hypot(yy, xx), np.arctan2(yy, xx)
    images = rng.normal(0.0, 0.5, (n, channels, size, size)).astype(np.float32)
    for i in np.flatnonzero(labels >= 1):
        ring = np.exp(-(((r - rng.uniform(0.2, 0.35) * size) / 1.5) ** 2))
        if labels[i] == 2:
            ring = ring * (np.cos(theta - rng.uniform(0, 2 * np.pi)) > 0.2)
        images[i] += 0.6 * ring
    split = np.zeros(n, np.int8)
    split[n - n_test:] = 1
    fold = np.full(n, -1, np.int16)
    if n_folds:
        for c in range(classes):
            members = np.flatnonzero((labels == c) & (split == 0))
            fold[rng.permutation(members)] = np.arange(members.size) % n_folds
    write_packed(path, images, np.full(n, -1) if unlabeled else labels,
                 [f"class{c}" for c in range(classes)], split=split, fold=fold,
                 n_folds=n_folds)
    return path


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> Path:
    return make_packed(tmp_path_factory.mktemp("data") / "d.h5")


def test_select_labeled_is_disjoint_and_complete(packed):
    info, index = read_info(packed), read_index(packed)
    for k in range(info.n_folds):
        sel = data.select_labeled(info, index, k)
        assert set(sel.train.index).isdisjoint(sel.val.index)
        assert set(sel.test.index).isdisjoint(set(sel.train.index) | set(sel.val.index))
        assert len(sel.train) + len(sel.val) + len(sel.test) == info.n
        assert (index.fold[sel.val.index] == k).all() and (index.split[sel.test.index] == 1).all()
        np.testing.assert_array_equal(sel.val.labels, index.labels[sel.val.index])


def test_select_errors(tmp_path, packed):
    info, index = read_info(packed), read_index(packed)
    with pytest.raises(LensError, match="out of range.*3 folds"):
        data.select_labeled(info, index, 3)
    with pytest.raises(LensError, match="out of range"):
        data.select_labeled(info, index, -1)
    nofolds = make_packed(tmp_path / "nf.h5", n_folds=0)
    with pytest.raises(LensError, match="no cross-validation folds"):
        data.select_labeled(read_info(nofolds), read_index(nofolds), 0)
    unlabeled = make_packed(tmp_path / "u.h5", unlabeled=True)
    with pytest.raises(LensError, match="unlabeled"):
        data.select_labeled(read_info(unlabeled), read_index(unlabeled), 0)


def test_select_unlabeled(tmp_path, packed):
    info, index = read_info(packed), read_index(packed)
    sel = data.select_unlabeled(info, index, 1)  # folds: the held-out fold stays unseen
    assert not set(sel.train.index) & set(np.flatnonzero(index.fold == 1))
    assert (index.split[sel.train.index] == 0).all() and (sel.train.labels == -1).all()
    flat = make_packed(tmp_path / "flat.h5", n_folds=0, unlabeled=True)
    sel = data.select_unlabeled(read_info(flat), read_index(flat), 0)
    assert len(sel.train) == read_info(flat).n  # no folds: every image


def test_epoch_order_is_a_seeded_permutation():
    a = data.epoch_order(100, 0, 0, 0)
    assert sorted(a) == list(range(100))
    np.testing.assert_array_equal(a, data.epoch_order(100, 0, 0, 0))
    assert not np.array_equal(a, data.epoch_order(100, 0, 0, 1))  # a new order every epoch
    assert not np.array_equal(a, data.epoch_order(100, 0, 1, 0))  # and every fold
    blocked = data.epoch_order(100, 0, 0, 0, block=10)
    assert sorted(blocked) == list(range(100))
    # each run of 10 comes from one window of 10 consecutive positions
    assert all(len(set(chunk // 10)) == 1 for chunk in blocked.reshape(10, 10))


def test_balanced_sampling_evens_out_classes():
    labels = np.array([0] * 90 + [1] * 10)
    w = data.balanced_weights(labels, 2)
    assert w[labels].mean() == pytest.approx(1.0)
    order = data.epoch_order(100, 0, 0, 0, weights=w[labels])
    assert 0.35 < (labels[order] == 1).mean() < 0.65


def test_shard_splits_each_global_batch_between_ranks():
    order = data.epoch_order(50, 0, 0, 0)
    whole = data.shard(order, 8, 1, 0)
    assert whole.shape == (6, 8)  # last partial batch dropped
    r0, r1 = data.shard(order, 8, 2, 0), data.shard(order, 8, 2, 1)
    assert r0.shape == r1.shape == (6, 4)
    np.testing.assert_array_equal(np.concatenate([r0, r1], axis=1), whole)
    with pytest.raises(LensError, match="not divisible"):
        data.shard(order, 9, 2, 0)
    with pytest.raises(LensError, match="larger than the 50"):
        data.shard(order, 64, 1, 0)


def test_eval_plan_covers_every_image_once():
    plans = [np.concatenate(data.eval_plan(11, 3, 3, r)) for r in range(3)]
    assert sorted(np.concatenate(plans)) == list(range(11))


def test_memory_and_stream_sources_agree(packed):
    info, index = read_info(packed), read_index(packed)
    sel = data.select_labeled(info, index, 0)
    plan = data.shard(data.epoch_order(len(sel.train), 0, 0, 0, block=32), 16, 1, 0)
    cpu = torch.device("cpu")
    mem = data.make_source("memory", info, sel.train, cpu, cpu, 0)
    stream = data.make_source("stream", info, sel.train, cpu, cpu, 2)
    for (xm, ym), (xs, ys) in zip(mem.batches(plan), stream.batches(plan), strict=True):
        torch.testing.assert_close(xm, xs, rtol=0, atol=0)
        torch.testing.assert_close(ym, ys, rtol=0, atol=0)


def test_choose_mode_by_size(packed):
    info = read_info(packed)
    assert data.choose_mode("auto", info, 100, 1.0) == "memory"
    assert data.choose_mode("auto", info, 100, 1e-6) == "stream"
    assert data.choose_mode("stream", info, 1, 100.0) == "stream"
    assert data.choose_storage_device("auto", torch.device("cpu"), 10).type == "cpu"
