"""Classification metrics on held-out softmax probabilities, with a bootstrap interval.

Conventions (so every report means the same thing):

- AUCs are one-vs-rest ROC-AUCs of the class's probability column (scikit-learn).
- ``macro_auc`` is the mean of the per-class AUCs of the classes present in ``labels``.
  A class with no image has AUC None and is left out of the mean, with a note in
  ``notes``. With fewer than two classes present no AUC is defined (all None).
- ``micro_auc`` pools every (image, class) pair: one-hot labels against probabilities.
- Two classes: the positive class is the second name (index 1). ``macro_auc`` and
  ``micro_auc`` are both its AUC, which is the usual single binary ROC-AUC;
  ``auc_per_class`` still lists both columns (equal up to rounding, since p0 = 1 - p1).
- ``balanced_accuracy`` is the mean recall over the classes present in ``labels``.
- ``macro_auc_ci`` is the 2.5/97.5 percentile interval of ``macro_auc`` over ``n_boot``
  bootstrap resamples of the images; a resample that lacks a class present in ``labels``
  is skipped (``n_boot_used`` counts the rest). None when n_boot is 0 or nothing is left.

Every value is a plain Python int, float, list, dict or None: the dict is JSON-ready.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve

from lens.errors import LensError

BOOT_CHUNK = 64  # resamples per vectorised batch: bounds memory to ~64 x n floats x a few


def _check(labels: np.ndarray, probs: np.ndarray, class_names: Sequence[str]):
    labels, probs = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    k = len(class_names)
    if k < 2:
        raise LensError(f"metrics need at least 2 class names, got {list(class_names)}")
    if labels.ndim != 1 or probs.shape != (len(labels), k) or len(labels) == 0:
        raise LensError(f"metrics need labels (N,) and probs (N, {k}) with N >= 1, got "
                        f"{labels.shape} and {probs.shape}")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= k:
        raise LensError(f"labels must be class indices 0..{k - 1}, got values "
                        f"{sorted(set(labels.tolist()))[:10]}")
    # the sum tolerance admits half-precision softmax and still catches logits
    if not np.isfinite(probs).all() or probs.min() < 0 or probs.max() > 1 \
            or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-2):
        raise LensError("probs must be softmax probabilities (finite, in [0, 1], rows "
                        "summing to 1); were logits passed?")
    return labels.astype(np.int64), probs


def weighted_auc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC-AUC of ``scores`` for each row of image weights (B, N), ties counted as 1/2.

    With integer weights this is the AUC of the sample that repeats image i weights[b, i]
    times, so bootstrap resamples need no copying. NaN where a row lacks either class.
    """
    order = np.argsort(scores, kind="stable")
    s, pos, w = scores[order], positive[order], weights[:, order]
    _, starts = np.unique(s, return_index=True)  # first index of each tie group (s sorted)
    w_pos = np.add.reduceat(w * pos, starts, axis=1)  # (B, groups)
    w_neg = np.add.reduceat(w * ~pos, starts, axis=1)
    below = np.cumsum(w_neg, axis=1) - w_neg  # negatives strictly below each group
    numerator = (w_pos * (below + 0.5 * w_neg)).sum(axis=1)
    denominator = w_pos.sum(axis=1) * w_neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / denominator, np.nan)


def _macro_from_weights(labels, probs, present, weights) -> np.ndarray:
    """(B,) macro AUC of each weighted resample; NaN where a present class is missing."""
    if len(present) == 2 and probs.shape[1] == 2:  # binary: the positive class's AUC
        return weighted_auc(probs[:, 1], labels == 1, weights)
    aucs = [weighted_auc(probs[:, c], labels == c, weights) for c in present]
    return np.mean(aucs, axis=0)


def _bootstrap_ci(labels, probs, present, n_boot: int, seed: int) -> tuple[list | None, int]:
    if n_boot == 0 or len(present) < 2:
        return None, 0
    rng = np.random.default_rng(seed)
    n = len(labels)
    values = []
    for start in range(0, n_boot, BOOT_CHUNK):
        b = min(BOOT_CHUNK, n_boot - start)
        picks = rng.integers(0, n, size=(b, n)) + n * np.arange(b)[:, None]
        counts = np.bincount(picks.ravel(), minlength=b * n).reshape(b, n).astype(np.float64)
        values.append(_macro_from_weights(labels, probs, present, counts))
    macro = np.concatenate(values)
    macro = macro[np.isfinite(macro)]
    if len(macro) == 0:
        return None, 0
    lo, hi = np.percentile(macro, [2.5, 97.5])
    return [float(lo), float(hi)], int(len(macro))


def classification_metrics(
    labels: np.ndarray,
    probs: np.ndarray,
    class_names: Sequence[str],
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Metrics of softmax ``probs`` (N, K) against integer ``labels`` (N,); see module doc."""
    labels, probs = _check(labels, probs, class_names)
    if n_boot < 0:
        raise LensError(f"n_boot must be >= 0, got {n_boot}")
    k = len(class_names)
    counts = np.bincount(labels, minlength=k)
    present = [c for c in range(k) if counts[c] > 0]
    notes = []
    missing = [class_names[c] for c in range(k) if counts[c] == 0]
    if missing:
        notes.append(f"no images of class(es) {missing}: their AUC is undefined (None) and "
                     f"macro_auc averages the {len(present)} class(es) present")

    auc_per_class: dict[str, float | None] = {}
    for c, name in enumerate(class_names):
        defined = counts[c] > 0 and len(present) >= 2
        auc_per_class[name] = float(roc_auc_score(labels == c, probs[:, c])) if defined else None
    if len(present) < 2:
        notes.append("fewer than two classes present: no ROC-AUC is defined")
        macro = micro = None
    elif k == 2:
        macro = micro = auc_per_class[class_names[1]]
    else:
        macro = float(np.mean([auc_per_class[class_names[c]] for c in present]))
        onehot = np.eye(k, dtype=bool)[labels]
        micro = float(roc_auc_score(onehot.ravel(), probs.ravel()))

    predicted = probs.argmax(axis=1)
    recalls = [float(np.mean(predicted[labels == c] == c)) for c in present]
    ci, n_used = _bootstrap_ci(labels, probs, present, n_boot, seed)
    return {
        "n": int(len(labels)),
        "n_per_class": {name: int(counts[c]) for c, name in enumerate(class_names)},
        "auc_per_class": auc_per_class,
        "macro_auc": macro,
        "micro_auc": micro,
        "accuracy": float(np.mean(predicted == labels)),
        "balanced_accuracy": float(np.mean(recalls)),
        "confusion": confusion_matrix(labels, predicted, labels=list(range(k))).tolist(),
        "macro_auc_ci": ci,
        "n_boot": int(n_boot),
        "n_boot_used": n_used,
        "notes": notes,
    }


def roc_curves(
    labels: np.ndarray, probs: np.ndarray, class_names: Sequence[str]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """One-vs-rest ROC curve (fpr, tpr) of each class present (classes absent are left out)."""
    labels, probs = _check(labels, probs, class_names)
    present = set(labels.tolist())
    if len(present) < 2:
        return {}
    curves = {}
    for c, name in enumerate(class_names):
        if c in present:
            fpr, tpr, _ = roc_curve(labels == c, probs[:, c])
            curves[name] = (fpr, tpr)
    return curves
