"""`lens simulate` end to end: layout, determinism across workers and shards, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lens.cli import app, main
from lens.errors import LensError
from lens.simulate.presets import PRESETS
from lens.simulate.run import (
    MANIFEST,
    SimulationSpec,
    parse_shard,
    plan,
    run,
    shard_range,
)

SIZE = 32  # small images keep these tests fast; the physics tests use 150


def spec(out: Path, **kw) -> SimulationSpec:
    args = dict(out=out, dataset="substructure", preset="model-i", params=PRESETS["model-i"],
                per_class=3, size=SIZE, seed=11)  # fmt: skip
    args.update(kw)
    return SimulationSpec(**args)


def files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*.npy"))
        if not p.name.startswith(".")
    }


def invoke(*args: str):
    return CliRunner().invoke(app, ["simulate", *args])


# --- sharding ---------------------------------------------------------------------------


@pytest.mark.parametrize(("per_class", "count"), [(10, 3), (7, 7), (2, 5), (100, 8)])
def test_shards_cover_every_index_once_in_contiguous_ranges(per_class: int, count: int) -> None:
    ranges = [shard_range(per_class, i, count) for i in range(count)]
    assert [k for r in ranges for k in r] == list(range(per_class))
    assert all(r.step == 1 for r in ranges)
    sizes = [len(r) for r in ranges]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("text", ["3/2", "2/2", "-1/2", "0/0", "a/b", "1", "1/2/3"])
def test_bad_shard_is_a_clear_error(text: str) -> None:
    with pytest.raises(LensError, match="--shard"):
        parse_shard(text)
    assert parse_shard("1/2") == (1, 2)


def test_plan_interleaves_classes(tmp_path: Path) -> None:
    assert plan(spec(tmp_path), (0, 1))[:4] == [(0, 0), (1, 0), (2, 0), (0, 1)]
    assert plan(spec(tmp_path), (1, 3)) == [(0, 1), (1, 1), (2, 1)]


# --- layout and determinism ----------------------------------------------------------


def test_layout_dtype_shape_and_normalisation(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    result = invoke(str(out), "--per-class", "3", "--size", str(SIZE), "--seed", "11")
    assert result.exit_code == 0, result.output
    assert "wrote 9 images" in result.output
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "no", "sphere", "vort"]
    for name in ("no", "sphere", "vort"):
        assert sorted(p.name for p in (out / name).iterdir()) == ["0.npy", "1.npy", "2.npy"]
        for k in range(3):
            image = np.load(out / name / f"{k}.npy")
            assert image.dtype == np.float64 and image.shape == (1, SIZE, SIZE)
            assert image.min() == 0.0 and image.max() == 1.0
            assert len(np.unique(image)) > 20  # integer counts, then scaled: many levels
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["seed"] == 11 and manifest["params"]["lens_mass"] == 1e12
    assert manifest["pixel_scale_arcsec"] == pytest.approx(7.5 / SIZE)


def test_same_images_whatever_the_workers_and_shards(tmp_path: Path) -> None:
    serial, parallel, sharded = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert run(spec(serial, per_class=4), workers=1) == 12
    assert run(spec(parallel, per_class=4), workers=2) == 12
    for i in range(3):
        run(spec(sharded, per_class=4), shard=(i, 3))
    reference = files(serial)
    assert len(reference) == 12
    assert files(parallel) == reference
    assert files(sharded) == reference
    # a different seed changes every image
    other = tmp_path / "d"
    run(spec(other, per_class=4, seed=12))
    assert all(files(other)[k] != v for k, v in reference.items())


def test_a_shard_makes_only_its_share(tmp_path: Path) -> None:
    out = tmp_path / "s"
    result = invoke(str(out), "-n", "5", "--size", str(SIZE), "--shard", "1/2")
    assert result.exit_code == 0, result.output
    expected = [f"{c}/{k}.npy" for c in ("no", "sphere", "vort") for k in (2, 3, 4)]
    assert sorted(files(out)) == expected


def test_unlabeled_layout_holds_the_same_images(tmp_path: Path) -> None:
    labeled, flat = tmp_path / "l", tmp_path / "u"
    run(spec(labeled))
    run(spec(flat, unlabeled=True))
    flat_files = files(flat)
    assert sorted(flat_files) == sorted(f"{g}.npy" for g in range(9))
    assert all(p.is_file() for p in flat.iterdir())  # no class folders
    classes = ("no", "sphere", "vort")
    for k in range(3):
        for c, name in enumerate(classes):
            assert flat_files[f"{k * 3 + c}.npy"] == files(labeled)[f"{name}/{k}.npy"]


def test_lensfinding_dataset(tmp_path: Path) -> None:
    out = tmp_path / "lf"
    result = invoke(str(out), "--dataset", "lensfinding", "-n", "2", "--size", str(SIZE))
    assert result.exit_code == 0, result.output
    assert sorted(files(out)) == ["lens/0.npy", "lens/1.npy", "nonlens/0.npy", "nonlens/1.npy"]


def test_resume_keeps_existing_images_and_rerun_rewrites_them(tmp_path: Path) -> None:
    out = tmp_path / "r"
    run(spec(out))
    original = (out / "no" / "0.npy").read_bytes()
    np.save(out / "no" / "0.npy", np.zeros((1, SIZE, SIZE)))
    marker = (out / "no" / "0.npy").read_bytes()
    run(spec(out), resume=True)
    assert (out / "no" / "0.npy").read_bytes() == marker
    run(spec(out))
    assert (out / "no" / "0.npy").read_bytes() == original
    assert not [p for p in out.rglob(".*.tmp-*")]  # no temporary files left behind


def test_params_file_changes_the_physics(tmp_path: Path) -> None:
    toml = tmp_path / "p.toml"
    toml.write_text("lens_mass = 4e11\n")
    a, b = tmp_path / "a", tmp_path / "b"
    assert invoke(str(a), "-n", "1", "--size", str(SIZE)).exit_code == 0
    result = invoke(str(b), "-n", "1", "--size", str(SIZE), "--params", str(toml))
    assert result.exit_code == 0, result.output
    assert files(a)["no/0.npy"] != files(b)["no/0.npy"]
    assert json.loads((b / MANIFEST).read_text())["params"]["lens_mass"] == 4e11


# --- errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--shard", "3/2"], "--shard 3/2"),
        (["--per-class", "0"], "--per-class must be at least 1"),
        (["--dataset", "galaxies"], "unknown dataset 'galaxies'"),
        (["--size", "8"], "--size must be at least"),
        (["--size", "75"], "--size must be even"),
        (["--workers", "0"], "--workers must be at least 1"),
        (["--preset", "model-z"], "unknown preset"),
    ],
)
def test_bad_arguments_are_clear_errors(tmp_path: Path, args: list[str], match: str) -> None:
    out = tmp_path / "x"
    result = invoke(str(out), "--size", str(SIZE), *args)
    assert result.exit_code != 0
    assert isinstance(result.exception, LensError)
    assert match in str(result.exception)


def test_console_entry_prints_the_error_and_exits_non_zero(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["simulate", str(tmp_path / "x"), "--shard", "3/2"])
    assert exit_info.value.code != 0
    assert "error: --shard 3/2" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # nothing written


def test_refuses_foreign_or_different_output_folders(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(LensError, match="not empty"):
        run(spec(foreign))
    out = tmp_path / "sim"
    run(spec(out))
    with pytest.raises(LensError, match="different simulation.*seed"):
        run(spec(out, seed=99))
    with pytest.raises(LensError, match="not a folder"):
        run(spec(foreign / "notes.txt"))
