"""`lens predict` end to end on a tiny classify run trained here (2 folds, 1 epoch, 16 px):
the predictions equal those training saved, folders are packed on the fly, mismatched
images are refused, shards merge into the unsharded files, the top-K montage, the CLI."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from test_train_data import make_packed
from typer.testing import CliRunner

from lens.cli import app, main
from lens.data.h5file import read_images, read_index, read_sources, write_packed
from lens.errors import LensError
from lens.predict.data import open_data
from lens.predict.models import TrainedOn
from lens.predict.shards import merge_parts, predict_shard
from lens.train.metrics import classification_metrics

DATASETS = ("index", "source", "split", "label", "prob", "fold_prob")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def invoke(*args: str):
    return CliRunner().invoke(app, ["predict", *args])


def lens(*args: str, capsys=None) -> tuple[int, str]:
    """The console entry point in-process: (exit code, stderr)."""
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err if capsys is not None else ""


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(training file, run folder) of a 2-fold classify run."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("predict")
    data = make_packed(root / "train.h5", n=160, n_test=40, n_folds=2, size=16)
    run = root / "run"
    for fold in ("0", "1"):
        code, _ = lens("train", "--stage", "classify", "--data", str(data), "--fold", fold,
                       "--out", str(run), "--set", "epochs=1", "--set", "batch_size=32",
                       "--set", "n_boot=20", "--set", "deterministic=true")
        assert code == 0
    return data, run


def read_h5(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    with h5py.File(path, "r") as f:
        return {k: f[k][:] for k in DATASETS}, dict(f.attrs)


def test_help_has_examples():
    result = CliRunner().invoke(app, ["predict", "--help"])
    assert result.exit_code == 0
    assert "Examples:" in result.output and "--shard 3/16" in result.output
    assert "--merge preds/survey --shards 16" in result.output


def test_predictions_equal_those_saved_by_training(trained, tmp_path):
    data, run = trained
    result = invoke(str(run), str(data), "--out", str(tmp_path / "p"), "--n-boot", "50",
                    "--batch-size", "24")
    assert result.exit_code == 0, result.output
    assert "classify: 2 fold models (folds 0, 1)" in result.output
    assert "metrics on 40 images (test split of the run's training file)" in result.output
    arrays, attrs = read_h5(tmp_path / "p.h5")
    assert json.loads(attrs["folds"]) == [0, 1] and attrs["stage"] == "classify"
    assert arrays["fold_prob"].shape == (2, 160, 2)
    for k in (0, 1):
        saved = np.load(run / "classify" / f"fold_{k}" / "predictions.npz")
        for split in ("val", "test"):
            rows = saved[f"{split}_index"]
            assert rows.size
            np.testing.assert_allclose(arrays["fold_prob"][k][rows], saved[f"{split}_prob"],
                                       atol=2e-6, rtol=0)
    np.testing.assert_allclose(arrays["prob"], arrays["fold_prob"].mean(axis=0), atol=1e-7)
    index = read_index(data)
    np.testing.assert_array_equal(arrays["index"], np.arange(160))
    np.testing.assert_array_equal(arrays["label"], index.labels)
    np.testing.assert_array_equal(arrays["split"], index.split)
    assert [s.decode() for s in arrays["source"]] == read_sources(data)

    with open(tmp_path / "p.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 160 and rows[5]["source"] == read_sources(data)[5]
    names = ["class0", "class1"]
    for i in (0, 77, 159):
        assert rows[i]["label"] == names[index.labels[i]]
        assert rows[i]["split"] == ("test" if index.split[i] else "train")
        assert rows[i]["predicted"] == names[int(arrays["prob"][i].argmax())]
        assert float(rows[i]["p_class1"]) == pytest.approx(arrays["prob"][i, 1], rel=1e-5)
        assert float(rows[i]["fold1_p_class0"]) == pytest.approx(arrays["fold_prob"][1, i, 0],
                                                                 rel=1e-5)

    metrics = json.loads((tmp_path / "p.metrics.json").read_text())
    test = np.flatnonzero(index.split == 1)
    expected = classification_metrics(index.labels[test], arrays["prob"][test], names,
                                      n_boot=50, seed=0)
    assert metrics["n"] == 40 and metrics["images"] == "test split of the run's training file"
    for key in ("macro_auc", "micro_auc", "accuracy", "macro_auc_ci", "confusion"):
        assert metrics["ensemble"][key] == expected[key]
    assert sorted(metrics["folds"]) == ["0", "1"] and "loss" in metrics["folds"]["1"]
    saved = np.load(run / "classify" / "fold_0" / "predictions.npz")
    assert metrics["folds"]["0"]["macro_auc"] == pytest.approx(
        classification_metrics(saved["test_label"], saved["test_prob"], names,
                               n_boot=0)["macro_auc"], abs=1e-6)
    assert (tmp_path / "p.roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_finetune_models_are_rebuilt_with_their_heads(trained, tmp_path):
    """A finetune run (default stage when present): the model of each head mode is rebuilt
    by the training code and predicts what training saved."""
    data, _ = trained
    run = tmp_path / "ssl"
    fast = ["--set", "epochs=1", "--set", "batch_size=32", "--set", "deterministic=true"]
    for fold, mode in (("0", "mlp"), ("1", "linear")):  # two head structures in one test
        for stage, extra in (("pretrain", []), ("finetune", ["--set", f"finetune.mode={mode}",
                                                             "--set", "n_boot=0"])):
            code, _ = lens("train", "--stage", stage, "--data", str(data), "--fold", fold,
                           "--out", str(run), *fast, *extra)
            assert code == 0
    result = invoke(str(run), str(data), "--out", str(tmp_path / "p"), "--n-boot", "0")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("finetune: 2 fold models")
    arrays, attrs = read_h5(tmp_path / "p.h5")
    assert attrs["stage"] == "finetune"
    for k in (0, 1):
        saved = np.load(run / "finetune" / f"fold_{k}" / "predictions.npz")
        for split in ("val", "test"):
            np.testing.assert_allclose(arrays["fold_prob"][k][saved[f"{split}_index"]],
                                       saved[f"{split}_prob"], atol=2e-6, rtol=0)


def test_folders_are_packed_on_the_fly(trained, tmp_path):
    data, run = trained
    flat, classes = tmp_path / "flat", tmp_path / "classes"
    pixels, labels = read_images(data, np.arange(30)), read_index(data).labels[:30]
    for i in range(30):
        (flat / "survey").mkdir(parents=True, exist_ok=True)
        np.save(flat / "survey" / f"img_{i:03d}.npy", pixels[i])
        (classes / f"class{labels[i]}").mkdir(parents=True, exist_ok=True)
        np.save(classes / f"class{labels[i]}" / f"img_{i:03d}.npy", pixels[i])
    out = tmp_path / "out"
    for name, folder in (("full", data), ("flat", flat / "survey"), ("classes", classes)):
        result = invoke(str(run), str(folder), "--out", str(out / name), "--n-boot", "20")
        assert result.exit_code == 0, result.output
    full, _ = read_h5(out / "full.h5")
    flat_pred, flat_attrs = read_h5(out / "flat.h5")
    assert [s.decode() for s in flat_pred["source"]] == [f"img_{i:03d}.npy" for i in range(30)]
    np.testing.assert_allclose(flat_pred["fold_prob"], full["fold_prob"][:, :30], atol=1e-6)
    assert (flat_pred["label"] == -1).all() and flat_attrs["data_is_training_file"] == 0
    assert not (out / "flat.metrics.json").exists()  # unlabeled: no metrics

    labeled, _ = read_h5(out / "classes.h5")
    order = [int(s.decode()[-7:-4]) for s in labeled["source"]]  # class0/... then class1/...
    np.testing.assert_array_equal(labeled["label"], labels[order])
    np.testing.assert_allclose(labeled["prob"], full["prob"][order], atol=1e-6)
    metrics = json.loads((out / "classes.metrics.json").read_text())
    assert metrics["n"] == 30 and metrics["images"] == "every labeled image"
    written = [f"{n}{s}" for n in ("full", "flat", "classes") for s in (".h5", ".csv")]
    written += ["classes.metrics.json", "classes.roc.png", "full.metrics.json", "full.roc.png"]
    assert sorted(p.name for p in out.iterdir()) == sorted(written)  # the packed files are gone


def test_on_the_fly_packing_uses_the_training_files_options(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(4):
        np.save(folder / f"{i}.npy", rng.uniform(5, 10, (1, 20, 20)).astype(np.float32))
    trained = TrainedOn(channels=1, height=16, width=16, class_names=("a", "b"),
                        normalize="minmax", nan_policy="error", size=16, crop=0,
                        dtype="float16", path="train.h5", created="then")
    with open_data(folder, trained, tmp_path) as info:
        assert (info.height, info.width, info.dtype, info.normalize) == (16, 16, "float16",
                                                                         "minmax")
        images = read_images(info.path)
        assert images.min() == 0.0 and images.max() == 1.0
        assert info.path.parent.parent == tmp_path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imgs"]  # the temporary is gone
    with pytest.raises(LensError, match=r"imgs: the images are 20x20 pixels but the models "
                                        r"were trained on 16x16"), \
            open_data(folder, TrainedOn(**{**trained.__dict__, "size": 0}), tmp_path):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imgs"]


def _mismatched(path: Path, kind: str) -> Path:
    if kind == "size":
        return make_packed(path, n=20, n_test=0, n_folds=0, size=24)
    if kind == "channels":
        return make_packed(path, n=20, n_test=0, n_folds=0, size=16, channels=3)
    if kind == "classes":
        return make_packed(path, n=30, n_test=0, n_folds=0, size=16, classes=3)
    write_packed(path, np.zeros((4, 1, 16, 16), np.float32), np.zeros(4, np.int64),
                 ["class0", "class1"], normalize="minmax")
    return path


@pytest.mark.parametrize("kind,message", [
    ("size", "the images are 24x24 pixels but the models were trained on 16x16; repack them "
             "with `lens pack --size 16`"),
    ("channels", "the images have 3 channel(s) but the models were trained on 1-channel "
                 "images"),
    ("normalize", "the images were packed with --normalize minmax but the models were trained "
                  "on images packed with --normalize none"),
    ("classes", "the class names ['class0', 'class1', 'class2'] differ from the models' "
                "['class0', 'class1']"),
])
def test_mismatched_images_are_refused(trained, tmp_path, capsys, kind, message):
    other = _mismatched(tmp_path / f"{kind}.h5", kind)
    code, err = lens("predict", str(trained[1]), str(other), "--out", str(tmp_path / "p"),
                     capsys=capsys)
    assert code == 1
    assert f"error: {other}: {message}" in err
    assert not list(tmp_path.glob("p*"))


def test_sharded_prediction_merged_equals_unsharded(trained, tmp_path):
    data, run = trained
    common = ["--batch-size", "16"]  # shard edges (rows 54, 107) fall inside batches
    result = invoke(str(run), str(data), "--out", str(tmp_path / "full"), *common,
                    "--n-boot", "30", "--top", "4")
    assert result.exit_code == 0, result.output
    for i in range(3):
        result = invoke(str(run), str(data), "--out", str(tmp_path / "sharded"), *common,
                        "--shard", f"{i}/3")
        assert result.exit_code == 0, result.output
        assert f"shard {i}/3: rows" in result.output and "written" in result.output
    parts = tmp_path / "sharded.parts"
    assert sorted(p.name for p in parts.iterdir()) == ["part_0.h5", "part_1.h5", "part_2.h5"]
    with h5py.File(parts / "part_1.h5", "r") as f:
        assert (f.attrs["start"], f.attrs["stop"], f["index"].shape[0]) == (54, 107, 53)
    before = (parts / "part_1.h5").stat().st_mtime_ns
    result = invoke(str(run), str(data), "--out", str(tmp_path / "sharded"), *common,
                    "--shard", "1/3")
    assert "already complete, kept" in result.output
    assert (parts / "part_1.h5").stat().st_mtime_ns == before

    result = invoke("--merge", str(tmp_path / "sharded"), "--shards", "3", "--n-boot", "30",
                    "--top", "4", "--montage", str(tmp_path / "top.png"))
    assert result.exit_code == 0, result.output
    assert "merged 3 parts, 160 images, 2 fold models" in result.output
    full, full_attrs = read_h5(tmp_path / "full.h5")
    merged, merged_attrs = read_h5(tmp_path / "sharded.h5")
    for name in DATASETS:
        np.testing.assert_array_equal(merged[name], full[name], err_msg=name)  # bitwise
    assert merged_attrs == full_attrs
    for suffix in (".csv", ".metrics.json"):
        assert (tmp_path / f"sharded{suffix}").read_bytes() == \
            (tmp_path / f"full{suffix}").read_bytes()
    assert (tmp_path / "top.png").is_file()
    top_full = result.output[result.output.index("top 4"):].splitlines()[:5]
    assert top_full == invoke_output_top(tmp_path)


def invoke_output_top(tmp_path: Path) -> list[str]:
    """The top list of the unsharded run, printed again from its file by a merge of one."""
    from lens.predict.montage import render_top, top_table

    arrays, _ = read_h5(tmp_path / "full.h5")
    top = top_table(arrays["prob"], [1], ["class0", "class1"], 4)
    for t in top:
        t["index"], t["source"] = t["row"], arrays["source"][t["row"]].decode()
    return render_top(top).splitlines()


def test_parts_that_do_not_fit_are_refused(trained, tmp_path):
    data, run = trained
    parts = tmp_path / "parts"
    for i in (0, 1):
        assert predict_shard(run, data, i, 3, parts, batch_size=64).name == f"part_{i}.h5"
    with pytest.raises(LensError, match=r"parts: missing 1 of 3 parts: part_2.h5; run those "
                                        r"shards"):
        merge_parts(parts, 3, tmp_path / "p")
    with pytest.raises(LensError, match=r"part_0.h5: is shard 0/3, expected 0/2"):
        merge_parts(parts, 2, tmp_path / "p")
    other = make_packed(tmp_path / "other.h5", n=20, n_test=0, n_folds=0, size=16)
    with pytest.raises(LensError, match=r"part_1.h5 exists but was made by another command "
                                        r"\(its data is .*train.h5, not .*other.h5\)"):
        predict_shard(run, other, 1, 3, parts)
    assert not list(tmp_path.glob("p.*"))


def test_top_k_montage(trained, tmp_path):
    from PIL import Image

    data, run = trained
    png = tmp_path / "top" / "lenses.png"
    png.parent.mkdir()
    result = invoke(str(run), str(data), "--out", str(tmp_path / "p"), "--top", "5",
                    "--montage", str(png), "--n-boot", "0")
    assert result.exit_code == 0, result.output
    arrays, _ = read_h5(tmp_path / "p.h5")
    best = np.argsort(-arrays["prob"][:, 1], kind="stable")[:5]
    lines = result.output[result.output.index("top 5 by P(class1):"):].splitlines()[1:6]
    assert [line.split()[2] for line in lines] == [arrays["source"][i].decode() for i in best]
    assert [float(line.split()[1]) for line in lines] == \
        [round(float(arrays["prob"][i, 1]), 4) for i in best]
    with Image.open(png) as im:
        assert im.format == "PNG" and im.width > 2 * im.height
    result = invoke(str(run), str(data), "--out", str(tmp_path / "p"), "--top", "3",
                    "--class", "class0", "--force", "--n-boot", "0")
    assert result.exit_code == 0 and "top 3 by P(class0):" in result.output


def test_a_run_without_model_files_uses_its_final_checkpoints(trained, tmp_path, capsys):
    data, run = trained
    old = tmp_path / "old" / "classify" / "fold_0"
    old.mkdir(parents=True)
    for name in ("result.json", "checkpoint.pt"):
        os.link(run / "classify" / "fold_0" / name, old / name)
    code, err = lens("predict", str(tmp_path / "old"), str(data), "--out", str(tmp_path / "p"),
                     "--n-boot", "0", capsys=capsys)
    assert code == 0
    assert "warning: fold(s) 1 have no trained model yet; the ensemble is the mean of folds 0" \
        in err
    arrays, attrs = read_h5(tmp_path / "p.h5")
    saved = np.load(run / "classify" / "fold_0" / "predictions.npz")
    np.testing.assert_allclose(arrays["fold_prob"][0][saved["val_index"]], saved["val_prob"],
                               atol=2e-6)
    assert json.loads(attrs["folds"]) == [0]

    result = json.loads((old / "result.json").read_text())
    result["data"]["path"] = str(tmp_path / "moved.h5")
    (old / "result.json").unlink()
    (old / "result.json").write_text(json.dumps(result))
    code, err = lens("predict", str(tmp_path / "old"), str(data), "--out",
                     str(tmp_path / "q"), capsys=capsys)
    assert code == 1
    assert "no model.pt (trained before lens wrote one), and the training file" in err
    assert "moved.h5 is not readable here" in err


@pytest.mark.parametrize("args,message", [
    (["--merge", "x", "--shards", "2", "RUN"], "--merge PRED takes no RUN, DATA, --out"),
    (["--merge", "x"], "--merge needs --shards N"),
    (["RUN", "DATA", "--out", "o", "--shards", "2"], "--shards N goes with --merge"),
    (["RUN", "DATA"], "expected RUN DATA --out PRED"),
    (["RUN", "DATA", "--out", "o", "--shard", "3"], "--shard 3: expected I/N"),
    (["RUN", "DATA", "--out", "o", "--shard", "0/2", "--top", "3"], "give them to --merge"),
    (["RUN", "DATA", "--out", "o", "--montage", "top.jpg"], "the montage is a PNG file"),
    (["RUN", "DATA", "--out", "o", "--stage", "finetune"], "no trained fold model"),
    (["EMPTY", "DATA", "--out", "o"], "no trained classify or finetune model"),
    (["RUN", "DATA", "--out", "o", "--top", "3", "--class", "lens"],
     "--class lens: not a class of the run; classes: class0, class1"),
    (["RUN", "DATA", "--out", "o", "--device", "cuda"] if not torch.cuda.is_available()
     else ["RUN", "DATA", "--out", "o", "--batch-size", "0"],
     "--device cuda: no CUDA GPU is visible" if not torch.cuda.is_available()
     else "--batch-size 0"),
    (["--merge", "nowhere/p", "--shards", "2"], "missing 2 of 2 parts: part_0.h5, part_1.h5"),
])
def test_usage_errors(trained, tmp_path, args, message):
    data, run = trained
    (tmp_path / "empty").mkdir()
    names = {"RUN": str(run), "DATA": str(data), "EMPTY": str(tmp_path / "empty"),
             "o": str(tmp_path / "o"), "nowhere/p": str(tmp_path / "nowhere" / "p")}
    result = invoke(*[names.get(a, a) for a in args])
    assert result.exit_code != 0
    assert isinstance(result.exception, LensError), result.output
    assert message in str(result.exception)
    assert not (tmp_path / "o.h5").exists()


def test_existing_predictions_are_kept_without_force(trained, tmp_path):
    data, run = trained
    assert invoke(str(run), str(data), "--out", str(tmp_path / "p"), "--n-boot", "0"
                  ).exit_code == 0
    before = (tmp_path / "p.h5").read_bytes()
    result = invoke(str(run), str(data), "--out", str(tmp_path / "p.h5"))
    assert isinstance(result.exception, LensError)
    assert "p.h5: already exists (use --force to replace it)" in str(result.exception)
    assert (tmp_path / "p.h5").read_bytes() == before
    shutil.rmtree(tmp_path / "p.h5", ignore_errors=True)
