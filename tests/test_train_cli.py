"""`lens train` end to end on a tiny synthetic file: the files of the task contract, the
idempotent re-run, and clean errors for bad input."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from test_train_data import make_packed
from typer.testing import CliRunner

from lens.cli import app, main
from lens.data.h5file import read_index

FAST = ["--set", "epochs=2", "--set", "batch_size=32", "--set", "n_boot=20",
        "--set", "deterministic=true"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def lens(*args: str, capsys=None) -> tuple[int, str]:
    """Run the console entry point in-process: (exit code, stderr)."""
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    err = capsys.readouterr().err if capsys is not None else ""
    return code, err


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    return make_packed(tmp_path_factory.mktemp("d") / "d.h5", n=200, n_test=40)


@pytest.fixture(scope="module")
def classify_run(data_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    torch.set_num_threads(1)
    code, _ = lens("train", "--stage", "classify", "--data", str(data_file), "--fold", "1",
                   "--out", str(out), *FAST)
    assert code == 0
    return out / "classify" / "fold_1"


def test_help_has_examples():
    result = CliRunner().invoke(app, ["train", "--help"])
    assert result.exit_code == 0
    assert "Examples:" in result.output and "--stage classify" in result.output


def test_classify_writes_the_task_files(classify_run, data_file):
    files = sorted(p.name for p in classify_run.iterdir())
    assert files == ["checkpoint.pt", "config.json", "metrics.jsonl", "model.pt",
                     "predictions.npz", "result.json"]
    result = json.loads((classify_run / "result.json").read_text())
    assert result["status"] == "completed" and result["stage"] == "classify"
    assert result["fold"] == 1 and result["epochs"] == 2 and result["restarts"] == 0
    assert result["class_names"] == ["class0", "class1"]
    assert result["world_size"] == 1
    assert result["device"] == "cpu" or result["device"].startswith("cuda")
    assert result["data"] == {"path": str(data_file), "n_folds": 3}
    assert result["config"]["epochs"] == 2
    index = read_index(data_file)
    n_val = int(((index.split == 0) & (index.fold == 1)).sum())
    assert (result["n_train"], result["n_val"], result["n_test"]) == (200 - 40 - n_val, n_val, 40)
    assert result["steps"] == 2 * (result["n_train"] // 32)
    for split in ("val", "test"):
        m = result["metrics"][split]
        assert m["n"] == result[f"n_{split}"] and 0 <= m["macro_auc"] <= 1
        assert m["macro_auc_ci"] is not None

    config = json.loads((classify_run / "config.json").read_text())
    assert config["config"] == result["config"]

    lines = [json.loads(x) for x in (classify_run / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2]
    keys = {"epoch", "step", "train_loss", "lr", "images_per_s", "elapsed_s", "val"}
    for line in lines:
        assert keys <= set(line)
        assert {"loss", "macro_auc", "accuracy", "balanced_accuracy"} <= set(line["val"])
    assert lines[-1]["val"]["macro_auc"] == pytest.approx(result["metrics"]["val"]["macro_auc"])

    pred = np.load(classify_run / "predictions.npz")
    np.testing.assert_array_equal(pred["val_index"],
                                  np.flatnonzero((index.split == 0) & (index.fold == 1)))
    np.testing.assert_array_equal(pred["val_label"], index.labels[pred["val_index"]])
    np.testing.assert_array_equal(pred["test_index"], np.flatnonzero(index.split == 1))
    for split in ("val", "test"):
        prob = pred[f"{split}_prob"]
        assert prob.shape == (len(pred[f"{split}_index"]), 2)
        np.testing.assert_allclose(prob.sum(axis=1), 1.0, atol=1e-5)
    ckpt = torch.load(classify_run / "checkpoint.pt", weights_only=True)
    assert ckpt["config"] == result["config"] and ckpt["progress"]["epoch"] == 2


def test_rerun_of_a_completed_task_returns_at_once(classify_run, data_file, capsys):
    before = (classify_run / "result.json").stat().st_mtime_ns
    start = time.perf_counter()
    code, _ = lens("train", "--stage", "classify", "--data", str(data_file), "--fold", "1",
                   "--out", str(classify_run.parent.parent), *FAST, capsys=capsys)
    assert code == 0 and time.perf_counter() - start < 5
    assert (classify_run / "result.json").stat().st_mtime_ns == before


def test_rerun_with_another_config_is_refused(classify_run, data_file, capsys):
    code, err = lens("train", "--stage", "classify", "--data", str(data_file), "--fold", "1",
                     "--out", str(classify_run.parent.parent), *FAST, "--set", "optim.lr=0.1",
                     capsys=capsys)
    assert code == 1
    assert "different config" in err and "optim.lr: 0.001 -> 0.1" in err


@pytest.mark.parametrize("args,message", [
    (["--fold", "3"], "--fold 3 is out of range"),
    (["--fold", "-1"], "out of range"),
    (["--fold", "0", "--set", "optim.lrr=1"], "valid keys: lr=0.001"),
    (["--fold", "0", "--set", "epochs=many"], "epochs = 'many' has the wrong type"),
])
def test_bad_input_exits_1_with_a_message(data_file, tmp_path, capsys, args, message):
    code, err = lens("train", "--stage", "classify", "--data", str(data_file),
                     "--out", str(tmp_path), *args, capsys=capsys)
    assert code == 1 and message in err
    assert not (tmp_path / "classify").exists()  # nothing written for a task that cannot run


def test_file_without_folds_and_missing_file(tmp_path, capsys):
    nofolds = make_packed(tmp_path / "nf.h5", n_folds=0)
    code, err = lens("train", "--stage", "classify", "--data", str(nofolds), "--fold", "0",
                     "--out", str(tmp_path / "run"), capsys=capsys)
    assert code == 1 and "no cross-validation folds" in err
    code, err = lens("train", "--stage", "classify", "--data", str(tmp_path / "none.h5"),
                     "--fold", "0", "--out", str(tmp_path / "run"), capsys=capsys)
    assert code == 1 and "no such file" in err


def test_streaming_path_trains_and_predicts_every_image(data_file, tmp_path, capsys):
    code, err = lens("train", "--stage", "classify", "--data", str(data_file), "--fold", "2",
                     "--out", str(tmp_path), "--set", "data_mode=stream", "--set",
                     "num_workers=2", "--set", "epochs=1", "--set", "batch_size=32",
                     "--set", "n_boot=0", capsys=capsys)
    assert code == 0, err
    task = tmp_path / "classify" / "fold_2"
    result = json.loads((task / "result.json").read_text())
    pred = np.load(task / "predictions.npz")
    assert result["config"]["data_mode"] == "stream"
    assert result["metrics"]["val"]["n"] == result["n_val"] == pred["val_prob"].shape[0]
    assert result["steps"] == result["n_train"] // 32
