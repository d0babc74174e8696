"""`lens pack` through the CLI, and the summary it prints (golden file)."""

from __future__ import annotations

import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

import lens.commands.pack as pack_command
from lens.cli import app, main
from lens.data.h5file import read_index, read_info
from lens.data.pack import PackReport
from lens.data.summary import render_pack
from lens.errors import LensError

GOLDEN = Path(__file__).parent / "golden" / "pack_summary.txt"


def dataset(root: Path) -> None:
    rng = np.random.default_rng(0)
    for name in ["train_lenses/0", "train_lenses/1", "train_non/0", "train_non/1",
                 "train_non/2", "test_lenses/0", "test_non/0"]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        np.save(root / f"{name}.npy", rng.random((3, 6, 6)).astype(np.float32))


def test_pack_cli_writes_and_summarises(tmp_path):
    dataset(tmp_path / "ds")
    out = tmp_path / "o.h5"
    result = CliRunner().invoke(
        app, ["pack", str(tmp_path / "ds"), str(out), "--folds", "2", "--seed", "3",
              "--normalize", "minmax", "--dtype", "float16"],
    )
    assert result.exit_code == 0, result.output
    assert "packed 7 images of shape (3, 6, 6) float16" in result.output
    assert "split+class folders test_lenses, test_non, train_lenses, train_non" in result.output
    assert "leakage: no image appears in both train and test" in result.output
    info = read_info(out)
    assert info.class_names == ("lenses", "non") and info.n_folds == 2 and info.fold_seed == 3
    assert info.command == (f"lens pack {tmp_path}/ds {out} --normalize minmax --dtype float16 "
                            "--folds 2 --seed 3")
    assert sorted(read_index(out).fold.tolist()) == [-1, -1, 0, 0, 0, 1, 1]


def test_pack_cli_error_is_a_clean_nonzero_exit(tmp_path, capsys):
    dataset(tmp_path / "ds")
    (tmp_path / "ds/train_non/bad.npy").write_bytes(b"nope")
    out = tmp_path / "o.h5"
    result = CliRunner().invoke(app, ["pack", str(tmp_path / "ds"), str(out)])
    assert result.exit_code != 0
    assert isinstance(result.exception, LensError)
    assert f"{tmp_path}/ds/train_non/bad.npy" in str(result.exception)
    with pytest.raises(SystemExit) as exit_info:  # the console entry point
        main(["pack", str(tmp_path / "ds"), str(out)])
    assert exit_info.value.code == 1
    assert "error: unreadable, corrupt or not an image (1)" in capsys.readouterr().err
    assert not out.exists()
    result = CliRunner().invoke(app, ["pack", str(tmp_path / "ds")])
    assert result.exit_code != 0 and "at least one SRC" in str(result.exception)


def test_pack_cli_label_rules(tmp_path):
    for name in ["1_hst", "2_hst", "nl_3_hst", "nl_4_hst"]:
        (tmp_path / "hst").mkdir(exist_ok=True)
        np.save(tmp_path / "hst" / f"{name}.npy", np.ones((4, 4)) * len(name))
    out = tmp_path / "hst.h5"
    result = CliRunner().invoke(
        app, ["pack", str(tmp_path / "hst"), str(out), "--label", "nonlens=^nl_",
              "--default-label", "lens"],
    )
    assert result.exit_code == 0, result.output
    assert read_info(out).class_names == ("lens", "nonlens")
    assert read_index(out).labels.tolist() == [0, 0, 1, 1]
    assert "--label 'nonlens=^nl_' --default-label lens" in read_info(out).command


def test_pack_help_has_examples():
    result = CliRunner().invoke(app, ["pack", "--help"])
    assert result.exit_code == 0
    assert "Examples:" in result.output and "--folds 5" in result.output


def test_command_as_typed_from_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/usr/bin/lens", "pack", "my data", "o.h5", "--folds", "5"])
    assert pack_command._typed_command() == "lens pack 'my data' o.h5 --folds 5"
    monkeypatch.setattr(sys, "argv", ["pytest", "-q"])
    assert pack_command._typed_command() == ""


def test_pack_cli_force(tmp_path):
    dataset(tmp_path / "ds")
    out = tmp_path / "o.h5"
    out.write_bytes(b"old")
    args = ["pack", str(tmp_path / "ds"), str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0 and "--force" in str(result.exception)
    assert CliRunner().invoke(app, [*args, "--force"]).exit_code == 0
    with h5py.File(out) as f:
        assert f["images"].shape == (7, 3, 6, 6)


def test_summary_golden():
    report = PackReport(
        out="data/lenses.h5",
        shape=(3, 64, 64),
        dtype="float32",
        class_names=("lenses", "nonlenses"),
        rows=(
            {"class": "lenses", "train": 1730, "folds": [577, 577, 576], "test": 195,
             "total": 1925},
            {"class": "nonlenses", "train": 28675, "folds": [9558, 9558, 9559], "test": 19455,
             "total": 48130},
            {"class": "total", "train": 30405, "folds": [10135, 10135, 10135], "test": 19650,
             "total": 50055},
        ),
        n_folds=3,
        seed=0,
        layouts=("lensfinding: split+class folders test_lenses, test_nonlenses, train_lenses, "
                 "train_nonlenses",),
        skipped=("lensfinding/README.md",),
        nan_replaced=(),
        leaks=(("train_nonlenses/17.npy", "test_nonlenses/3.npy"),),
        duplicates=2,
        seconds=12.5,
    )
    text = render_pack(report)
    if not GOLDEN.exists():  # first run writes it; review and commit it
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()


def test_console_exit_codes_for_interrupt_and_usage_errors(tmp_path, monkeypatch, capsys):
    dataset(tmp_path / "ds")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("lens.data.pack.pack", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        main(["pack", str(tmp_path / "ds"), str(tmp_path / "o.h5")])
    assert exit_info.value.code == 130 and "interrupted" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["pack", str(tmp_path / "ds"), str(tmp_path / "o.h5"), "--normalize", "bogus"])
    assert exit_info.value.code == 2 and "--normalize" in capsys.readouterr().err
