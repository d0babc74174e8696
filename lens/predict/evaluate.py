"""Metrics of predictions on labeled images: the ensemble and each fold model, as training.

The images judged are the labeled ones; when the data is the run's own training file,
only its test split (the fold models trained on the train split).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lens.data.h5file import TEST

SEED = 0  # of the bootstrap interval, as training's default


def judged_rows(label: np.ndarray, split: np.ndarray, training_file: bool) -> np.ndarray:
    """Rows whose labels are known and that no fold model trained on (as far as we know)."""
    keep = label >= 0
    if training_file:
        keep &= split == TEST
    return np.flatnonzero(keep)


def compute_metrics(label: np.ndarray, prob: np.ndarray, fold_prob: np.ndarray,
                    class_names: list[str], folds: list[int], *, training_file: bool,
                    n_unlabeled: int, n_boot: int = 1000) -> dict[str, Any]:
    """classification_metrics (+ loss) of the ensemble and of each fold model.

    ``label``, ``prob`` (n, K) and ``fold_prob`` (F, n, K) are the judged rows only.
    """
    from lens.train.evaluate import metrics

    return {
        "images": ("test split of the run's training file" if training_file
                   else "every labeled image"),
        "n": int(label.size),
        "n_unlabeled": int(n_unlabeled),
        "class_names": list(class_names),
        "ensemble": metrics(label, prob, tuple(class_names), n_boot=n_boot, seed=SEED),
        "folds": {str(k): metrics(label, fold_prob[f], tuple(class_names), n_boot=n_boot,
                                  seed=SEED)
                  for f, k in enumerate(folds)},
    }


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def render_metrics(m: dict[str, Any]) -> str:
    """The metrics as a plain-text table (pure: golden-tested)."""
    rows = [("ensemble", m["ensemble"])] + [(f"fold {k}", v) for k, v in m["folds"].items()]
    header = ["model", "macro AUC", "95% CI", "micro AUC", "accuracy", "bal. accuracy",
              "loss"]
    table = [header]
    for name, v in rows:
        ci = v.get("macro_auc_ci")
        table.append([name, _num(v["macro_auc"]),
                      "—" if not ci else f"{ci[0]:.4f}–{ci[1]:.4f}", _num(v["micro_auc"]),
                      _num(v["accuracy"]), _num(v["balanced_accuracy"]), _num(v.get("loss"))])
    widths = [max(len(r[c]) for r in table) for c in range(len(header))]
    lines = [f"metrics on {m['n']} images ({m['images']}"
             + (f"; {m['n_unlabeled']} unlabeled left out" if m["n_unlabeled"] else "") + ")"]
    for r in table:
        lines.append("  ".join(cell.ljust(w) if c == 0 else cell.rjust(w)
                               for c, (cell, w) in enumerate(zip(r, widths, strict=True))))
    per_class = m["ensemble"]["auc_per_class"]
    lines.append("ensemble AUC per class: " + ", ".join(f"{c} {_num(a)}"
                                                        for c, a in per_class.items()))
    return "\n".join(lines) + "\n"


def write_roc(path: Path, label: np.ndarray, prob: np.ndarray, fold_prob: np.ndarray,
              class_names: list[str], folds: list[int], classes: list[int]) -> bool:
    """ROC curves of ``classes`` (one panel each): the ensemble bold, each fold model thin.
    False (and no file) when no curve is defined."""
    import matplotlib

    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt

    from lens.atomic import write_bytes
    from lens.train.metrics import roc_curves

    ensemble = roc_curves(label, prob, class_names)
    shown = [c for c in classes if class_names[c] in ensemble]
    if not shown:
        return False
    per_fold = [roc_curves(label, fold_prob[f], class_names) for f in range(len(folds))]
    fig, axes = plt.subplots(1, len(shown), figsize=(4.2 * len(shown), 4.2), squeeze=False)
    for ax, c in zip(axes[0], shown, strict=True):
        name = class_names[c]
        for k, curves in zip(folds, per_fold, strict=True):
            fpr, tpr = curves[name]
            ax.plot(fpr, tpr, lw=0.8, alpha=0.7, label=f"fold {k}")
        fpr, tpr = ensemble[name]
        ax.plot(fpr, tpr, lw=2.2, color="black", label="ensemble")
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set(xlabel="false positive rate", ylabel="true positive rate",
               title=f"{name} vs rest" if len(class_names) > 2 else f"positive class: {name}",
               xlim=(0, 1), ylim=(0, 1.01))
        ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    write_bytes(path, buffer.getvalue())
    return True
