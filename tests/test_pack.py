"""`lens pack` as a library: round trips, transforms, folds, leakage, workers, interrupts."""

from __future__ import annotations

import random
from pathlib import Path

import h5py
import numpy as np
import pytest
import xxhash
from PIL import Image

import lens.data.pack as pack_module
from lens.data.h5file import (
    NO_FOLD,
    TEST,
    TRAIN,
    image_hash,
    read_images,
    read_index,
    read_info,
    read_sources,
)
from lens.data.pack import PackOptions, pack
from lens.errors import LensError

CLASSES = ("no", "sphere", "vort")


def save(path: Path, array: np.ndarray) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array)
    return array


def make_common_test(root: Path, n_train: int = 6, n_val: int = 2, dtype=np.float32, seed=0):
    """Common Test I layout: train/ and val/ with one folder per class; returns {source: array}."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in (("train", n_train), ("val", n_val)):
        for cls in CLASSES:
            for i in range(count):
                rel = f"{split}/{cls}/{i}.npy"
                arrays[rel] = save(root / rel, rng.random((1, 12, 12)).astype(dtype))
    return arrays


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_round_trip_float32_exact(tmp_path):
    arrays = make_common_test(tmp_path / "ds")
    out = tmp_path / "out.h5"
    report = pack([tmp_path / "ds"], out, PackOptions(), command="lens pack ds out.h5")
    info = read_info(out)
    assert (info.n, info.channels, info.height, info.width) == (24, 1, 12, 12)
    assert info.class_names == CLASSES and info.dtype == "float32"
    sources = read_sources(out)
    assert sources == sorted(arrays)
    images = read_images(out)
    for i, source in enumerate(sources):
        assert np.array_equal(images[i], arrays[source])  # bit-exact
    index = read_index(out)
    assert index.labels.tolist() == [CLASSES.index(s.split("/")[1]) for s in sources]
    assert index.split.tolist() == [TRAIN if s.startswith("train") else TEST for s in sources]
    assert (index.fold == NO_FOLD).all()
    with h5py.File(out) as f:
        assert [h.decode() for h in f["hash"][:]] == [image_hash(im) for im in images]
        # The documented recipe (docs/DATA_FORMAT.md), computed independently.
        recipe = xxhash.xxh3_128(b"<f4(1, 12, 12)" + images[0].astype("<f4").tobytes())
        assert f["hash"][0].decode() == recipe.hexdigest()
        attrs = dict(f.attrs)
    assert attrs["command"] == "lens pack ds out.h5"
    assert attrs["normalize"] == "none" and attrs["nan_policy"] == "error"
    assert attrs["n_folds"] == 0 and attrs["fold_seed"] == -1
    assert attrs["created"].endswith("+00:00") and attrs["lens_version"]
    assert report.n == 24 and report.rows[-1] == {
        "class": "total", "train": 18, "folds": [], "test": 6, "total": 24
    }
    assert leftovers(tmp_path) == []


def test_float64_source_is_cast_and_float16_supported(tmp_path):
    arrays = make_common_test(tmp_path / "ds", dtype=np.float64)
    pack([tmp_path / "ds"], tmp_path / "a.h5", PackOptions())
    pack([tmp_path / "ds"], tmp_path / "b.h5", PackOptions(dtype="float16"))
    sources = read_sources(tmp_path / "a.h5")
    expected = np.stack([arrays[s] for s in sources])
    assert np.array_equal(read_images(tmp_path / "a.h5"), expected.astype(np.float32))
    assert read_info(tmp_path / "b.h5").dtype == "float16"
    assert np.array_equal(read_images(tmp_path / "b.h5"),
                          expected.astype(np.float16).astype(np.float32))


def test_shapes_hw_and_multichannel(tmp_path):
    a = save(tmp_path / "two/a/0.npy", np.arange(20.0).reshape(4, 5))  # (H, W)
    b = save(tmp_path / "two/b/0.npy", np.ones((1, 4, 5)))  # (1, H, W)
    pack([tmp_path / "two"], tmp_path / "two.h5", PackOptions())
    assert np.array_equal(read_images(tmp_path / "two.h5"), np.stack([a[None], b]))
    c = save(tmp_path / "three/lens/0.npy", np.random.rand(3, 6, 6).astype(np.float32))
    save(tmp_path / "three/non/0.npy", np.zeros((3, 6, 6), np.float32))
    pack([tmp_path / "three"], tmp_path / "three.h5", PackOptions())
    assert np.array_equal(read_images(tmp_path / "three.h5", np.array([0]))[0], c)


def test_png_and_jpeg(tmp_path):
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    Image.fromarray(gray).save(tmp_path / "g.png")
    pack_dir = tmp_path / "gray"
    (pack_dir / "a").mkdir(parents=True)
    (pack_dir / "b").mkdir()
    Image.fromarray(gray).save(pack_dir / "a/0.png")
    Image.fromarray(255 - gray).save(pack_dir / "b/0.png")
    pack([pack_dir], tmp_path / "gray.h5", PackOptions())
    images = read_images(tmp_path / "gray.h5")
    assert images.shape == (2, 1, 8, 8)
    assert np.allclose(images[0, 0], gray / 255.0) and np.allclose(images[1, 0], 1 - gray / 255)

    yy, xx = np.mgrid[0:10, 0:12]
    rgb = np.stack([yy * 20, xx * 20, 100 + yy * 5 + xx * 5], axis=-1).astype(np.uint8)
    color = tmp_path / "color"
    (color / "x").mkdir(parents=True)
    (color / "y").mkdir()
    Image.fromarray(rgb).save(color / "x/0.png")
    Image.fromarray(rgb).convert("RGBA").save(color / "x/1.png")  # alpha is dropped
    Image.fromarray(rgb).save(color / "y/0.jpg", quality=95)
    pack([color], tmp_path / "color.h5", PackOptions())
    images = read_images(tmp_path / "color.h5")
    assert images.shape == (3, 3, 10, 12)
    expected = rgb.transpose(2, 0, 1) / 255.0
    assert np.allclose(images[0], expected) and np.allclose(images[1], expected)
    assert np.abs(images[2] - expected).mean() < 0.02  # JPEG is lossy


def test_crop_and_size(tmp_path):
    ramp = np.arange(100.0).reshape(1, 10, 10)
    save(tmp_path / "ds/a/0.npy", ramp)
    save(tmp_path / "ds/b/0.npy", np.full((1, 12, 12), 5.0))  # mixed sizes: fine with a crop
    pack([tmp_path / "ds"], tmp_path / "crop.h5", PackOptions(crop=4))
    images = read_images(tmp_path / "crop.h5")
    assert np.array_equal(images[0], ramp[:, 3:7, 3:7])
    assert np.array_equal(images[1], np.full((1, 4, 4), 5.0))
    pack([tmp_path / "ds"], tmp_path / "size.h5", PackOptions(size=5))
    images = read_images(tmp_path / "size.h5")
    assert images.shape == (2, 1, 5, 5)
    assert np.allclose(images[1], 5.0)  # a constant image stays constant
    assert abs(images[0].mean() - ramp.mean()) < 1.0  # antialiased: the mean is kept
    assert np.all(np.diff(images[0, 0], axis=1) > 0)  # still a ramp
    pack([tmp_path / "ds"], tmp_path / "both.h5", PackOptions(crop=8, size=16))
    assert read_info(tmp_path / "both.h5").height == 16


def test_minmax_per_channel_and_constant_image(tmp_path):
    x = np.stack([np.linspace(-3, 5, 16).reshape(4, 4), np.linspace(10, 11, 16).reshape(4, 4),
                  np.full((4, 4), 7.0)])
    save(tmp_path / "ds/a/0.npy", x)
    save(tmp_path / "ds/b/0.npy", np.full((3, 4, 4), 2.0))
    pack([tmp_path / "ds"], tmp_path / "o.h5", PackOptions(normalize="minmax"))
    images = read_images(tmp_path / "o.h5")
    assert np.allclose(images[0, 0], (x[0] + 3) / 8) and np.allclose(images[0, 1], x[1] - 10)
    assert np.array_equal(images[0, 2], np.zeros((4, 4)))  # constant channel: zeros
    assert np.array_equal(images[1], np.zeros((3, 4, 4)))
    assert read_info(tmp_path / "o.h5").normalize == "minmax"


def nan_set(root: Path) -> None:
    for i in range(4):
        x = np.full((5, 5), float(i))
        if i == 1:
            x[2, 2] = np.nan
        if i == 3:
            x[0, 0] = np.inf
        save(root / f"{'nl_' if i % 2 else ''}{i}_hst.npy", x)


def test_nan_error_names_every_file_and_leaves_nothing(tmp_path):
    nan_set(tmp_path / "hst")
    out = tmp_path / "hst.h5"
    with pytest.raises(LensError) as info:
        pack([tmp_path / "hst"], out, PackOptions(labels=("nonlens=^nl_",), default_label="lens"))
    msg = str(info.value)
    assert "NaN or Inf" in msg and "--nan zero" in msg
    assert str(tmp_path / "hst/nl_1_hst.npy") in msg and str(tmp_path / "hst/nl_3_hst.npy") in msg
    assert "0_hst" not in msg
    assert not out.exists() and leftovers(tmp_path) == []


def test_nan_zero_replaces_and_reports(tmp_path):
    nan_set(tmp_path / "hst")
    out = tmp_path / "hst.h5"
    options = PackOptions(labels=("nonlens=^nl_",), default_label="lens", nan="zero")
    report = pack([tmp_path / "hst"], out, options)
    assert report.nan_replaced == ("nl_1_hst.npy", "nl_3_hst.npy")
    sources = read_sources(out)
    assert sources == ["0_hst.npy", "2_hst.npy", "nl_1_hst.npy", "nl_3_hst.npy"]
    images = read_images(out)
    assert np.isfinite(images).all()
    assert images[2, 0, 2, 2] == 0 and images[2, 0, 0, 0] == 1
    assert images[3, 0, 0, 0] == 0 and images[3, 0, 1, 1] == 3
    assert read_index(out).labels.tolist() == [0, 0, 1, 1]
    with h5py.File(out) as f:
        assert f.attrs["nan_policy"] == "zero" and f.attrs["nan_replaced"] == 2


def test_overflow_of_the_stored_dtype_is_an_error(tmp_path):
    save(tmp_path / "ds/a/0.npy", np.full((3, 3), 1e6))
    save(tmp_path / "ds/b/0.npy", np.ones((3, 3)))
    with pytest.raises(LensError, match="too large for float16"):
        pack([tmp_path / "ds"], tmp_path / "o.h5", PackOptions(dtype="float16"))
    pack([tmp_path / "ds"], tmp_path / "o.h5", PackOptions(dtype="float16", normalize="minmax"))
    save(tmp_path / "ds/a/1.npy", np.full((3, 3), 1e300))
    with pytest.raises(LensError, match=r"(?s)too large for float32.*a/1.npy"):
        pack([tmp_path / "ds"], tmp_path / "p.h5", PackOptions())


def test_folds_stratified_and_independent_of_file_order(tmp_path):
    rng = np.random.default_rng(1)
    names = [f"{split}/{cls}/{i}.npy" for split, n in (("train", 10), ("val", 3))
             for cls in ("a", "b") for i in range(n + (5 if cls == "a" else 0))]
    arrays = {n: rng.random((2, 2)) for n in names}
    for root, order in ((tmp_path / "one", names), (tmp_path / "two", names[::-1])):
        shuffled = list(order)
        random.Random(str(root)).shuffle(shuffled)
        for name in shuffled:  # files created in different orders
            save(root / name, arrays[name])
    pack([tmp_path / "one"], tmp_path / "one.h5", PackOptions(folds=5, seed=7))
    pack([tmp_path / "two"], tmp_path / "two.h5", PackOptions(folds=5, seed=7))
    first, second = read_index(tmp_path / "one.h5"), read_index(tmp_path / "two.h5")
    assert read_sources(tmp_path / "one.h5") == read_sources(tmp_path / "two.h5")
    assert np.array_equal(first.fold, second.fold)
    train = first.split == TRAIN
    assert (first.fold[~train] == NO_FOLD).all()
    for cls, count in ((0, 15), (1, 10)):
        per_fold = np.bincount(first.fold[train & (first.labels == cls)], minlength=5)
        assert per_fold.tolist() == [count // 5] * 5
    with h5py.File(tmp_path / "one.h5") as f:
        assert f.attrs["n_folds"] == 5 and f.attrs["fold_seed"] == 7
    pack([tmp_path / "one"], tmp_path / "three.h5", PackOptions(folds=5, seed=8))
    assert not np.array_equal(read_index(tmp_path / "three.h5").fold, first.fold)


def test_leakage_reported_and_strict_fails(tmp_path):
    arrays = make_common_test(tmp_path / "ds")
    save(tmp_path / "ds/val/no/leak.npy", arrays["train/sphere/3.npy"])
    report = pack([tmp_path / "ds"], tmp_path / "o.h5", PackOptions())
    assert report.leaks == (("train/sphere/3.npy", "val/no/leak.npy"),)
    out = tmp_path / "strict.h5"
    with pytest.raises(LensError, match=r"(?s)1 image\(s\) appear in both.*train/sphere/3.npy"):
        pack([tmp_path / "ds"], out, PackOptions(strict=True))
    assert not out.exists() and leftovers(tmp_path) == []


def test_several_srcs_merged_with_unique_sources(tmp_path):
    make_common_test(tmp_path / "s0/dataset", seed=0)
    make_common_test(tmp_path / "s1/dataset", seed=1)
    pack([tmp_path / "s0/dataset", tmp_path / "s1/dataset"], tmp_path / "o.h5", PackOptions())
    sources = read_sources(tmp_path / "o.h5")
    assert len(sources) == len(set(sources)) == 48
    assert sources[0] == "s0/dataset/train/no/0.npy" and sources[-1].startswith("s1/dataset/val")


def test_workers_give_the_same_file(tmp_path):
    make_common_test(tmp_path / "ds", n_train=40, n_val=5)
    save(tmp_path / "ds/train/no/nan.npy", np.full((1, 12, 12), np.nan, np.float32))
    one, two = tmp_path / "one.h5", tmp_path / "two.h5"
    pack([tmp_path / "ds"], one, PackOptions(folds=3, nan="zero", workers=1))
    report = pack([tmp_path / "ds"], two, PackOptions(folds=3, nan="zero", workers=2))
    assert report.nan_replaced == ("train/no/nan.npy",)
    assert np.array_equal(read_images(one), read_images(two))
    assert np.array_equal(read_index(one).fold, read_index(two).fold)
    with h5py.File(one) as a, h5py.File(two) as b:
        assert a["hash"][:].tolist() == b["hash"][:].tolist()


def test_small_blocks_stream_in_order(tmp_path, monkeypatch):
    monkeypatch.setattr(pack_module, "BLOCK_BYTES", 3 * 12 * 12 * 4)  # 3 images per block
    arrays = make_common_test(tmp_path / "ds", n_train=5, n_val=2)
    pack([tmp_path / "ds"], tmp_path / "o.h5", PackOptions())
    sources = read_sources(tmp_path / "o.h5")
    assert np.array_equal(read_images(tmp_path / "o.h5"), np.stack([arrays[s] for s in sources]))


@pytest.mark.parametrize("workers", [1, 2])
def test_interrupt_leaves_nothing(tmp_path, monkeypatch, workers):
    make_common_test(tmp_path / "ds", n_train=10)
    monkeypatch.setattr(pack_module, "BLOCK_BYTES", 4 * 12 * 12 * 4)
    out = tmp_path / "o.h5"
    out.write_bytes(b"previous")
    calls = []

    def progress(stage, done, total):
        calls.append(done)
        if stage == "pack" and done >= 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pack([tmp_path / "ds"], out, PackOptions(force=True, workers=workers), progress=progress)
    assert out.read_bytes() == b"previous"  # the old file is untouched
    assert leftovers(tmp_path) == []
    assert calls


def test_options_from_mapping_rejects_unknown_keys():
    assert PackOptions.from_mapping({"folds": 5, "labels": ["a=b"]}).labels == ("a=b",)
    with pytest.raises(LensError, match=r"unknown pack option\(s\) fold; valid: normalize"):
        PackOptions.from_mapping({"fold": 5})


def test_ctrl_c_on_the_command_with_workers(tmp_path):
    """A real SIGINT to the process group of `lens pack --workers 2` mid-stream."""
    import os
    import signal
    import subprocess
    import sys
    import time

    rng = np.random.default_rng(0)
    for i in range(6000):
        save(tmp_path / "ds" / ("a", "b")[i % 2] / f"{i}.npy",
             rng.random((1, 100, 100)).astype(np.float32))
    out = tmp_path / "o.h5"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lens", "pack", str(tmp_path / "ds"), str(out), "--workers", "2"],
        start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 60
    while not leftovers(tmp_path) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)  # until the temporary file exists: streaming has begun
    assert proc.poll() is None, "pack finished before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err, (proc.returncode, err[-2000:])
    assert not out.exists() and leftovers(tmp_path) == []
