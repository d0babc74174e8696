"""Which images a run (or one shard of it) makes, the worker pool, and atomic writing.

Layout (the real Common Test I layout, so `lens pack` reads it unchanged):
  labeled:   OUT/<class>/<k>.npy            k = 0 .. per_class-1
  unlabeled: OUT/<g>.npy, g = k·C + c       C classes interleaved, c = class index
Each file is float64 (1, H, W), min-max normalised to [0, 1]. Image k of class c depends
only on (seed, dataset, c, k) and the physics, so any split into workers or shards writes
the same bytes. OUT/.simulate.json records the run (hidden, so folder readers skip it).
"""

from __future__ import annotations

import io
import json
import multiprocessing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lens.atomic import atomic_path, write_json
from lens.errors import LensError
from lens.simulate.presets import SimParams
from lens.simulate.scene import DATASETS, draw_scene, image_rng

MANIFEST = ".simulate.json"
MIN_SIZE = 16


@dataclass(frozen=True)
class SimulationSpec:
    """Everything that determines the images (not how the work is split)."""

    out: Path
    dataset: str
    preset: str
    params: SimParams
    per_class: int
    size: int = 150
    seed: int = 0
    unlabeled: bool = False

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise LensError(
                f"unknown dataset {self.dataset!r}; choose one of {', '.join(DATASETS)}"
            )
        if self.per_class < 1:
            raise LensError(f"--per-class must be at least 1 (got {self.per_class})")
        if self.size < MIN_SIZE:
            raise LensError(f"--size must be at least {MIN_SIZE} pixels (got {self.size})")
        if self.size % 2:
            # an odd grid puts a pixel on the lens centre, where the singular isothermal
            # profile shows the unlensed source centre: a one-pixel artefact
            raise LensError(f"--size must be even (got {self.size}): use {self.size + 1}")
        if self.seed < 0:
            raise LensError(f"--seed must be >= 0 (got {self.seed})")

    @property
    def classes(self) -> tuple[str, ...]:
        return DATASETS[self.dataset]

    def output_path(self, class_index: int, k: int) -> Path:
        if self.unlabeled:
            return self.out / f"{k * len(self.classes) + class_index}.npy"
        return self.out / self.classes[class_index] / f"{k}.npy"

    def manifest(self) -> dict[str, Any]:
        from lens import __version__

        return {
            "dataset": self.dataset,
            "classes": list(self.classes),
            "layout": "flat <k*C+c>.npy" if self.unlabeled else "<class>/<k>.npy",
            "per_class": self.per_class,
            "size": self.size,
            "pixel_scale_arcsec": self.params.field_of_view / self.size,
            "seed": self.seed,
            "preset": self.preset,
            "params": self.params.to_dict(),
            "lens_version": __version__,
        }


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' (0 <= I < N) → (I, N)."""
    try:
        index_text, count_text = text.split("/")
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise LensError(f"--shard {text!r}: expected I/N, e.g. 0/4 (I from 0 to N-1)") from None
    if count < 1 or not 0 <= index < count:
        raise LensError(f"--shard {text}: need 0 <= I < N (shards are numbered 0 to N-1)")
    return index, count


def shard_range(per_class: int, index: int, count: int) -> range:
    """The contiguous image indices k of shard ``index`` of ``count`` (sizes differ by <= 1)."""
    return range(per_class * index // count, per_class * (index + 1) // count)


def plan(spec: SimulationSpec, shard: tuple[int, int] = (0, 1)) -> list[tuple[int, int]]:
    """(class_index, k) of every image of the shard, k-major so classes fill evenly."""
    ks = shard_range(spec.per_class, *shard)
    return [(c, k) for k in ks for c in range(len(spec.classes))]


def prepare_output(spec: SimulationSpec) -> None:
    """Create OUT (and class folders); refuse a folder that holds something else."""
    out = spec.out
    if out.exists() and not out.is_dir():
        raise LensError(f"{out}: exists and is not a folder")
    manifest = spec.manifest()
    manifest_path = out / MANIFEST
    if manifest_path.exists():
        try:
            previous = json.loads(manifest_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise LensError(f"{manifest_path}: unreadable ({exc})") from None
        if previous != manifest:
            changed = sorted(k for k in manifest if previous.get(k) != manifest[k])
            raise LensError(
                f"{out}: holds a different simulation ({MANIFEST} differs in "
                f"{', '.join(changed)}); choose another folder"
            )
    elif out.exists() and any(not p.name.startswith(".") for p in out.iterdir()):
        raise LensError(f"{out}: folder is not empty and is not a lens simulation")
    out.mkdir(parents=True, exist_ok=True)
    write_json(manifest_path, manifest)  # every shard writes the same content
    if not spec.unlabeled:
        for name in spec.classes:
            (out / name).mkdir(exist_ok=True)


def render_image(spec: SimulationSpec, renderer: Any, class_index: int, k: int) -> np.ndarray:
    """Image k of class ``class_index``: float64 (1, H, W) in [0, 1]."""
    rng = image_rng(spec.seed, spec.dataset, class_index, k)
    scene = draw_scene(spec.params, spec.dataset, spec.classes[class_index], rng)
    return renderer.render(scene, rng)


def write_npy(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


# --- workers ------------------------------------------------------------------------

_worker_state: tuple[SimulationSpec, Any, bool] | None = None


def _init_worker(spec: SimulationSpec, resume: bool) -> None:
    global _worker_state
    from lens.simulate.physics import Renderer

    _worker_state = (spec, Renderer(spec.params, spec.size), resume)


def _make(task: tuple[int, int]) -> int:
    """Render and write one image (skipped when resuming and it exists); returns 1."""
    assert _worker_state is not None, "worker not initialised"
    spec, renderer, resume = _worker_state
    path = spec.output_path(*task)
    if not (resume and path.exists()):
        write_npy(path, render_image(spec, renderer, *task))
    return 1


def run(
    spec: SimulationSpec,
    shard: tuple[int, int] = (0, 1),
    workers: int = 1,
    resume: bool = False,
    on_image: Callable[[], None] | None = None,
) -> int:
    """Make the shard's images; ``on_image`` is called after each one. Returns the count."""
    if workers < 1:
        raise LensError(f"--workers must be at least 1 (got {workers})")
    tasks = plan(spec, shard)
    prepare_output(spec)
    if not tasks:
        return 0
    if workers == 1:
        _init_worker(spec, resume)
        results = map(_make, tasks)
        pool = None
    else:
        pool = multiprocessing.get_context().Pool(
            processes=min(workers, len(tasks)), initializer=_init_worker, initargs=(spec, resume)
        )
        chunk = max(1, min(16, len(tasks) // (4 * workers)))
        results = pool.imap_unordered(_make, tasks, chunksize=chunk)
    try:
        for _ in results:
            if on_image is not None:
                on_image()
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    return len(tasks)
