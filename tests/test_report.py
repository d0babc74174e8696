"""`lens report`: per-fold aggregation, pooled out-of-fold and ensemble metrics, missing folds."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from lens.cli import main
from lens.report.build import write_report
from lens.report.render import render_markdown

CLASSES = ["no", "sphere", "vort"]
GOLDEN = Path(__file__).parent / "golden" / "report.md"


def _fake_fold(run: Path, stage: str, fold: int, rng: np.random.Generator, test_index) -> None:
    """A completed task: predictions that are informative but imperfect."""
    d = run / stage / f"fold_{fold}"
    d.mkdir(parents=True)
    n = 30
    val_index = np.arange(fold * n, (fold + 1) * n)
    val_label = np.arange(n) % 3
    logits = rng.normal(size=(n, 3)) + 2.0 * np.eye(3)[val_label]
    val_prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    test_label = np.arange(len(test_index)) % 3
    tl = rng.normal(size=(len(test_index), 3)) + 1.5 * np.eye(3)[test_label]
    test_prob = np.exp(tl) / np.exp(tl).sum(1, keepdims=True)
    perm = rng.permutation(len(test_index))  # folds may store test rows in any order
    np.savez(d / "predictions.npz", val_index=val_index, val_label=val_label, val_prob=val_prob,
             test_index=test_index[perm], test_label=test_label[perm], test_prob=test_prob[perm])
    from lens.train.metrics import classification_metrics

    result = {
        "status": "completed", "stage": stage, "fold": fold, "class_names": CLASSES,
        "metrics": {"val": classification_metrics(val_label, val_prob, CLASSES),
                    "test": classification_metrics(test_label, test_prob, CLASSES)},
        "epochs": 3, "wall_time_s": 12.5, "restarts": 0, "data": {"n_folds": 3},
    }
    (d / "result.json").write_text(json.dumps(result))


@pytest.fixture
def run(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    test_index = np.arange(500, 560)
    for fold in (0, 1):
        _fake_fold(tmp_path, "classify", fold, rng, test_index)
    (tmp_path / "classify" / "fold_2").mkdir()  # started, never finished
    return tmp_path


def test_report_pools_out_of_fold_predictions_and_lists_missing_fold(run: Path):
    report = write_report(run)
    st = report["stages"]["classify"]
    assert st["n_folds"] == 3 and st["completed"] == 2
    assert st["missing"] == [{"fold": 2, "state": "INCOMPLETE", "log": None,
                              "task_dir": str(run / "classify" / "fold_2")}]
    # pooled OOF macro AUC equals sklearn's on the concatenated held-out predictions
    preds = [np.load(run / "classify" / f"fold_{k}" / "predictions.npz") for k in (0, 1)]
    labels = np.concatenate([p["val_label"] for p in preds])
    probs = np.concatenate([p["val_prob"] for p in preds])
    expected = roc_auc_score(labels, probs, multi_class="ovr", average="macro")
    assert st["oof"]["macro_auc"] == pytest.approx(expected)
    # the ensemble averages aligned test rows, not rows in storage order
    aligned = []
    for p in preds:
        o = np.argsort(p["test_index"])
        aligned.append(p["test_prob"][o])
    test_label = preds[0]["test_label"][np.argsort(preds[0]["test_index"])]
    ens = roc_auc_score(test_label, np.mean(aligned, 0), multi_class="ovr", average="macro")
    assert st["test_ensemble"]["macro_auc"] == pytest.approx(ens)
    macro = [r["macro_auc"] for r in st["folds"] if r["state"] == "COMPLETED"]
    assert st["summary"]["macro_auc"]["mean"] == pytest.approx(np.mean(macro))
    assert st["summary"]["macro_auc"]["std"] == pytest.approx(np.std(macro, ddof=1))
    assert not report["complete"]
    assert (run / "report.md").read_text().count("| INCOMPLETE |") == 2  # both tables
    assert (run / "roc_classify.png").stat().st_size > 1000


def test_report_cli_fails_on_missing_folds_unless_partial(run: Path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["report", str(run)])
    assert exc.value.code == 1
    assert "1 task(s) missing or failed" in capsys.readouterr().err
    main(["report", str(run), "--allow-partial"])  # returns normally: exit 0
    assert "classify: macro AUC" in capsys.readouterr().out


def test_report_uses_slurm_state_lookup_for_missing_folds(run: Path):
    report = write_report(run, lookup=lambda stage, fold: ("FAILED", "logs/x_2.err"))
    assert report["stages"]["classify"]["missing"][0]["state"] == "FAILED"
    assert report["stages"]["classify"]["missing"][0]["log"] == "logs/x_2.err"


def test_a_fold_that_recorded_its_failure_is_reported_failed_without_a_scheduler(run: Path):
    failure = run / "classify" / "fold_2" / "failed.json"
    failure.write_text(json.dumps({"status": "failed", "error": "LensError: boom"}))
    missing = write_report(run)["stages"]["classify"]["missing"]
    assert [(m["fold"], m["state"], m["log"]) for m in missing] == [(2, "FAILED", str(failure))]
    # the scheduler's word, when there is one, comes first
    missing = write_report(run, lookup=lambda s, f: ("TIMEOUT", None))["stages"]["classify"]
    assert missing["missing"][0]["state"] == "TIMEOUT"


def test_render_markdown_golden():
    report = {
        "run": "runs/demo",
        "headline": "classify: macro AUC 0.9000 ± 0.0100 over 2 folds",
        "stages": {
            "classify": {
                "n_folds": 2, "completed": 1, "class_names": ["lens", "nonlens"],
                "folds": [
                    {"fold": 0, "state": "COMPLETED", "macro_auc": 0.9, "micro_auc": 0.91,
                     "accuracy": 0.85, "auc_per_class": {"lens": 0.9, "nonlens": 0.9},
                     "test_macro_auc": 0.88, "epochs": 5, "wall_time_s": 61.04, "restarts": 1},
                    {"fold": 1, "state": "FAILED", "log": "runs/demo/logs/1.err"},
                ],
                "summary": {"macro_auc": {"mean": 0.9, "std": 0.0, "n": 1}},
                "oof": {"n": 40, "macro_auc": 0.9, "macro_auc_ci": [0.8, 0.97],
                        "micro_auc": 0.91, "accuracy": 0.85},
                "test_ensemble": None,
                "missing": [{"fold": 1, "state": "FAILED", "log": "runs/demo/logs/1.err",
                             "task_dir": "runs/demo/classify/fold_1"}],
            },
            "pretrain": {
                "n_folds": 1, "completed": 1, "class_names": [],
                "folds": [{"fold": 0, "state": "COMPLETED", "final_loss": 1.25, "epochs": 2,
                           "wall_time_s": 3.0, "restarts": 0}],
                "missing": [],
            },
        },
        "figures": ["roc_classify.png"],
    }
    text = render_markdown(report)
    if os.environ.get("LENS_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()
