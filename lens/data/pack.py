"""`lens pack`: stream image folders into one validated HDF5 file (docs/DATA_FORMAT.md).

1. discover  every file, its split and class, from the folder layout (lens.data.layouts)
2. check     the options, the folds, and the headers of the first files for the common shape
3. stream    blocks of files through worker processes (decode, transform, hash) into the
             single writer, in order, into a temporary sibling of OUT
4. finish    leakage check, /hash, attributes; rename onto OUT only if nothing failed

Each file is read once: a file that is unreadable or does not fit the common shape is found
while streaming, and the error names every such file.

Memory is bounded by a few blocks of about ``BLOCK_BYTES`` each, whatever the dataset size.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from lens import interrupts
from lens.data.blocks import DecodeJob, DecodeResult, Slots, decode, read_headers, warm
from lens.data.folds import assign_folds, check_folds
from lens.data.h5file import (
    NO_FOLD,
    TEST,
    TRAIN,
    create_datasets,
    write_attrs,
    write_hashes,
)
from lens.data.layouts import Discovery, LabelRules, discover
from lens.data.pool import Pool
from lens.data.problems import Problems
from lens.data.readers import Header
from lens.data.summary import count_rows
from lens.data.transforms import Transform
from lens.errors import LensError

BLOCK_BYTES = 8 << 20  # pixels decoded per job: big enough to amortise IPC, small in memory
MAX_BLOCK = 256
HEADER_BLOCK = 512  # files per header-reading job
SAMPLE = 64  # headers read up front to learn the common shape

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass(frozen=True)
class PackOptions:
    normalize: str = "none"
    nan: str = "error"
    size: int | None = None
    crop: int | None = None
    dtype: str = "float32"
    folds: int | None = None  # None: no folds (every /fold is -1)
    seed: int = 0
    workers: int = 1
    force: bool = False
    strict: bool = False
    labels: tuple[str, ...] = ()  # --label CLASS=REGEX, first match wins
    default_label: str | None = None

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> PackOptions:
        valid = {f.name: f.default for f in fields(cls)}
        unknown = sorted(set(values) - set(valid))
        if unknown:
            listed = ", ".join(f"{k} (default {v!r})" for k, v in valid.items())
            raise LensError(f"unknown pack option(s) {', '.join(unknown)}; valid: {listed}")
        return cls(**{k: tuple(v) if k == "labels" else v for k, v in values.items()})

    def transform(self) -> Transform:
        return Transform(self.normalize, self.nan, self.size, self.crop, self.dtype)

    def rules(self) -> LabelRules | None:
        if not self.labels and self.default_label is None:
            return None
        return LabelRules.parse(self.labels, self.default_label)


@dataclass(frozen=True)
class PackReport:
    """What was packed; ``lens.data.summary.render_pack`` prints it."""

    out: str
    shape: tuple[int, int, int]
    dtype: str
    class_names: tuple[str, ...]
    rows: tuple[dict[str, Any], ...]  # lens.data.summary.count_rows, ending with "total"
    n_folds: int
    seed: int
    layouts: tuple[str, ...]
    skipped: tuple[str, ...]  # non-image files under SRC
    nan_replaced: tuple[str, ...]  # sources whose NaN/Inf became 0
    leaks: tuple[tuple[str, str], ...]  # (train source, test source) with identical images
    duplicates: int  # images identical to an earlier image of the same split
    seconds: float = 0.0

    @property
    def n(self) -> int:
        return int(self.rows[-1]["total"])


def pack(
    srcs: Sequence[str | Path],
    out: str | Path,
    options: PackOptions,
    *,
    command: str = "",
    progress: Progress | None = None,
) -> PackReport:
    """Pack the images under ``srcs`` into ``out``; LensError (and no ``out``) on bad input."""
    start = time.perf_counter()
    out = Path(out)
    transform = options.transform()  # validates the choices
    _check_out(out, options.force)
    if options.folds is not None and options.folds < 2:
        raise LensError(f"--folds {options.folds}: cross-validation needs at least 2 folds")
    progress = progress or (lambda stage, done, total: None)
    import h5py

    from lens.atomic import atomic_path

    with interrupts.remember_sigint(), Pool(options.workers, warm=warm) as pool:
        found = discover(srcs, options.rules())
        labels, split = found.labels(), found.splits()
        fold = np.full(labels.shape, NO_FOLD, dtype=np.int16)
        if options.folds is not None:
            check_folds(labels, split, options.folds, found.class_names)
            fold = assign_folds(labels, split, options.folds, options.seed)
        shape = _expected_shape(found, transform, pool, progress)
        with atomic_path(out) as tmp, h5py.File(tmp, "w") as f:
            images = create_datasets(
                f,
                (len(labels), *shape),
                transform.dtype,
                labels,
                split,
                fold,
                [e.source for e in found.entries],
            )
            offset = images.id.get_offset()
            hashes, nan_replaced = _stream(tmp, offset, found, shape, transform, pool, progress)
            leaks, duplicates = _leaks(hashes, split, found)
            if leaks and options.strict:
                raise LensError(
                    _leak_message(leaks) + "\n(--strict: remove them from one split, "
                    "or pack without --strict to keep them)"
                )
            write_hashes(f, hashes)
            write_attrs(
                f,
                found.class_names,
                n_folds=options.folds or 0,
                fold_seed=options.seed if options.folds else -1,
                normalize=options.normalize,
                nan_policy=options.nan,
                command=command,
                size=options.size or 0,
                crop=options.crop or 0,
                nan_replaced=len(nan_replaced),
            )
            interrupts.check()  # a Ctrl-C Python swallowed: still no OUT
    return PackReport(
        out=str(out),
        shape=shape,
        dtype=transform.dtype,
        class_names=found.class_names,
        rows=tuple(count_rows(labels, split, fold, found.class_names, options.folds or 0)),
        n_folds=options.folds or 0,
        seed=options.seed,
        layouts=found.layouts,
        skipped=found.skipped,
        nan_replaced=tuple(nan_replaced),
        leaks=tuple(leaks),
        duplicates=duplicates,
        seconds=time.perf_counter() - start,
    )


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_file():
        raise LensError(f"{out}: exists and is not a file (the output file comes last)")
    if out.exists() and not force:
        raise LensError(f"{out}: already exists (use --force to replace it)")
    if not out.parent.is_dir():
        raise LensError(f"{out.parent}: no such folder for the output file")


def _ranges(n: int, block: int) -> Iterator[tuple[int, int]]:
    for s in range(0, n, block):
        yield s, min(n, s + block)


def _expected_shape(
    found: Discovery, t: Transform, pool: Pool, progress: Progress
) -> tuple[int, int, int]:
    """The stored (C, H, W), from the headers of the first ``SAMPLE`` files, so that every
    file is read only once. The stream then checks each image against it; when some do not
    fit, ``_shape_problems`` names them exactly as a full header pass would. Only when no
    sampled file is readable is every header read first."""
    paths = [e.path for e in found.entries]
    shapes = np.array([h.shape if isinstance(h, Header) else (-1, -1, -1)
                       for h in read_headers(tuple(paths[:SAMPLE]))], dtype=np.int64)
    if (shapes[:, 0] > 0).any():
        return _shape_problems(paths[:SAMPLE], shapes, t, Problems())
    return _check_headers(found, t, pool, progress)


def _check_headers(
    found: Discovery, t: Transform, pool: Pool, progress: Progress
) -> tuple[int, int, int]:
    """Read every header; LensError naming each file that is unreadable or does not fit.
    Returns the stored (C, H, W)."""
    paths = [e.path for e in found.entries]
    n = len(paths)
    shapes = np.zeros((n, 3), dtype=np.int64)
    problems = Problems()
    jobs = (tuple(paths[s:e]) for s, e in _ranges(n, HEADER_BLOCK))
    done = 0
    for headers in pool.imap(read_headers, jobs, depth=2 * pool.workers):
        for header in headers:
            if isinstance(header, Header):
                shapes[done] = header.shape
            else:
                problems.add("unreadable, corrupt or not an image", f"{paths[done]}: {header}")
                shapes[done] = -1
            done += 1
        progress("check", done, n)
    shape = _shape_problems(paths, shapes, t, problems)
    problems.raise_if_any()
    return shape


def _shape_problems(
    paths: Sequence[str], shapes: np.ndarray, t: Transform, problems: Problems
) -> tuple[int, int, int]:
    """The stored (C, H, W) most source images (C, H, W) lead to, adding a problem for each
    image that does not fit; rows of -1 are unreadable files (already reported)."""
    ok = shapes[:, 0] > 0
    if not ok.any():
        problems.raise_if_any()
    channels = _most_common(shapes[ok, 0])
    for i in np.flatnonzero(ok & (shapes[:, 0] != channels)):
        problems.add(
            f"wrong channel count (most images have {channels})",
            f"{paths[i]}: {shapes[i, 0]} channel(s)",
        )
    sized = ok & (shapes[:, 0] == channels)
    if t.size is None and t.crop is None:
        hw = _most_common_pair(shapes[sized, 1:])
        for i in np.flatnonzero(sized & np.any(shapes[:, 1:] != hw, axis=1)):
            problems.add(
                f"image size differs (most images are {hw[0]}x{hw[1]}; "
                "use --size N or --crop N for a common size)",
                f"{paths[i]}: {shapes[i, 1]}x{shapes[i, 2]}",
            )
        out_hw = (int(hw[0]), int(hw[1]))
    else:
        side = t.size if t.size is not None else t.crop
        assert side is not None
        out_hw = (side, side)
        if t.crop is not None:
            for i in np.flatnonzero(sized & np.any(shapes[:, 1:] < t.crop, axis=1)):
                problems.add(
                    f"smaller than --crop {t.crop}", f"{paths[i]}: {shapes[i, 1]}x{shapes[i, 2]}"
                )
    return (int(channels), *out_hw)


def _most_common(values: np.ndarray) -> int:
    uniq, counts = np.unique(values, return_counts=True)
    return int(uniq[np.argmax(counts)])


def _most_common_pair(pairs: np.ndarray) -> np.ndarray:
    uniq, counts = np.unique(pairs, axis=0, return_counts=True)
    return uniq[np.argmax(counts)]


def _stream(
    tmp: Path,
    offset: int,
    found: Discovery,
    shape: tuple[int, int, int],
    t: Transform,
    pool: Pool,
    progress: Progress,
) -> tuple[list[str], list[str]]:
    """Decode every image and write its bytes into /images, which starts at byte ``offset`` of
    ``tmp``; return (hashes, sources whose NaN/Inf became 0). After the first failing image
    nothing more is written, but every file is still read, so the error names all of them."""
    entries = found.entries
    n = len(entries)
    image_bytes = int(np.prod(shape)) * np.dtype(t.dtype).itemsize
    block = max(1, min(MAX_BLOCK, BLOCK_BYTES // image_bytes))
    depth = 2 * pool.workers if pool.workers > 1 else 1
    slots = Slots(depth, block, shape, t.dtype, shared=pool.workers > 1)
    problems = Problems()
    hashes: list[str] = [""] * n
    nan_replaced: list[str] = []
    paths = [e.path for e in entries]
    sources = [e.source for e in entries]
    misfits: list[tuple[int, tuple[int, int, int]]] = []
    unreadable: list[int] = []
    fd = os.open(tmp, os.O_WRONLY)
    try:
        jobs = (
            DecodeJob(tuple(paths[s:e]), shape, t, slots.name, slots.offset(j))
            for j, (s, e) in enumerate(_ranges(n, block))
        )
        # Workers decode into their shared-memory slot; this process, into its view of it.
        here = lambda job: decode(job, slots.at(job.offset))  # noqa: E731
        results = pool.imap(decode, jobs, depth, inline=here)
        for j, ((s, e), result) in enumerate(zip(_ranges(n, block), results, strict=True)):
            _collect(result, s, paths, sources, t, problems, nan_replaced)
            misfits += [(s + i, chw) for i, chw in result.misfits]
            unreadable += [s + i for i, _ in result.errors]
            hashes[s:e] = result.hashes
            if not (problems or misfits):
                # One writer: parallel writes to one file serialise on its lock anyway.
                _pwrite_all(fd, slots.array(j)[: e - s], offset + s * image_bytes)
            progress("pack", e, n)
            interrupts.check()
    finally:
        os.close(fd)
        slots.release()
    if misfits:
        # Name the files that differ from what most images are (not from the sample's guess),
        # as a full header pass would: rows that fit have the stored shape.
        shapes = np.tile(np.array(shape, dtype=np.int64), (n, 1))
        shapes[unreadable] = -1
        for i, chw in misfits:
            shapes[i] = chw
        _shape_problems(paths, shapes, t, problems)
    nan_hint = problems.count(_NONFINITE) and t.nan == "error"
    problems.raise_if_any("use --nan zero to replace NaN/Inf with 0" if nan_hint else "")
    return hashes, nan_replaced


def _pwrite_all(fd: int, block: np.ndarray, position: int) -> None:
    view = memoryview(block.reshape(-1).view(np.uint8))
    while view:
        written = os.pwrite(fd, view, position)
        view, position = view[written:], position + written


_NONFINITE = "NaN or Inf values (--nan error)"


def _collect(
    result: DecodeResult,
    start: int,
    paths: list[str],
    sources: list[str],
    t: Transform,
    problems: Problems,
    nan_replaced: list[str],
) -> None:
    for i, reason in result.errors:
        problems.add("unreadable, corrupt or not an image", f"{paths[start + i]}: {reason}")
    for i in result.nonfinite:
        if t.nan == "error":
            problems.add(_NONFINITE, paths[start + i])
        else:
            nan_replaced.append(sources[start + i])
    for i in result.overflow:
        problems.add(
            f"values too large for {t.dtype} (use --normalize minmax"
            + (" or --dtype float32)" if t.dtype == "float16" else ")"),
            paths[start + i],
        )


def _leaks(
    hashes: list[str], split: np.ndarray, found: Discovery
) -> tuple[list[tuple[str, str]], int]:
    """(train source, test source) pairs of identical images, and the number of images that
    repeat an earlier image of their own split."""
    first: tuple[dict[str, int], dict[str, int]] = ({}, {})
    duplicates = 0
    for i, h in enumerate(hashes):
        seen = first[int(split[i])]
        if h in seen:
            duplicates += 1
        else:
            seen[h] = i
    train, test = first[TRAIN], first[TEST]
    leaks = [
        (found.entries[train[h]].source, found.entries[i].source)
        for h, i in sorted(test.items(), key=lambda kv: kv[1])
        if h in train
    ]
    return leaks, duplicates


def _leak_message(leaks: list[tuple[str, str]]) -> str:
    from lens.data.problems import listing

    lines = [f"{len(leaks)} image(s) appear in both train and test (identical content):"]
    return "\n".join(lines + listing([f"{a} = {b}" for a, b in leaks]))
