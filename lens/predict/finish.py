"""After PRED.h5 is written (by one run or by merging parts): metrics, ROC, top K, montage.

The same code for both, so a merged prediction ends exactly like an unsharded one.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lens import atomic
from lens.errors import LensError
from lens.predict.output import Outputs, read_attrs, read_columns


def prepare_outputs(outs: Outputs, force: bool) -> None:
    """Refuse to replace a prediction unless forced; create PRED's folder."""
    existing = [p for p in (outs.h5, outs.csv) if p.exists()]
    if existing and not force:
        raise LensError(f"{existing[0]}: already exists (use --force to replace it)")
    if outs.stem.parent.exists() and not outs.stem.parent.is_dir():
        raise LensError(f"{outs.stem.parent}: not a folder")
    outs.stem.parent.mkdir(parents=True, exist_ok=True)


@dataclass
class Finished:
    written: list[Path] = field(default_factory=list)
    metrics: dict[str, Any] | None = None
    top: list[dict[str, Any]] | None = None


def _sources(h5: Path, rows: list[int]) -> dict[int, tuple[int, str]]:
    """(data index, source) of a few rows of a prediction file."""
    import h5py

    wanted = sorted(set(rows))
    with h5py.File(h5, "r") as f:
        index = f["index"][wanted] if wanted else []
        source = f["source"][wanted] if wanted else []
    return {r: (int(i), s.decode() if isinstance(s, bytes) else str(s))
            for r, i, s in zip(wanted, index, source, strict=True)}


def finish(outs: Outputs, images: Path | None, *, n_boot: int = 1000, top: int = 0,
           montage: str | Path | None = None, montage_class: str | None = None) -> Finished:
    """Metrics and ROC when labeled (stale ones removed otherwise); the top-K list and,
    with ``images`` (the packed data file), the montage."""
    from lens.predict import evaluate
    from lens.predict.montage import ranked_classes, top_table, write_montage

    attrs = read_attrs(outs.h5)
    class_names, folds = json.loads(attrs["class_names"]), json.loads(attrs["folds"])
    classes = ranked_classes(class_names, montage_class)  # a bad --class fails early
    done = Finished()
    cols = read_columns(outs.h5, ("label", "split"))
    rows = evaluate.judged_rows(cols["label"], cols["split"],
                                bool(attrs.get("data_is_training_file", 0)))
    if rows.size:
        import h5py

        with h5py.File(outs.h5, "r") as f:  # only the judged rows: survey files stay unread
            prob, fold_prob = f["prob"][rows], f["fold_prob"][:, rows]
        label = cols["label"][rows]
        n_unlabeled = int((cols["label"] < 0).sum())
        done.metrics = evaluate.compute_metrics(
            label, prob, fold_prob, class_names, folds, n_boot=n_boot, n_unlabeled=n_unlabeled,
            training_file=bool(attrs.get("data_is_training_file", 0)))
        atomic.write_json(outs.metrics, done.metrics)
        done.written.append(outs.metrics)
        roc_classes = classes if len(class_names) == 2 else list(range(len(class_names)))
        if evaluate.write_roc(outs.roc, label, prob, fold_prob, class_names, folds, roc_classes):
            done.written.append(outs.roc)
    else:  # no labels: a metrics file of an earlier prediction must not pass for this one's
        for stale in (outs.metrics, outs.roc):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
    if top > 0 or montage is not None:
        k = top if top > 0 else 16
        prob_all = read_columns(outs.h5, ("prob",))["prob"]
        done.top = top_table(prob_all, classes, class_names, k)
        found = _sources(outs.h5, [t["row"] for t in done.top])
        for t in done.top:
            t["index"], t["source"] = found[t["row"]]
        if montage is not None:
            if images is None:
                raise LensError("the montage needs the images: predict from a packed file "
                                "(`lens pack`), or without --shard")
            from lens.data.h5file import read_images

            pixels = read_images(images, np.array([t["index"] for t in done.top], np.int64))
            write_montage(montage, done.top, pixels)
            done.written.append(Path(montage))
    return done
