"""Which images a task uses, in what order, and how batches reach the device.

Selection (pure, from the packed file's index):
    classify / finetune: train = train split with fold != K, val = fold K, test = test split
    pretrain: train = train split with fold != K (the held-out fold stays unseen), or every
              image when the file has no folds; labels are never read

Order: every epoch's order is a function of (seed, fold, epoch) alone, the same on every
rank; each global batch is split into one contiguous slice per rank (DistributedSampler's
disjoint shards, with the global batch kept identical to a one-process run). A resumed
task rebuilds the same order and skips the batches already done.

Two ways to feed batches, same interface (``batches(plan)`` -> (x, y) on the device):
    MemorySource: the subset's images as one tensor (on the GPU when it fits); a batch is
                  one index operation, no DataLoader, no host round trip.
    StreamSource: for data larger than memory; a DataLoader whose workers open the HDF5
                  file lazily and read each batch in file order (blocks of nearby images).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from lens.data.h5file import TEST, TRAIN, PackedIndex, PackedInfo, read_images
from lens.errors import LensError

# Streaming: batches are drawn from shuffled windows of this many global batches.
STREAM_BLOCK_BATCHES = 8


@dataclass(frozen=True)
class Subset:
    """Images of the packed file used in one role (sorted global indices and labels)."""

    name: str
    index: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.index.size)


@dataclass(frozen=True)
class Selection:
    train: Subset
    val: Subset
    test: Subset


def _subset(name: str, mask: np.ndarray, labels: np.ndarray) -> Subset:
    index = np.flatnonzero(mask).astype(np.int64)
    return Subset(name, index, labels[index])


def check_fold(info: PackedInfo, fold: int) -> None:
    if info.n_folds < 2:
        raise LensError(
            f"{info.path}: the file has no cross-validation folds (n_folds={info.n_folds}); "
            f"repack it with folds (e.g. `lens pack --folds 5`) to train a classifier"
        )
    if not 0 <= fold < info.n_folds:
        raise LensError(
            f"--fold {fold} is out of range: {info.path} has {info.n_folds} folds "
            f"(0..{info.n_folds - 1})"
        )


def select_labeled(info: PackedInfo, index: PackedIndex, fold: int) -> Selection:
    """classify / finetune: train on folds != K, validate on fold K, test on the test split."""
    check_fold(info, fold)
    if info.num_classes < 2:
        raise LensError(f"{info.path}: needs at least 2 classes, has {list(info.class_names)}")
    in_train = index.split == TRAIN
    sel = Selection(
        train=_subset("train", in_train & (index.fold != fold), index.labels),
        val=_subset("val", in_train & (index.fold == fold), index.labels),
        test=_subset("test", index.split == TEST, index.labels),
    )
    for subset in (sel.train, sel.val):
        unlabeled = int((subset.labels < 0).sum())
        if unlabeled:
            raise LensError(
                f"{info.path}: {unlabeled} of {len(subset)} {subset.name} images of fold "
                f"{fold} are unlabeled; classification needs labels"
            )
        if len(subset) == 0:
            raise LensError(f"{info.path}: fold {fold} leaves no {subset.name} images")
        if int(subset.labels.max()) >= info.num_classes:
            raise LensError(f"{info.path}: labels exceed the {info.num_classes} class names")
    return sel


def select_unlabeled(info: PackedInfo, index: PackedIndex, fold: int) -> Selection:
    """pretrain: train-split images outside fold K, or all images if the file has no folds."""
    empty = _subset("val", np.zeros(info.n, bool), index.labels)
    if info.n_folds >= 2:
        check_fold(info, fold)
        mask = (index.split == TRAIN) & (index.fold != fold)
    else:
        if fold < 0:
            raise LensError(f"--fold must be >= 0, got {fold}")
        mask = np.ones(info.n, bool)
    train = _subset("train", mask, np.full(info.n, -1, np.int64))  # labels never read
    if len(train) == 0:
        raise LensError(f"{info.path}: no images to pretrain on for fold {fold}")
    return Selection(train=train, val=empty, test=Subset("test", empty.index, empty.labels))


# ---------------------------------------------------------------------------------------
# Epoch order and sharding


def _rng(seed: int, fold: int, epoch: int, purpose: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, fold + 1, epoch,
                                                                       purpose])))


def epoch_order(n: int, seed: int, fold: int, epoch: int, *, weights: np.ndarray | None = None,
                block: int = 0) -> np.ndarray:
    """Positions 0..n-1 in this epoch's training order, identical on every rank.

    ``weights`` (per position) draws n positions with replacement with those probabilities
    (balanced sampling); ``block`` > 0 shuffles windows of ``block`` consecutive positions
    (and positions inside each window) so a streaming reader touches nearby file regions.
    """
    rng = _rng(seed, fold, epoch, 0)
    if weights is not None:
        return rng.choice(n, size=n, replace=True, p=weights / weights.sum())
    if block <= 0 or block >= n:
        return rng.permutation(n)
    starts = rng.permutation(np.arange(0, n, block))
    return np.concatenate([rng.permutation(np.arange(s, min(s + block, n))) for s in starts])


def steps_per_epoch(n: int, global_batch: int) -> int:
    """Full global batches only (the last partial batch is dropped; the order changes
    every epoch, so every image is still used)."""
    if n < global_batch:
        raise LensError(
            f"batch_size {global_batch} is larger than the {n} training images; "
            f"lower it with --set batch_size=..."
        )
    return n // global_batch


def shard(order: np.ndarray, global_batch: int, world: int, rank: int) -> np.ndarray:
    """(steps, global_batch / world) positions of this rank: a disjoint slice of each batch."""
    if global_batch % world:
        raise LensError(f"batch_size {global_batch} is not divisible by {world} ranks")
    steps = steps_per_epoch(order.size, global_batch)
    per_rank = global_batch // world
    return order[: steps * global_batch].reshape(steps, world, per_rank)[:, rank].copy()


def balanced_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-class weights n / (C * n_c): the mean weight over the training images is 1."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    return np.where(counts > 0, labels.size / (num_classes * np.maximum(counts, 1)), 0.0)


# ---------------------------------------------------------------------------------------
# Batch sources


def subset_bytes(info: PackedInfo, n: int) -> int:
    return n * info.channels * info.height * info.width * 4  # held as float32


class MemorySource:
    """A subset's images and labels as tensors on ``storage`` (the GPU when they fit);
    batches are index operations, no DataLoader, no host round trip when on the GPU."""

    def __init__(self, info: PackedInfo, subset: Subset, storage: torch.device,
                 device: torch.device):
        self.device = device
        self.n = len(subset)
        self.images = torch.from_numpy(read_images(info.path, subset.index)).to(storage)
        self.labels = torch.from_numpy(subset.labels).to(storage)

    def batches(self, plan: np.ndarray | list[np.ndarray]
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if isinstance(plan, np.ndarray):  # one copy of the whole epoch's plan
            rows = list(torch.from_numpy(plan).to(self.images.device))
        else:
            rows = [torch.from_numpy(r).to(self.images.device) for r in plan]
        for row in rows:
            yield (self.images[row].to(self.device, non_blocking=True),
                   self.labels[row].to(self.device, non_blocking=True))


class _BatchReader(torch.utils.data.Dataset):
    """Item i = batch i of a plan, read from HDF5; the file is opened lazily per worker
    (an h5py handle must never cross a fork)."""

    def __init__(self, path: str, index: np.ndarray, labels: np.ndarray,
                 plan: np.ndarray | list[np.ndarray]):
        self.path, self.index, self.labels, self.plan = path, index, labels, plan
        self._file = None

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._file is None:
            import h5py

            self._file = h5py.File(self.path, "r")
        pos = self.plan[i]
        rows = self.index[pos]
        order = np.argsort(rows, kind="stable")
        unique, inverse = np.unique(rows[order], return_inverse=True)
        data = self._file["images"][unique].astype(np.float32, copy=False)
        out = np.empty((rows.size, *data.shape[1:]), np.float32)
        out[order] = data[inverse]
        return torch.from_numpy(out), torch.from_numpy(self.labels[pos])


class StreamSource:
    """Batches read from the HDF5 file by DataLoader workers, then moved to the device."""

    def __init__(self, info: PackedInfo, subset: Subset, device: torch.device, num_workers: int):
        self.path, self.subset, self.device = str(info.path), subset, device
        self.num_workers = num_workers
        self.n = len(subset)

    def batches(self, plan: np.ndarray | list[np.ndarray]
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        reader = _BatchReader(self.path, self.subset.index, self.subset.labels, plan)
        loader = torch.utils.data.DataLoader(
            reader, batch_size=None, shuffle=False, num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=4 if self.num_workers else None,
        )
        for x, y in loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


def choose_mode(mode: str, info: PackedInfo, n_images: int, memory_limit_gb: float) -> str:
    """'memory' unless the images of the task exceed ``memory_limit_gb`` (or mode says)."""
    if mode != "auto":
        return mode
    return "memory" if subset_bytes(info, n_images) <= memory_limit_gb * 1e9 else "stream"


def choose_storage_device(on_device: bool | str, device: torch.device, nbytes: int) -> torch.device:
    """Where in-memory images live: on the GPU when asked, or (auto) when they take less
    than 40% of its free memory, leaving room for activations; else in host memory."""
    if device.type != "cuda" or on_device is False:
        return torch.device("cpu")
    if on_device is True:
        return device
    free, _ = torch.cuda.mem_get_info(device)
    return device if nbytes < 0.4 * free else torch.device("cpu")


def make_source(mode: str, info: PackedInfo, subset: Subset, device: torch.device,
                storage: torch.device, num_workers: int) -> MemorySource | StreamSource:
    if mode == "stream":
        return StreamSource(info, subset, device, num_workers)
    return MemorySource(info, subset, storage, device)


def eval_plan(n: int, batch: int, world: int, rank: int) -> list[np.ndarray]:
    """This rank's share of a held-out subset (positions rank, rank+world, ...), batched."""
    mine = np.arange(rank, n, world)
    return [mine[i:i + batch] for i in range(0, mine.size, batch)]

