"""`lens demo`: the whole path (simulate, pack, classify and pretrain -> finetune on 5 folds
with the local executor, report) at --quick size, and its guard against mixing settings."""

from __future__ import annotations

import json

import pytest
from test_submit import lens

from lens.commands.demo import QUICK, headlines


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert lens("demo", "--out", str(out), "--quick") == 0, capsys.readouterr()
    text = capsys.readouterr().out
    report = json.loads((out / "run" / "report.json").read_text())
    assert report["complete"]
    for stage in ("classify", "pretrain", "finetune"):
        assert report["stages"][stage]["completed"] == report["stages"][stage]["n_folds"] == 5
    n_train = 2 * QUICK.train_per_class
    assert report["stages"]["classify"]["oof"]["n"] == n_train
    assert report["stages"]["finetune"]["test_ensemble"]["n"] == 2 * QUICK.test_per_class
    assert f"report: {out / 'run' / 'report.md'}" in text  # tmp_path: not below the cwd
    assert "classify: ROC-AUC" in text and "finetune: ROC-AUC" in text
    run = json.loads((out / "run" / "run.json").read_text())
    assert [s["experiment"] for s in run["submissions"]] == ["classify", "all"]
    assert {s["executor"] for s in run["submissions"]} == {"local"}
    # Again: everything is reused, nothing is trained twice.
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "run").glob("*/fold_*/result.json")}
    assert lens("demo", "--out", str(out), "--quick") == 0
    assert "nothing" not in capsys.readouterr().err
    assert mtimes == {p: p.stat().st_mtime_ns for p in mtimes}


def test_a_demo_folder_keeps_its_settings(tmp_path, capsys):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "demo.json").write_text(json.dumps({"size": 999}))
    assert lens("demo", "--out", str(out), "--quick") == 1
    assert "other settings" in capsys.readouterr().err
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert lens("demo", "--out", str(other)) == 1
    assert "is not a lens demo folder" in capsys.readouterr().err


def test_headlines_name_folds_pooled_and_test_auc():
    report = {"stages": {"finetune": {
        "summary": {"macro_auc": {"mean": 0.91234, "std": 0.0251, "n": 5}},
        "oof": {"macro_auc": 0.9034}, "test_ensemble": {"n": 200, "n_models": 5,
                                                        "macro_auc": 0.9321}}}}
    assert headlines(report) == [
        "finetune: ROC-AUC 0.912 ± 0.025 over 5 folds, pooled out-of-fold 0.903, "
        "test split (200 images, 5-model ensemble) 0.932"]

