"""Build and write a run's report: report.json, report.md and ROC figures, atomically."""

from __future__ import annotations

import datetime
from pathlib import Path

from lens import __version__, atomic
from lens.report.aggregate import stage_report
from lens.report.collect import EVAL_STAGES, StateLookup, collect, load_predictions, stages_in
from lens.report.render import render_markdown


def headline(stages: dict) -> str:
    parts = []
    for name in EVAL_STAGES:
        st = stages.get(name)
        if st and st.get("summary") and st["summary"].get("macro_auc"):
            s = st["summary"]["macro_auc"]
            parts.append(f"{name}: macro AUC {s['mean']:.4f} ± {s['std']:.4f} over {s['n']} folds")
    return "; ".join(parts)


def build_report(run: Path, lookup: StateLookup | None = None) -> tuple[dict, dict]:
    """The report dict and, per evaluation stage, its fold outcomes (for figures)."""
    stages, outcomes = {}, {}
    for stage in stages_in(run):
        outcomes[stage] = collect(run, stage, lookup)
        stages[stage] = stage_report(stage, outcomes[stage])
    report = {
        "run": str(run),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "lens_version": __version__,
        "complete": all(st["completed"] == st["n_folds"] > 0 for st in stages.values())
        and bool(stages),
        "stages": stages,
    }
    report["headline"] = headline(stages)
    return report, outcomes


def write_roc_figure(path: Path, stage: str, outcomes, class_names: list[str]) -> bool:
    """Pooled out-of-fold ROC curves per class; False when there is nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from lens.train.metrics import roc_curves

    preds = [p for p in (load_predictions(o) for o in outcomes if o.completed) if p is not None]
    if not preds:
        return False
    labels = np.concatenate([p["val_label"] for p in preds])
    probs = np.concatenate([p["val_prob"] for p in preds])
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    for name, (fpr, tpr) in roc_curves(labels, probs, class_names).items():
        ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate",
           title=f"{stage}: pooled out-of-fold ROC")
    ax.legend(loc="lower right")
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    plt.close(fig)
    return True


def write_report(run: Path, lookup: StateLookup | None = None) -> dict:
    report, outcomes = build_report(run, lookup)
    figures = []
    for stage in EVAL_STAGES:
        st = report["stages"].get(stage)
        if st and st["completed"]:
            name = f"roc_{stage}.png"
            if write_roc_figure(run / name, stage, outcomes[stage], st["class_names"]):
                figures.append(name)
    report["figures"] = figures
    atomic.write_json(run / "report.json", report)
    atomic.write_text(run / "report.md", render_markdown(report))
    return report
