"""Folder layouts: which files are images, and the split and class of each."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lens.data.h5file import TEST, TRAIN, UNLABELED
from lens.data.layouts import LabelRules, discover
from lens.errors import LensError


def touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, np.zeros((2, 2))) if name.endswith(".npy") else path.write_bytes(b"x")


def table(found) -> list[tuple[str, int, str | None]]:
    return [(e.source, e.split, e.class_name) for e in found.entries]


def test_class_folders_sorted_names_all_train(tmp_path):
    touch(tmp_path, "vort/2.npy", "vort/10.npy", "no/1.npy", "sphere/a/b.npy")
    found = discover([tmp_path])
    assert found.class_names == ("no", "sphere", "vort")
    assert table(found) == [
        ("no/1.npy", TRAIN, "no"),
        ("sphere/a/b.npy", TRAIN, "sphere"),  # nested folders inside a class folder count
        ("vort/10.npy", TRAIN, "vort"),
        ("vort/2.npy", TRAIN, "vort"),
    ]
    assert found.labels().tolist() == [0, 1, 2, 2]
    assert found.splits().tolist() == [0, 0, 0, 0]
    assert found.entries[0].path == str(tmp_path / "no/1.npy")


@pytest.mark.parametrize("test_name", ["val", "test", "VAL"])
def test_split_folders_val_and_test_mean_test(tmp_path, test_name):
    touch(tmp_path, "train/cdm/1.npy", "train/axion/1.npy", f"{test_name}/cdm/9.npy",
          f"{test_name}/axion/9.npy")
    found = discover([tmp_path])
    assert found.class_names == ("axion", "cdm")
    assert sorted(table(found)) == table(found)  # sorted by source
    assert {e.source: (e.split, e.class_name) for e in found.entries} == {
        "train/axion/1.npy": (TRAIN, "axion"),
        "train/cdm/1.npy": (TRAIN, "cdm"),
        f"{test_name}/axion/9.npy": (TEST, "axion"),
        f"{test_name}/cdm/9.npy": (TEST, "cdm"),
    }


def test_split_class_folder_names(tmp_path):
    touch(tmp_path, "train_lenses/1.npy", "train_nonlenses/2.npy", "test_lenses/3.npy",
          "test_nonlenses/4.png")
    found = discover([tmp_path])
    assert found.class_names == ("lenses", "nonlenses")
    assert table(found) == [
        ("test_lenses/3.npy", TEST, "lenses"),
        ("test_nonlenses/4.png", TEST, "nonlenses"),
        ("train_lenses/1.npy", TRAIN, "lenses"),
        ("train_nonlenses/2.npy", TRAIN, "nonlenses"),
    ]


def test_flat_folder_labeled_by_rules_first_match_wins(tmp_path):
    touch(tmp_path, "1_hst.npy", "nl_2_hst.npy", "nl_x_3.npy", "y_3.npy", "README.txt")
    rules = LabelRules.parse(["nonlens=^nl_", "odd=_3"], default="lens")
    found = discover([tmp_path], rules)
    assert found.class_names == ("lens", "nonlens", "odd")
    assert [(e.source, e.class_name) for e in found.entries] == [
        ("1_hst.npy", "lens"), ("nl_2_hst.npy", "nonlens"), ("nl_x_3.npy", "nonlens"),
        ("y_3.npy", "odd"),
    ]
    assert found.skipped == (str(tmp_path / "README.txt"),)


def test_flat_folder_without_rules_is_unlabeled(tmp_path):
    touch(tmp_path, "b.npy", "a.png", ".hidden.npy", ".DS_Store")
    found = discover([tmp_path])
    assert found.class_names == ()
    assert table(found) == [("a.png", TRAIN, None), ("b.npy", TRAIN, None)]
    assert found.labels().tolist() == [UNLABELED, UNLABELED]


def test_flat_split_folders(tmp_path):
    touch(tmp_path, "train/1.npy", "test/2.npy")
    found = discover([tmp_path])
    assert table(found) == [("test/2.npy", TEST, None), ("train/1.npy", TRAIN, None)]


def test_several_srcs_prefixed_by_path_from_common_parent(tmp_path):
    touch(tmp_path, "shard_0/dataset/train/no/1.npy", "shard_0/dataset/train/yes/1.npy",
          "shard_1/dataset/train/no/1.npy", "shard_1/dataset/val/yes/1.npy")
    found = discover([tmp_path / "shard_1/dataset", tmp_path / "shard_0/dataset"])
    assert [e.source for e in found.entries] == [
        "shard_0/dataset/train/no/1.npy", "shard_0/dataset/train/yes/1.npy",
        "shard_1/dataset/train/no/1.npy", "shard_1/dataset/val/yes/1.npy",
    ]
    assert found.class_names == ("no", "yes")


def error_of(*args, **kwargs) -> str:
    with pytest.raises(LensError) as info:
        discover(*args, **kwargs)
    return str(info.value)


def test_empty_class_folder_is_named(tmp_path):
    touch(tmp_path, "no/1.npy", "sphere/notes.txt")
    (tmp_path / "vort").mkdir()
    msg = error_of([tmp_path])
    assert "empty class folder" in msg
    assert str(tmp_path / "sphere") in msg and str(tmp_path / "vort") in msg


def test_only_one_class_is_an_error(tmp_path):
    touch(tmp_path, "lenses/1.npy", "lenses/2.npy")
    assert "only one class" in error_of([tmp_path])


def test_unmatched_file_without_default_is_named(tmp_path):
    touch(tmp_path, "nl_1.npy", "lens_2.npy", "other_3.npy")
    msg = error_of([tmp_path], LabelRules.parse(["nonlens=^nl_", "lens=^lens_"]))
    assert "matches no --label rule" in msg and str(tmp_path / "other_3.npy") in msg


def test_rule_class_matching_nothing_is_empty(tmp_path):
    touch(tmp_path, "nl_1.npy", "2.npy", "3.npy")
    msg = error_of([tmp_path], LabelRules.parse(["nonlens=^nl_", "arc=^arc_"], "lens"))
    assert "empty class" in msg and "arc" in msg


def test_rules_need_a_flat_folder(tmp_path):
    touch(tmp_path, "a/1.npy", "b/1.npy")
    assert "no SRC (or split folder) is a flat folder" in error_of(
        [tmp_path], LabelRules.parse(["a=x"])
    )


@pytest.mark.parametrize("spec", ["nonlens", "=^nl_", "x=("])
def test_bad_label_rule(spec):
    with pytest.raises(LensError, match="--label"):
        LabelRules.parse([spec])


def test_mixed_layouts_are_errors(tmp_path):
    touch(tmp_path, "a/x/1.npy", "a/2.npy")  # a split-less folder with files and folders
    touch(tmp_path, "b/train/no/1.npy", "b/extra/1.npy")
    assert "mixes image files and subfolders" in error_of([tmp_path / "a"])
    msg = error_of([tmp_path / "b"])
    assert "mixes split folders with other folders" in msg and "extra" in msg


def test_src_problems(tmp_path):
    touch(tmp_path, "d/a/1.npy", "d/b/1.npy", "f.npy")
    assert "SRC not found" in error_of([tmp_path / "nope"])
    assert "SRC is not a folder" in error_of([tmp_path / "f.npy"])
    assert "SRC given twice" in error_of([tmp_path / "d", tmp_path / "d/../d"])
    assert "SRC inside another SRC" in error_of([tmp_path / "d", tmp_path / "d/a"])
    (tmp_path / "empty").mkdir()
    assert "no images" in error_of([tmp_path / "empty"])
