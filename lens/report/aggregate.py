"""Turn fold outcomes into the report's numbers: per-fold table, mean +- std, pooled
out-of-fold metrics, and test-split metrics of each fold model and of their ensemble."""

from __future__ import annotations

import numpy as np

from lens.report.collect import EVAL_STAGES, FoldOutcome, load_predictions

FOLD_COLUMNS = ("macro_auc", "micro_auc", "accuracy", "balanced_accuracy")


def fold_row(outcome: FoldOutcome) -> dict:
    row: dict = {"fold": outcome.fold, "state": outcome.state}
    if outcome.log:
        row["log"] = outcome.log
    result = outcome.result
    if result is None:
        return row
    val = (result.get("metrics") or {}).get("val") or {}
    for key in FOLD_COLUMNS:
        row[key] = val.get(key)
    row["auc_per_class"] = val.get("auc_per_class", {})
    if outcome.stage == "pretrain":
        losses = result.get("loss_curve") or []
        row["final_loss"] = result.get("final_loss", losses[-1] if losses else None)
    row["epochs"] = result.get("epochs")
    row["wall_time_s"] = result.get("wall_time_s")
    row["restarts"] = result.get("restarts", 0)
    test = (result.get("metrics") or {}).get("test")
    row["test_macro_auc"] = test.get("macro_auc") if test else None
    return row


def mean_std(values: list[float | None]) -> dict | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    arr = np.asarray(present, dtype=float)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
            "n": int(arr.size)}


def summarise(rows: list[dict], class_names: list[str]) -> dict:
    done = [r for r in rows if r["state"] == "COMPLETED"]
    summary = {key: mean_std([r.get(key) for r in done]) for key in FOLD_COLUMNS}
    for name in class_names:
        summary[f"auc_{name}"] = mean_std([r.get("auc_per_class", {}).get(name) for r in done])
    return summary


def pooled(outcomes: list[FoldOutcome], class_names: list[str]) -> tuple[dict | None, dict | None]:
    """Metrics of the pooled out-of-fold predictions, and of the test ensemble (mean probs).

    Each held-out image appears in exactly one fold's validation set, so pooling is honest.
    """
    from lens.train.metrics import classification_metrics

    preds = [p for p in (load_predictions(o) for o in outcomes if o.completed) if p is not None]
    if not preds:
        return None, None
    val_label = np.concatenate([p["val_label"] for p in preds])
    val_prob = np.concatenate([p["val_prob"] for p in preds])
    oof = classification_metrics(val_label, val_prob, class_names)
    with_test = [p for p in preds if p.get("test_index") is not None and len(p["test_index"])]
    if not with_test:
        return oof, None
    order = np.argsort(with_test[0]["test_index"])
    index = with_test[0]["test_index"][order]
    probs = []
    for p in with_test:
        o = np.argsort(p["test_index"])
        if not np.array_equal(p["test_index"][o], index):
            raise ValueError("fold models predicted different test images")
        probs.append(p["test_prob"][o])
    ensemble = classification_metrics(
        with_test[0]["test_label"][order], np.mean(probs, axis=0), class_names
    )
    ensemble["n_models"] = len(with_test)
    return oof, ensemble


def stage_report(stage: str, outcomes: list[FoldOutcome]) -> dict:
    rows = [fold_row(o) for o in outcomes]
    results = [o.result for o in outcomes if o.completed]
    class_names = list(results[0].get("class_names", [])) if results else []
    report: dict = {
        "n_folds": len(outcomes),
        "completed": sum(o.completed for o in outcomes),
        "class_names": class_names,
        "folds": rows,
        "missing": [
            {"fold": o.fold, "state": o.state, "log": o.log, "task_dir": str(o.task_dir)}
            for o in outcomes
            if not o.completed
        ],
    }
    if stage in EVAL_STAGES and results:
        report["summary"] = summarise(rows, class_names)
        report["oof"], report["test_ensemble"] = pooled(outcomes, class_names)
    return report
