"""`lens inspect`: counts, streamed value range, provenance, JSON, unknown schema versions."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

import lens.data.inspect as inspect_module
from lens.cli import app
from lens.data.h5file import write_packed
from lens.data.inspect import render_inspect, summarize
from lens.errors import LensError

GOLDEN = Path(__file__).parent / "golden" / "inspect.txt"


def packed(path: Path) -> np.ndarray:
    """A small packed file with fixed provenance; returns its images."""
    rng = np.random.default_rng(0)
    images = rng.normal(size=(12, 1, 5, 5)).astype(np.float32)
    images[4] = images[9]  # a test image identical to a train image
    labels = np.array([0, 1, 2] * 4)
    split = np.array([0] * 9 + [1] * 3)
    fold = np.array([0, 0, 0, 1, 1, 1, 0, 1, 1, -1, -1, -1])
    write_packed(path, images, labels, ["no", "sphere", "vort"], split=split, fold=fold,
                 n_folds=2, fold_seed=0, command="lens pack dataset data.h5 --folds 2")
    with h5py.File(path, "a") as f:
        f.attrs["created"] = "2025-01-02T03:04:05+00:00"
    return images


def test_summary_counts_range_and_provenance(tmp_path, monkeypatch):
    monkeypatch.setattr(inspect_module, "BLOCK_BYTES", 2 * 25 * 4)  # stream 2 images at a time
    images = packed(tmp_path / "d.h5")
    s = summarize(tmp_path / "d.h5")
    assert s["images"] == 12 and s["shape"] == [1, 5, 5] and s["dtype"] == "float32"
    assert s["classes"] == ["no", "sphere", "vort"]
    assert s["value_range"] == [float(images.min()), float(images.max())]
    assert s["nonfinite_values"] == 0
    assert s["counts"][0] == {"class": "no", "train": 3, "folds": [2, 1], "test": 1, "total": 4}
    assert s["counts"][-1] == {"class": "total", "train": 9, "folds": [4, 5], "test": 3,
                               "total": 12}
    assert s["test_images_also_in_train"] == 1
    assert s["provenance"] == {"command": "lens pack dataset data.h5 --folds 2",
                               "created": "2025-01-02T03:04:05+00:00", "lens_version": "0.1.0"}
    assert s["schema_version"] == 2 and s["n_folds"] == 2 and s["fold_seed"] == 0


def test_nonfinite_values_are_counted_not_ranged(tmp_path):
    images = np.zeros((3, 1, 2, 2), np.float32)
    images[1, 0, 0, 0], images[2, 0, 1, 1], images[0, 0, 1, 0] = np.nan, np.inf, -2.0
    write_packed(tmp_path / "n.h5", images, np.array([0, 1, 1]), ["a", "b"])
    s = summarize(tmp_path / "n.h5")
    assert s["value_range"] == [-2.0, 0.0] and s["nonfinite_values"] == 2


def test_render_golden(tmp_path):
    packed(tmp_path / "d.h5")
    s = summarize(tmp_path / "d.h5")
    s["path"], s["file_bytes"] = "data/d.h5", 123456  # independent of where the test runs
    text = render_inspect(s)
    if not GOLDEN.exists():  # first run writes it; review and commit it
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()


def test_inspect_cli_table_and_json(tmp_path):
    packed(tmp_path / "d.h5")
    result = CliRunner().invoke(app, ["inspect", str(tmp_path / "d.h5")])
    assert result.exit_code == 0, result.output
    assert "schema version 2" in result.output and "fold 1" in result.output
    assert "1 test image(s) identical to a train image" in result.output
    result = CliRunner().invoke(app, ["inspect", str(tmp_path / "d.h5"), "--json"])
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["counts"][1]["class"] == "sphere" and data["images"] == 12


def test_inspect_a_packed_folder_end_to_end(tmp_path):
    for split in ("train", "val"):
        for cls in ("a", "b"):
            (tmp_path / "ds" / split / cls).mkdir(parents=True)
            for i in range(3):
                np.save(tmp_path / "ds" / split / cls / f"{i}.npy", np.full((4, 4), i + 0.5))
    out = tmp_path / "o.h5"
    assert CliRunner().invoke(app, ["pack", str(tmp_path / "ds"), str(out)]).exit_code == 0
    s = summarize(out)
    assert s["value_range"] == [0.5, 2.5] and s["counts"][-1]["test"] == 6
    assert s["test_images_also_in_train"] == 6  # the same constant images in both splits


def test_unknown_schema_version_gives_the_readers_error(tmp_path):
    packed(tmp_path / "d.h5")
    with h5py.File(tmp_path / "d.h5", "a") as f:
        f.attrs["schema_version"] = 3
    result = CliRunner().invoke(app, ["inspect", str(tmp_path / "d.h5")])
    assert result.exit_code != 0 and isinstance(result.exception, LensError)
    assert "schema version 3 is not supported" in str(result.exception)
    with pytest.raises(LensError, match="no such file"):
        summarize(tmp_path / "missing.h5")
    (tmp_path / "junk.h5").write_bytes(b"junk")
    with pytest.raises(LensError, match="not a readable HDF5 file"):
        summarize(tmp_path / "junk.h5")


def test_version_1_files_are_still_read(tmp_path):
    # Version 1 differs only in how /hash was computed (BLAKE2b), which no reader recomputes.
    packed(tmp_path / "d.h5")
    with h5py.File(tmp_path / "d.h5", "a") as f:
        f.attrs["schema_version"] = 1
    assert summarize(tmp_path / "d.h5")["schema_version"] == 1


def test_inspect_help_has_examples():
    result = CliRunner().invoke(app, ["inspect", "--help"])
    assert result.exit_code == 0 and "Examples:" in result.output
