"""Bad input: a non-zero exit naming every offending file, and no output left behind."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lens.data.pack import PackOptions, pack
from lens.errors import LensError


def save(path: Path, array: np.ndarray, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array, **kwargs)


def good_set(root: Path, n: int = 3, shape=(1, 8, 8)) -> None:
    for cls in ("a", "b"):
        for i in range(n):
            save(root / cls / f"{i}.npy", np.random.default_rng(i).random(shape))


def failure(tmp_path: Path, options: PackOptions | None = None, out_name="o.h5") -> str:
    """Pack tmp_path/ds; expect LensError; check nothing was written; return the message."""
    out = tmp_path / out_name
    before = out.read_bytes() if out.exists() else None
    with pytest.raises(LensError) as info:
        pack([tmp_path / "ds"], out, options or PackOptions())
    assert (out.read_bytes() if out.exists() else None) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file
    return str(info.value)


def test_corrupt_truncated_and_pickled_npy(tmp_path):
    good_set(tmp_path / "ds")
    (tmp_path / "ds/a/garbage.npy").write_bytes(b"this is not numpy")
    data = io.BytesIO()
    np.save(data, np.zeros((1, 8, 8)))
    (tmp_path / "ds/a/short.npy").write_bytes(data.getvalue()[:-10])
    save(tmp_path / "ds/b/objects.npy", np.array([{"x": 1}, None], dtype=object),
         allow_pickle=True)
    save(tmp_path / "ds/b/strings.npy", np.array(["a", "b"]))
    (tmp_path / "ds/b/empty.npy").write_bytes(b"")
    msg = failure(tmp_path)
    assert "unreadable, corrupt or not an image (5)" in msg
    assert f"{tmp_path}/ds/a/garbage.npy: not a .npy file" in msg
    assert f"{tmp_path}/ds/a/short.npy: truncated" in msg
    assert f"{tmp_path}/ds/b/objects.npy: holds Python objects (pickled)" in msg
    assert f"{tmp_path}/ds/b/strings.npy: dtype <U1 is not a real-valued" in msg
    assert f"{tmp_path}/ds/b/empty.npy" in msg


def test_wrong_shapes_and_channel_counts(tmp_path):
    good_set(tmp_path / "ds")
    save(tmp_path / "ds/a/4d.npy", np.zeros((1, 1, 8, 8)))
    save(tmp_path / "ds/a/hwc.npy", np.zeros((8, 8, 3)))
    save(tmp_path / "ds/b/rgb.npy", np.zeros((3, 8, 8)))
    save(tmp_path / "ds/b/flat.npy", np.zeros(64))
    msg = failure(tmp_path)
    assert f"{tmp_path}/ds/a/4d.npy: shape (1, 1, 8, 8)" in msg
    assert f"{tmp_path}/ds/a/hwc.npy: shape (8, 8, 3)" in msg and "channels-last" in msg
    assert f"{tmp_path}/ds/b/flat.npy: shape (64,)" in msg
    assert "wrong channel count (most images have 1)" in msg
    assert f"{tmp_path}/ds/b/rgb.npy: 3 channel(s)" in msg


def test_mixed_sizes_need_size_or_crop(tmp_path):
    good_set(tmp_path / "ds")
    save(tmp_path / "ds/b/big.npy", np.zeros((1, 10, 9)))
    msg = failure(tmp_path)
    assert "image size differs (most images are 8x8; use --size N or --crop N" in msg
    assert f"{tmp_path}/ds/b/big.npy: 10x9" in msg
    msg = failure(tmp_path, PackOptions(crop=9))
    assert "smaller than --crop 9 (6)" in msg and f"{tmp_path}/ds/a/0.npy: 8x8" in msg
    assert "big.npy" not in msg
    pack([tmp_path / "ds"], tmp_path / "ok.h5", PackOptions(size=6))


@pytest.mark.parametrize("workers", [1, 2])
def test_sizes_are_judged_by_most_images_not_by_the_first_files(tmp_path, workers):
    # The common shape is guessed from the first SAMPLE files; here they are the minority.
    import lens.data.pack as pack_module

    n_first = pack_module.SAMPLE + 6
    for i in range(n_first):
        save(tmp_path / f"ds/a/{i:03d}.npy", np.zeros((1, 5, 5)))
    for i in range(n_first + 10):
        save(tmp_path / f"ds/b/{i:03d}.npy", np.zeros((1, 4, 4)))
    msg = failure(tmp_path, PackOptions(workers=workers))
    assert f"image size differs (most images are 4x4; use --size N or --crop N for a " \
           f"common size) ({n_first}):" in msg
    assert f"{tmp_path}/ds/a/000.npy: 5x5" in msg and "ds/b/" not in msg


def test_unreadable_first_files_still_find_the_common_shape(tmp_path):
    import lens.data.pack as pack_module

    for i in range(pack_module.SAMPLE + 1):
        (tmp_path / f"ds/a/{i:03d}.npy").parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f"ds/a/{i:03d}.npy").write_bytes(b"junk")
    for i in range(3):
        save(tmp_path / f"ds/b/{i}.npy", np.zeros((1, 4, 4)))
    save(tmp_path / "ds/b/big.npy", np.zeros((1, 6, 6)))
    msg = failure(tmp_path)
    assert f"unreadable, corrupt or not an image ({pack_module.SAMPLE + 1}):" in msg
    assert f"{tmp_path}/ds/b/big.npy: 6x6" in msg


def test_corrupt_png_found_while_streaming(tmp_path):
    good_set(tmp_path / "ds", shape=(1, 16, 16))
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16), np.uint8)).save(
        buffer, format="PNG")
    (tmp_path / "ds/a/cut.png").write_bytes(buffer.getvalue()[:60])  # header intact, data cut
    msg = failure(tmp_path)
    assert f"{tmp_path}/ds/a/cut.png: not a readable PNG/JPEG image" in msg
    (tmp_path / "ds/b/text.png").write_text("not an image")  # fails the header check
    assert f"{tmp_path}/ds/b/text.png: not a readable PNG/JPEG image" in failure(tmp_path)


def test_first_twenty_files_then_a_count(tmp_path):
    good_set(tmp_path / "ds")
    for i in range(25):
        (tmp_path / f"ds/a/bad_{i:02d}.npy").write_bytes(b"x")
    msg = failure(tmp_path)
    assert "(25):" in msg and "bad_19.npy" in msg and "bad_20.npy" not in msg
    assert "... and 5 more" in msg


def test_layout_problems_through_pack(tmp_path):
    good_set(tmp_path / "ds")
    (tmp_path / "ds/c").mkdir()
    assert f"empty class folder (no .npy, .png or .jpg images) (1):\n  {tmp_path}/ds/c" in (
        failure(tmp_path))
    (tmp_path / "ds/c").rmdir()
    for f in (tmp_path / "ds/b").iterdir():
        f.unlink()
    (tmp_path / "ds/b").rmdir()
    assert "only one class" in failure(tmp_path)


def test_existing_output_needs_force_and_survives_failure(tmp_path):
    good_set(tmp_path / "ds")
    out = tmp_path / "o.h5"
    out.write_bytes(b"keep me")
    assert "already exists (use --force" in failure(tmp_path)
    (tmp_path / "ds/a/bad.npy").write_bytes(b"x")
    assert "bad.npy" in failure(tmp_path, PackOptions(force=True))
    assert out.read_bytes() == b"keep me"
    assert "no such folder" in failure(tmp_path, out_name="missing/o.h5")


def test_fold_count_checks(tmp_path):
    good_set(tmp_path / "ds", n=3)
    assert "--folds 1: cross-validation needs at least 2 folds" in failure(
        tmp_path, PackOptions(folds=1))
    msg = failure(tmp_path, PackOptions(folds=4))
    assert "more folds than the smallest class has training images" in msg
    assert "a: 3 training image(s)" in msg and "b: 3 training image(s)" in msg


@pytest.mark.parametrize(
    "options, text",
    [
        (dict(normalize="zscore"), "--normalize 'zscore': expected one of none, minmax"),
        (dict(nan="drop"), "--nan 'drop'"),
        (dict(dtype="float64"), "--dtype 'float64'"),
        (dict(size=0), "--size 0: must be a positive"),
        (dict(crop=-2), "--crop -2"),
        (dict(workers=0), "--workers 0: must be at least 1"),
    ],
)
def test_bad_options(tmp_path, options, text):
    good_set(tmp_path / "ds")
    assert text in failure(tmp_path, PackOptions(**options))
