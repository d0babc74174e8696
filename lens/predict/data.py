"""The images to predict: a packed file, or a folder packed on the fly like the training file.

Either way the images are checked against what the models were trained on: channels,
image size and normalisation (and the class names, when the images are labeled).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from lens.data.h5file import PackedInfo, read_info
from lens.errors import LensError
from lens.predict.models import TrainedOn

Progress = Callable[[str, int, int], None]  # (stage, done, total), as lens.data.pack's


def check_compatible(info: PackedInfo, trained: TrainedOn, name: str | Path) -> None:
    """LensError naming the first difference between the images and the training images."""
    if info.channels != trained.channels:
        raise LensError(
            f"{name}: the images have {info.channels} channel(s) but the models were trained "
            f"on {trained.channels}-channel images")
    if (info.height, info.width) != (trained.height, trained.width):
        raise LensError(
            f"{name}: the images are {info.height}x{info.width} pixels but the models were "
            f"trained on {trained.height}x{trained.width}; repack them with "
            f"`lens pack --size {trained.height}` (or --crop)")
    if info.normalize != trained.normalize:
        raise LensError(
            f"{name}: the images were packed with --normalize {info.normalize} but the "
            f"models were trained on images packed with --normalize {trained.normalize}; "
            f"repack them with --normalize {trained.normalize}")
    if info.class_names and info.class_names != trained.class_names:
        raise LensError(
            f"{name}: the class names {list(info.class_names)} differ from the models' "
            f"{list(trained.class_names)}, so the labels would be misread; name the class "
            f"folders like the training ones, or pack the images without labels")


def is_training_file(info: PackedInfo, trained: TrainedOn) -> bool:
    """The very file the run was trained on (its train split was seen by the models)."""
    return bool(trained.created) and info.created == trained.created \
        and info.class_names == trained.class_names


@contextlib.contextmanager
def open_data(data: str | Path, trained: TrainedOn, scratch: str | Path,
              progress: Progress | None = None) -> Iterator[PackedInfo]:
    """The packed file to read. A folder is packed into a temporary folder under
    ``scratch`` with the training file's options (normalisation, NaN policy, size, crop,
    dtype), and removed afterwards, whatever happens."""
    data = Path(data)
    if not data.exists():
        raise LensError(f"{data}: no such file or folder")
    if not data.is_dir():
        info = read_info(data)
        check_compatible(info, trained, data)
        yield info
        return
    from lens.data.pack import PackOptions, pack

    options = PackOptions(normalize=trained.normalize, nan=trained.nan_policy,
                          size=trained.size or None, crop=trained.crop or None,
                          dtype=trained.dtype)
    with tempfile.TemporaryDirectory(dir=scratch, prefix=".lens-predict-") as tmp:
        packed = Path(tmp) / "data.h5"
        pack([data], packed, options, command=f"lens predict: {data} packed on the fly",
             progress=progress)
        info = read_info(packed)
        check_compatible(info, trained, data)
        yield info
