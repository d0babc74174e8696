"""The prediction files: PRED.h5 (exact, every array) and PRED.csv (one row per image).

PRED.h5, format ``lens-predictions-1`` (row i of every dataset is one image; rows are in
the order of the data file, a shard part holds rows start..stop-1 of it):

    /index     (n,)       int64    row of the image in the data file
    /source    (n,)       str      its source path (the data file's /source)
    /split     (n,)       int8     0 = train, 1 = test (the data file's /split)
    /label     (n,)       int64    class index, -1 when unlabeled
    /prob      (n, K)     float32  ensemble: mean over the fold models of their softmax
    /fold_prob (F, n, K)  float32  softmax of each fold model (fold ids in attrs["folds"])
    attrs: format, class_names (JSON), folds (JSON), stage, run, data, data_n, data_created,
           data_is_training_file (1: the metrics judge its test split only), start, stop,
           batch_size, precision (fp32 or bf16), lens_version; parts add shard, n_shards

PRED.csv has the columns index, source, split, label, predicted, p_<class>... (ensemble),
then fold<k>_p_<class>... for each fold model; probabilities with 6 significant digits.

Both files are written block by block to temporary siblings (memory does not grow with
the number of images) and renamed into place together at the end.
"""

from __future__ import annotations

import contextlib
import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lens.atomic import atomic_path
from lens.errors import LensError

FORMAT = "lens-predictions-1"
SPLIT_NAMES = ("train", "test")
PART_KEYS = ("shard", "n_shards")  # attributes of a part only


@dataclass(frozen=True)
class Outputs:
    """The files of one prediction, named from its stem PRED."""

    stem: Path

    @classmethod
    def of(cls, out: str | Path) -> Outputs:
        """``--out PRED``; a trailing .h5 or .csv is dropped (PRED.h5 names the same set)."""
        out = Path(out)
        return cls(out.with_suffix("") if out.suffix in (".h5", ".csv") else out)

    def _with(self, suffix: str) -> Path:
        return self.stem.with_name(self.stem.name + suffix)

    @property
    def h5(self) -> Path:
        return self._with(".h5")

    @property
    def csv(self) -> Path:
        return self._with(".csv")

    @property
    def metrics(self) -> Path:
        return self._with(".metrics.json")

    @property
    def roc(self) -> Path:
        return self._with(".roc.png")

    @property
    def parts(self) -> Path:
        """Where `--shard I/N` writes part_<I>.h5 and `--merge` reads them."""
        return self._with(".parts")


@dataclass(frozen=True)
class Block:
    """Predictions of consecutive images (rows ``start .. start + n - 1`` of the output)."""

    index: np.ndarray  # (n,) int64
    source: list[str]
    split: np.ndarray  # (n,) int8
    label: np.ndarray  # (n,) int64
    prob: np.ndarray  # (n, K) float32
    fold_prob: np.ndarray  # (F, n, K) float32

    def __len__(self) -> int:
        return int(self.index.size)


def csv_header(class_names: tuple[str, ...] | list[str], folds: list[int]) -> list[str]:
    cols = ["index", "source", "split", "label", "predicted"]
    cols += [f"p_{c}" for c in class_names]
    cols += [f"fold{k}_p_{c}" for k in folds for c in class_names]
    return cols


def csv_rows(block: Block, class_names: tuple[str, ...] | list[str]) -> list[list[str]]:
    """The CSV rows of a block (pure: golden-tested)."""
    names = list(class_names)
    predicted = block.prob.argmax(axis=1)
    fold_flat = block.fold_prob.transpose(1, 0, 2).reshape(len(block), -1)
    numbers = np.concatenate([block.prob, fold_flat], axis=1)
    rows = []
    for i in range(len(block)):
        label = int(block.label[i])
        rows.append([str(int(block.index[i])), block.source[i],
                     SPLIT_NAMES[int(block.split[i])] if 0 <= block.split[i] < 2 else "",
                     names[label] if label >= 0 else "", names[int(predicted[i])],
                     *(f"{x:.6g}" for x in numbers[i].tolist())])
    return rows


def _create(f: Any, n: int, n_models: int, k: int) -> None:
    import h5py

    f.create_dataset("index", (n,), np.int64)
    f.create_dataset("source", (n,), h5py.string_dtype())
    f.create_dataset("split", (n,), np.int8)
    f.create_dataset("label", (n,), np.int64)
    f.create_dataset("prob", (n, k), np.float32)
    f.create_dataset("fold_prob", (n_models, n, k), np.float32)


@contextlib.contextmanager
def writing(h5: Path, csv_path: Path | None, n: int, attrs: dict[str, Any]
            ) -> Iterator[Callable[[Block], None]]:
    """Yield ``write(block)``; blocks must come in order and fill exactly ``n`` rows.

    On success both files are renamed into place (CSV first: PRED.h5 appearing is the
    sign of a complete set); on any error neither is left behind.
    """
    import h5py

    class_names = json.loads(attrs["class_names"])
    folds = json.loads(attrs["folds"])
    done = 0
    with contextlib.ExitStack() as stack:
        tmp_h5 = stack.enter_context(atomic_path(h5))
        if csv_path is not None:  # entered second: renamed first, when the stack unwinds
            tmp_csv = stack.enter_context(atomic_path(csv_path))
            text = stack.enter_context(open(tmp_csv, "w", newline="", encoding="utf-8"))
            table = csv.writer(text, lineterminator="\n")
            table.writerow(csv_header(class_names, folds))
        f = stack.enter_context(h5py.File(tmp_h5, "w"))
        _create(f, n, len(folds), len(class_names))
        f.attrs.update(attrs)

        def write(block: Block) -> None:
            nonlocal done
            lo, hi = done, done + len(block)
            if hi > n:
                raise RuntimeError(f"{h5}: more than the {n} rows announced")
            f["index"][lo:hi] = block.index
            f["source"][lo:hi] = block.source
            f["split"][lo:hi] = block.split
            f["label"][lo:hi] = block.label
            f["prob"][lo:hi] = block.prob
            f["fold_prob"][:, lo:hi] = block.fold_prob
            if csv_path is not None:
                table.writerows(csv_rows(block, class_names))
            done = hi

        yield write
        if done != n:
            raise RuntimeError(f"{h5}: {done} of {n} rows written")


def read_attrs(path: str | Path) -> dict[str, Any]:
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: _plain(v) for k, v in f.attrs.items()}
    except OSError as exc:
        raise LensError(f"{path}: not a readable HDF5 file ({exc})") from None
    if attrs.get("format") != FORMAT:
        raise LensError(f"{path}: not a lens prediction file (expected format {FORMAT})")
    return attrs


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def read_rows(path: str | Path, lo: int = 0, hi: int | None = None) -> Block:
    """Rows lo..hi-1 of a prediction file as a Block."""
    import h5py

    with h5py.File(path, "r") as f:
        hi = f["index"].shape[0] if hi is None else hi
        return Block(index=f["index"][lo:hi], split=f["split"][lo:hi], label=f["label"][lo:hi],
                     source=[s.decode() if isinstance(s, bytes) else str(s)
                             for s in f["source"][lo:hi]],
                     prob=f["prob"][lo:hi], fold_prob=f["fold_prob"][:, lo:hi])


def read_columns(path: str | Path, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Whole datasets (e.g. label and prob for the metrics), without the sources."""
    import h5py

    with h5py.File(path, "r") as f:
        return {name: f[name][:] for name in names}


def n_rows(path: str | Path) -> int:
    import h5py

    with h5py.File(path, "r") as f:
        return int(f["index"].shape[0])
