"""lens.predict's pure parts: shard ranges, the batch grid, top K, class choice, the text
and CSV it renders (golden), output names and atomic writing.

    LENS_UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_predict_units.py   # accept new text
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_generate import check_golden

from lens.errors import LensError
from lens.predict.evaluate import judged_rows, render_metrics
from lens.predict.montage import ranked_classes, render_top, tile_title, top_k, top_table
from lens.predict.output import Block, Outputs, csv_header, csv_rows, writing
from lens.predict.run import grid_blocks
from lens.predict.shards import parse_shard, shard_range

GOLDEN = Path(__file__).parent / "golden"




@pytest.mark.parametrize("n,shards", [(0, 1), (0, 3), (2, 5), (10, 3), (100, 7), (1001, 16)])
def test_shard_ranges_tile_the_rows_in_order(n, shards):
    ranges = [shard_range(n, i, shards) for i in range(shards)]
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    sizes = [stop - start for start, stop in ranges]
    assert min(sizes) >= 0 and max(sizes) - min(sizes) <= 1 and sum(sizes) == n


def test_shard_range_values_and_errors():
    assert [shard_range(10, i, 3) for i in range(3)] == [(0, 4), (4, 7), (7, 10)]
    for args, message in [((10, 3, 3), "shard 3 is out of range"), ((10, -1, 3), "out of range"),
                          ((10, 0, 0), "at least 1"), ((-1, 0, 2), ">= 0")]:
        with pytest.raises(LensError, match=message):
            shard_range(*args)


def test_parse_shard():
    assert parse_shard("3/16") == (3, 16) and parse_shard(" 0 / 1 ") == (0, 1)
    for text, message in [("3", "expected I/N"), ("a/b", "expected I/N"), ("4/4", "out of range"),
                          ("-1/4", "expected I/N"), ("0/0", "at least 1")]:
        with pytest.raises(LensError, match=message):
            parse_shard(text)


def test_grid_blocks_start_and_end_on_batch_boundaries():
    # rows 5..21 of 30 with batches of 4: the grid batches 4..7 .. 20..23, 2 per block
    assert grid_blocks(5, 22, 30, 4, 2) == [(4, 12), (12, 20), (20, 24)]
    assert grid_blocks(0, 30, 30, 4, 100) == [(0, 30)]  # the last batch stops at n
    assert grid_blocks(28, 30, 30, 4, 1) == [(28, 30)]
    assert grid_blocks(7, 7, 30, 4, 1) == []


def test_top_k_is_a_stable_descending_sort():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 20, 500).astype(np.float32)  # many ties
    for k in (1, 7, 50, 500, 600):
        expected = np.lexsort((np.arange(500), -scores))[:k]
        np.testing.assert_array_equal(top_k(scores, k), expected)
    assert top_k(scores, 0).size == 0


def test_ranked_classes():
    assert ranked_classes(["lenses", "nonlenses"]) == [0]
    assert ranked_classes(["Lens", "non_lens"]) == [0]
    assert ranked_classes(["nonlens", "sub"]) == [1]  # binary: the metrics' positive class
    assert ranked_classes(["class0", "class1"]) == [1]
    assert ranked_classes(["no", "sphere", "vort"]) == [0, 1, 2]
    assert ranked_classes(["no", "sphere", "vort"], "vort") == [2]
    with pytest.raises(LensError, match="--class cdm: not a class of the run; classes: no, "):
        ranked_classes(["no", "sphere", "vort"], "cdm")


def test_judged_rows():
    label = np.array([0, 1, -1, 1, 0])
    split = np.array([0, 1, 1, 1, 0], np.int8)
    np.testing.assert_array_equal(judged_rows(label, split, training_file=False), [0, 1, 3, 4])
    np.testing.assert_array_equal(judged_rows(label, split, training_file=True), [1, 3])


def _block() -> Block:
    prob = np.array([[0.25, 0.75], [0.9, 0.1], [0.5, 0.5]], np.float32)
    fold_prob = np.stack([prob + [[-0.05, 0.05]], prob - [[-0.05, 0.05]]]).astype(np.float32)
    return Block(index=np.array([7, 8, 9]), source=["a/1.npy", "b,2.npy", "c/3.png"],
                 split=np.array([0, 1, 1], np.int8), label=np.array([1, 0, -1]),
                 prob=prob, fold_prob=fold_prob)


def test_csv_golden():
    import csv
    import io

    buffer = io.StringIO()
    table = csv.writer(buffer, lineterminator="\n")
    table.writerow(csv_header(["lens", "nonlens"], [0, 2]))
    table.writerows(csv_rows(_block(), ["lens", "nonlens"]))
    check_golden("predict.csv", buffer.getvalue())


def test_render_metrics_golden():
    def m(macro, ci):
        return {"macro_auc": macro, "micro_auc": macro, "accuracy": 0.8, "balanced_accuracy": 0.75,
                "loss": 0.41234, "macro_auc_ci": ci, "auc_per_class": {"lens": macro,
                                                                       "nonlens": macro}}

    metrics = {"n": 40, "images": "every labeled image", "n_unlabeled": 3,
               "ensemble": m(0.93456, [0.9, 0.97]), "folds": {"0": m(0.9, None),
                                                             "1": m(0.91, [0.85, 0.95])}}
    check_golden("predict_metrics.txt", render_metrics(metrics))


def test_render_top_and_tile_titles_golden():
    prob = np.array([[0.2, 0.8], [0.6, 0.4], [0.95, 0.05], [0.6, 0.4]], np.float32)
    top = top_table(prob, [0], ["lenses", "nonlenses"], 3)
    for t in top:
        t["index"], t["source"] = 100 + t["row"], f"survey/tile_{t['row']}/cutout_{t['row']}.npy"
    assert [t["row"] for t in top] == [2, 1, 3]  # ties: the earlier row first
    text = render_top(top) + "\n".join(tile_title(t) for t in top) + "\n"
    check_golden("predict_top.txt", text)


def test_outputs_names():
    assert Outputs.of("preds/test").h5 == Path("preds/test.h5")
    assert Outputs.of("preds/test.h5").csv == Path("preds/test.csv")
    assert Outputs.of("preds/test.csv").metrics == Path("preds/test.metrics.json")
    assert Outputs.of("preds/v1.2").roc == Path("preds/v1.2.roc.png")
    assert Outputs.of("preds/test").parts == Path("preds/test.parts")


def test_writing_is_atomic(tmp_path):
    attrs = {"format": "lens-predictions-1", "class_names": json.dumps(["lens", "nonlens"]),
             "folds": json.dumps([0, 2])}
    h5, csv_path = tmp_path / "p.h5", tmp_path / "p.csv"
    with pytest.raises(RuntimeError, match="3 of 4 rows written"), \
            writing(h5, csv_path, 4, attrs) as write:
        write(_block())
    with pytest.raises(ValueError, match="boom"), writing(h5, csv_path, 3, attrs) as write:
        raise ValueError("boom")
    assert list(tmp_path.iterdir()) == []  # nothing, not even a temporary file
    with writing(h5, csv_path, 3, attrs) as write:
        write(_block())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.csv", "p.h5"]
    assert csv_path.read_text() == (GOLDEN / "predict.csv").read_text()


class _Recorder(torch.nn.Module):
    """Logits from the mean pixel; remembers every batch tensor it was given."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1))
        self.seen: list[bytes] = []

    def forward(self, x):
        self.seen.append(x.contiguous().numpy().tobytes())
        m = x.mean(dim=(1, 2, 3))[:, None] * self.scale
        return torch.cat([-m, m], dim=1)


def test_every_range_runs_the_same_batch_tensors(tmp_path):
    """The grid: a shard starting or stopping inside a batch runs that whole batch, so every
    image is computed in the same batch tensor as in an unsharded run (GPU and CPU kernels
    may round differently for other batch shapes)."""
    from lens.data.h5file import read_info, write_packed
    from lens.predict.models import Ensemble, FoldModel, TrainedOn
    from lens.predict.run import infer

    images = np.random.default_rng(0).normal(size=(50, 1, 8, 8)).astype(np.float32)
    write_packed(tmp_path / "d.h5", images, np.zeros(50, np.int64), ["a", "b"])
    info = read_info(tmp_path / "d.h5")
    trained = TrainedOn(1, 8, 8, ("a", "b"), "none", "error", 0, 0, "float32", "", "")
    model = _Recorder()
    ens = Ensemble(Path("run"), "classify", [FoldModel(0, model, Path("m"), trained, {})])
    full = list(infer(ens, info, 0, 50, batch_size=8))
    batches_full = list(model.seen)
    assert len(batches_full) == 7  # 6 of 8 and the last 2
    model.seen.clear()
    parts = [list(infer(ens, info, a, b, batch_size=8)) for a, b in ((0, 13), (13, 30), (30, 50))]
    assert set(model.seen) <= set(batches_full)
    assert len(model.seen) == 9  # two batches run twice: those cut by the edges 13 and 30
    merged = np.concatenate([b.prob for p in parts for b in p])
    np.testing.assert_array_equal(merged, np.concatenate([b.prob for b in full]))
    np.testing.assert_array_equal(np.concatenate([b.index for p in parts for b in p]),
                                  np.arange(50))
