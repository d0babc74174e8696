"""The packed HDF5 file: schema constants, a validating reader, and a small writer.

Schema version 2 (documented in docs/DATA_FORMAT.md; version 1 differs only in /hash):

    /images   (N, C, H, W) float16|float32 (little-endian), contiguous
    /labels   (N,) int64, class index, -1 for unlabeled images
    /split    (N,) int8, 0 = train, 1 = test
    /fold     (N,) int16, cross-validation fold of a train image, -1 for test or unfolded
    /source   (N,) utf-8 str, path of the source file relative to its SRC folder
    /hash     (N,) ascii str, XXH3-128 hex digest of the stored image (v1: BLAKE2b)
    attrs: schema_version, class_names (JSON list), n_folds, fold_seed, normalize,
           nan_policy, command, created (ISO 8601 UTC), lens_version
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lens.errors import LensError

SCHEMA_VERSION = 2  # what lens pack writes
READ_VERSIONS = (1, 2)  # what readers accept: 1 differs only in how /hash was computed
SPLITS = ("train", "test")
TRAIN, TEST = 0, 1
NO_FOLD = -1
UNLABELED = -1
REQUIRED_DATASETS = ("images", "labels", "split", "fold", "source", "hash")


@dataclass(frozen=True)
class PackedInfo:
    """What a reader needs to know about a packed file, validated on open."""

    path: Path
    n: int
    channels: int
    height: int
    width: int
    dtype: str
    class_names: tuple[str, ...]
    n_folds: int
    fold_seed: int | None
    normalize: str
    schema_version: int
    command: str
    created: str
    lens_version: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass(frozen=True)
class PackedIndex:
    """The per-image metadata (everything but the pixels), small enough to hold in memory."""

    labels: np.ndarray  # (N,) int64
    split: np.ndarray  # (N,) int8
    fold: np.ndarray  # (N,) int16

    @property
    def labeled(self) -> bool:
        return bool((self.labels >= 0).any())


def image_hash(image: np.ndarray) -> str:
    """Content hash of one stored image (its dtype, shape and bytes): XXH3, 128 bits.

    /hash finds identical images (the leakage check, duplicates), which needs no protection
    against forged collisions; XXH3 does that at memory speed, where a cryptographic hash
    (BLAKE2b: 65 us an image, BLAKE3: 23 us) was the largest cost of packing an image."""
    try:
        import xxhash
    except ImportError:
        raise LensError("the xxhash package is missing: pip install xxhash") from None
    h = xxhash.xxh3_128(f"{image.dtype.str}{image.shape}".encode())
    h.update(memoryview(np.ascontiguousarray(image).reshape(-1).view(np.uint8)))  # no copy
    return h.hexdigest()


def _open(path: Path):
    import h5py

    path = Path(path)
    if not path.exists():
        raise LensError(f"{path}: no such file")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise LensError(f"{path}: not a readable HDF5 file ({exc})") from None


def read_info(path: str | Path) -> PackedInfo:
    """Open and validate a packed file; raise LensError naming the file and the problem."""
    path = Path(path)
    with _open(path) as f:
        version = f.attrs.get("schema_version")
        if version is None:
            raise LensError(f"{path}: not a lens file (no schema_version attribute)")
        if int(version) not in READ_VERSIONS:
            raise LensError(
                f"{path}: schema version {int(version)} is not supported by this lens "
                f"(it reads versions {', '.join(map(str, READ_VERSIONS))}); "
                "repack with this version of `lens pack`"
            )
        missing = [name for name in REQUIRED_DATASETS if name not in f]
        if missing:
            raise LensError(f"{path}: missing dataset(s) {', '.join(missing)}")
        images = f["images"]
        if images.ndim != 4:
            raise LensError(f"{path}: /images has shape {images.shape}, expected (N, C, H, W)")
        n = images.shape[0]
        for name in REQUIRED_DATASETS[1:]:
            if f[name].shape != (n,):
                raise LensError(f"{path}: /{name} has shape {f[name].shape}, expected ({n},)")
        try:
            class_names = tuple(json.loads(f.attrs.get("class_names", "[]")))
        except json.JSONDecodeError:
            raise LensError(f"{path}: attribute class_names is not a JSON list") from None
        fold_seed = f.attrs.get("fold_seed", -1)
        return PackedInfo(
            path=path,
            n=n,
            channels=images.shape[1],
            height=images.shape[2],
            width=images.shape[3],
            dtype=str(images.dtype),
            class_names=class_names,
            n_folds=int(f.attrs.get("n_folds", 0)),
            fold_seed=None if int(fold_seed) < 0 else int(fold_seed),
            normalize=str(f.attrs.get("normalize", "none")),
            schema_version=int(version),
            command=str(f.attrs.get("command", "")),
            created=str(f.attrs.get("created", "")),
            lens_version=str(f.attrs.get("lens_version", "")),
        )


def read_index(path: str | Path) -> PackedIndex:
    with _open(Path(path)) as f:
        return PackedIndex(
            labels=f["labels"][:].astype(np.int64),
            split=f["split"][:].astype(np.int8),
            fold=f["fold"][:].astype(np.int16),
        )


def read_sources(path: str | Path) -> list[str]:
    with _open(Path(path)) as f:
        return [s.decode() if isinstance(s, bytes) else str(s) for s in f["source"][:]]


def read_images(path: str | Path, indices: np.ndarray | None = None) -> np.ndarray:
    """Images as float32 (n, C, H, W), in the order of ``indices`` (all when None).

    Reads in sorted index order (sequential file access) and restores the order asked for.
    """
    with _open(Path(path)) as f:
        ds = f["images"]
        if indices is None:
            return ds[:].astype(np.float32, copy=False)
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size == 0:
            return np.zeros((0, *ds.shape[1:]), dtype=np.float32)
        order = np.argsort(indices, kind="stable")
        sorted_idx = indices[order]
        unique, inverse = np.unique(sorted_idx, return_inverse=True)
        data = ds[unique].astype(np.float32, copy=False)  # h5py needs increasing indices
        out = np.empty((indices.size, *ds.shape[1:]), dtype=np.float32)
        out[order] = data[inverse]
        return out


def create_datasets(
    f,
    shape: tuple[int, int, int, int],
    dtype: str,
    labels: np.ndarray,
    split: np.ndarray,
    fold: np.ndarray,
    sources: list[str],
):
    """Create the schema's datasets in an open h5py file; return /images to be filled.

    /images is contiguous and allocated now (no fill): image i is one byte range, so a
    reader's random access costs one seek, and ``lens pack`` can write the pixels straight
    to the file at ``images.id.get_offset()``. /hash is written last (``write_hashes``).
    """
    import h5py

    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_layout(h5py.h5d.CONTIGUOUS)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
    # little-endian on disk whatever the machine, so raw writes of '<' arrays are exact
    images = f.create_dataset(
        "images", shape=shape, dtype=np.dtype(dtype).newbyteorder("<"), dcpl=dcpl
    )
    f.create_dataset("labels", data=np.asarray(labels, np.int64))
    f.create_dataset("split", data=np.asarray(split, np.int8))
    f.create_dataset("fold", data=np.asarray(fold, np.int16))
    f.create_dataset("source", data=sources, dtype=h5py.string_dtype())
    return images


def write_hashes(f, hashes: list[str]) -> None:
    import h5py

    f.create_dataset("hash", data=hashes, dtype=h5py.string_dtype())


def write_attrs(
    f,
    class_names: list[str] | tuple[str, ...],
    *,
    n_folds: int,
    fold_seed: int,
    normalize: str,
    nan_policy: str,
    command: str,
    **extra: int | str,
) -> None:
    """The schema's attributes, plus optional ``extra`` ones (readers must not require them)."""
    import datetime

    from lens import __version__

    f.attrs.update(
        schema_version=SCHEMA_VERSION,
        class_names=json.dumps(list(class_names)),
        n_folds=n_folds,
        fold_seed=fold_seed,
        normalize=normalize,
        nan_policy=nan_policy,
        command=command,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        lens_version=__version__,
        **extra,
    )


def write_packed(
    path: str | Path,
    images: np.ndarray,
    labels: np.ndarray,
    class_names: list[str] | tuple[str, ...],
    *,
    split: np.ndarray | None = None,
    fold: np.ndarray | None = None,
    sources: list[str] | None = None,
    n_folds: int = 0,
    fold_seed: int = -1,
    normalize: str = "none",
    nan_policy: str = "error",
    command: str = "",
) -> None:
    """Write a whole in-memory dataset at once (tests, small tools); atomic.

    ``lens pack`` streams large datasets through the same layout (lens.data.pack).
    """
    import h5py

    from lens.atomic import atomic_path

    n = images.shape[0]
    split = np.zeros(n, np.int8) if split is None else np.asarray(split, np.int8)
    fold = np.full(n, NO_FOLD, np.int16) if fold is None else np.asarray(fold, np.int16)
    sources = sources or [f"{i}.npy" for i in range(n)]
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        ds = create_datasets(f, images.shape, images.dtype, labels, split, fold, sources)
        ds[...] = images
        write_hashes(f, [image_hash(im) for im in images])
        write_attrs(
            f,
            class_names,
            n_folds=n_folds,
            fold_seed=fold_seed,
            normalize=normalize,
            nan_policy=nan_policy,
            command=command,
        )
