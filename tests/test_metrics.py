import json

import numpy as np
import pytest
from sklearn.metrics import (
    balanced_accuracy_score,
    confusion_matrix,
    roc_auc_score,
    roc_curve,
)
from sklearn.preprocessing import label_binarize

from lens.errors import LensError
from lens.train.metrics import classification_metrics, roc_curves, weighted_auc

NAMES3 = ["no", "sphere", "vort"]


def softmax_data(n: int, k: int, seed: int = 0, signal: float = 1.5):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + signal * np.eye(k)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return labels, probs


def assert_plain(obj):
    """Only JSON-native Python types, all the way down."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            assert isinstance(key, str)
            assert_plain(value)
    elif isinstance(obj, list):
        for value in obj:
            assert_plain(value)
    else:
        assert obj is None or type(obj) in (int, float, str, bool), type(obj)


def test_three_classes_match_sklearn():
    labels, probs = softmax_data(300, 3)
    m = classification_metrics(labels, probs, NAMES3, n_boot=100)
    for c, name in enumerate(NAMES3):
        assert m["auc_per_class"][name] == pytest.approx(roc_auc_score(labels == c, probs[:, c]))
    assert m["macro_auc"] == pytest.approx(roc_auc_score(labels, probs, multi_class="ovr"))
    micro = roc_auc_score(label_binarize(labels, classes=[0, 1, 2]), probs, average="micro")
    assert m["micro_auc"] == pytest.approx(micro)
    assert m["accuracy"] == pytest.approx(np.mean(probs.argmax(1) == labels))
    assert m["balanced_accuracy"] == pytest.approx(
        balanced_accuracy_score(labels, probs.argmax(1)))
    assert m["confusion"] == confusion_matrix(labels, probs.argmax(1)).tolist()
    assert m["n"] == 300 and sum(m["n_per_class"].values()) == 300
    lo, hi = m["macro_auc_ci"]
    assert lo < m["macro_auc"] < hi and hi - lo < 0.2
    assert_plain(m)
    json.dumps(m)


def test_binary_hand_computed():
    labels = np.array([0, 0, 1, 1])
    p1 = np.array([0.1, 0.4, 0.35, 0.8])
    m = classification_metrics(labels, np.stack([1 - p1, p1], 1), ["non", "lens"], n_boot=0)
    # positive pairs ranked correctly: (0.35>0.1), (0.8>0.1), (0.8>0.4); wrong: (0.35<0.4)
    assert m["macro_auc"] == m["micro_auc"] == pytest.approx(0.75)
    assert m["auc_per_class"] == {"non": pytest.approx(0.75), "lens": pytest.approx(0.75)}
    assert m["confusion"] == [[2, 0], [1, 1]]
    assert m["accuracy"] == 0.75 and m["balanced_accuracy"] == 0.75
    assert m["macro_auc_ci"] is None and m["n_boot_used"] == 0


def test_constant_predictor_gives_half_and_perfect_gives_one():
    labels, _ = softmax_data(90, 3)
    constant = classification_metrics(labels, np.full((90, 3), 1 / 3), NAMES3, n_boot=50)
    assert constant["macro_auc"] == constant["micro_auc"] == 0.5
    assert all(v == 0.5 for v in constant["auc_per_class"].values())
    assert constant["macro_auc_ci"] == [0.5, 0.5]
    perfect = classification_metrics(labels, np.eye(3)[labels], NAMES3, n_boot=50)
    assert perfect["macro_auc"] == perfect["micro_auc"] == perfect["accuracy"] == 1.0
    assert perfect["macro_auc_ci"] == [1.0, 1.0]


def test_bootstrap_matches_a_plain_sklearn_loop():
    labels, probs = softmax_data(40, 3, seed=4, signal=0.8)
    m = classification_metrics(labels, probs, NAMES3, n_boot=50, seed=7)
    rng = np.random.default_rng(7)
    picks = rng.integers(0, 40, size=(50, 40))  # one chunk: the same draws
    values = []
    for idx in picks:
        if len(set(labels[idx])) < 3:
            continue  # a resample lacking a class is skipped
        values.append(roc_auc_score(labels[idx], probs[idx], multi_class="ovr"))
    assert m["n_boot_used"] == len(values) and 0 < len(values) <= 50
    assert m["macro_auc_ci"] == pytest.approx(np.percentile(values, [2.5, 97.5]).tolist())
    again = classification_metrics(labels, probs, NAMES3, n_boot=50, seed=7)
    assert again["macro_auc_ci"] == m["macro_auc_ci"]
    other = classification_metrics(labels, probs, NAMES3, n_boot=50, seed=8)
    assert other["macro_auc_ci"] != m["macro_auc_ci"]


def test_weighted_auc_equals_auc_of_repeated_sample():
    rng = np.random.default_rng(0)
    scores = np.round(rng.random(30), 1)  # many ties
    positive = rng.random(30) < 0.4
    weights = rng.integers(0, 4, size=(5, 30)).astype(float)
    got = weighted_auc(scores, positive, weights)
    for b in range(5):
        idx = np.repeat(np.arange(30), weights[b].astype(int))
        assert got[b] == pytest.approx(roc_auc_score(positive[idx], scores[idx]))
    assert np.isnan(weighted_auc(scores, np.zeros(30, bool), np.ones((1, 30))))[0]


def test_absent_class_gets_none_and_a_note():
    labels, probs = softmax_data(120, 3, seed=2)
    keep = labels != 2
    labels, probs = labels[keep], probs[keep]
    m = classification_metrics(labels, probs, NAMES3, n_boot=40)
    assert m["auc_per_class"]["vort"] is None
    present = [roc_auc_score(labels == c, probs[:, c]) for c in (0, 1)]
    assert m["macro_auc"] == pytest.approx(np.mean(present))
    assert m["balanced_accuracy"] == pytest.approx(
        np.mean([np.mean(probs[labels == c].argmax(1) == c) for c in (0, 1)]))
    assert m["n_per_class"]["vort"] == 0 and "vort" in m["notes"][0]
    assert m["macro_auc_ci"] is not None
    json.dumps(m)


def test_single_class_has_no_auc():
    m = classification_metrics(np.zeros(5, int), np.full((5, 2), 0.5), ["a", "b"], n_boot=10)
    assert m["macro_auc"] is None and m["micro_auc"] is None and m["macro_auc_ci"] is None
    assert m["auc_per_class"] == {"a": None, "b": None}
    assert m["accuracy"] == 1.0


def test_binary_bootstrap_is_the_positive_class_auc():
    labels, probs = softmax_data(200, 2, seed=5)
    m = classification_metrics(labels, probs, ["non", "lens"], n_boot=64, seed=1)
    assert m["macro_auc"] == pytest.approx(roc_auc_score(labels, probs[:, 1]))
    picks = np.random.default_rng(1).integers(0, 200, size=(64, 200))
    values = [roc_auc_score(labels[i], probs[i, 1]) for i in picks]
    assert m["macro_auc_ci"] == pytest.approx(np.percentile(values, [2.5, 97.5]).tolist())


def test_bad_inputs_are_clear_errors():
    labels, probs = softmax_data(10, 3)
    with pytest.raises(LensError, match="logits"):
        classification_metrics(labels, np.log(probs), NAMES3)
    with pytest.raises(LensError, match=r"probs \(N, 2\)"):
        classification_metrics(labels, probs, ["a", "b"])
    with pytest.raises(LensError, match="class indices 0..2"):
        classification_metrics(labels + 3, probs, NAMES3)
    with pytest.raises(LensError, match="n_boot"):
        classification_metrics(labels, probs, NAMES3, n_boot=-1)


def test_roc_curves_match_sklearn_and_skip_absent_classes():
    labels, probs = softmax_data(60, 3, seed=3)
    curves = roc_curves(labels, probs, NAMES3)
    for c, name in enumerate(NAMES3):
        fpr, tpr, _ = roc_curve(labels == c, probs[:, c])
        np.testing.assert_allclose(curves[name][0], fpr)
        np.testing.assert_allclose(curves[name][1], tpr)
    keep = labels != 1
    assert set(roc_curves(labels[keep], probs[keep], NAMES3)) == {"no", "vort"}
