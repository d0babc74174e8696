"""`lens stats`: statistics on synthetic images with known answers, summaries, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lens.cli import app
from lens.errors import LensError
from lens.stats.load import open_catalog
from lens.stats.measures import STAT_NAMES, as_batch, batch_stats, image_stats
from lens.stats.summary import compare, render, summarise

N = 64
C = (N - 1) / 2


def grid(n: int = N) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.indices((n, n), dtype=np.float64)
    return x - (n - 1) / 2, y - (n - 1) / 2


# --- statistics with known answers -----------------------------------------------------


@pytest.mark.parametrize(("radius", "width"), [(10, 1), (20, 3), (25, 7)])
def test_annulus_gives_its_radius_and_width(radius: int, width: int) -> None:
    dx, dy = grid()
    r = np.hypot(dx, dy)
    image = ((r >= radius) & (r < radius + width)).astype(float)  # exactly bins R..R+W-1
    s = image_stats(image)
    assert s["ring_radius"] == radius
    assert s["ring_fwhm"] == width


def test_gaussian_ring_radius_and_fwhm() -> None:
    dx, dy = grid(150)
    sigma = 4.0
    image = np.exp(-((np.hypot(dx, dy) - 30.5) ** 2) / (2 * sigma**2))
    s = image_stats(image)
    assert s["ring_radius"] == 30  # bin 30 holds radii [30, 31)
    assert abs(s["ring_fwhm"] - 2.3548 * sigma) <= 1.0  # FWHM to a bin


def test_background_of_the_four_corners() -> None:
    image = np.zeros((N, N))
    image[N // 2, N // 2] = 1.0  # sets the scale: min 0, max 1
    checker = np.indices((15, 15)).sum(axis=0) % 2  # values 0.1 / 0.3 alternate
    patch = np.where(checker == 0, 0.1, 0.3)
    for rows in (slice(0, 15), slice(N - 15, N)):
        for cols in (slice(0, 15), slice(N - 15, N)):
            image[rows, cols] = patch
    image[15, 15] = 0.0  # just outside every corner patch: does not count
    s = image_stats(image)
    n_hi = 4 * int((checker == 1).sum())
    n_all = 4 * 225
    mean = (0.1 * (n_all - n_hi) + 0.3 * n_hi) / n_all
    std = np.sqrt(((0.1 - mean) ** 2 * (n_all - n_hi) + (0.3 - mean) ** 2 * n_hi) / n_all)
    assert s["background_mean"] == pytest.approx(mean)
    assert s["background_std"] == pytest.approx(std)


def test_mean_pixel_and_bright_fraction() -> None:
    image = np.zeros((10, 10))
    image[0, :4] = 1.0
    image[1, :2] = 0.5  # not above 0.5
    s = image_stats(image)
    assert s["mean_pixel"] == pytest.approx(5 / 100)
    assert s["bright_fraction"] == pytest.approx(4 / 100)


def rectangle(half_x: int, half_y: int, n: int = N) -> np.ndarray:
    """A uniform rectangle of 2·half_x columns and 2·half_y rows centred on the image."""
    image = np.zeros((n, n))
    image[n // 2 - half_y : n // 2 + half_y, n // 2 - half_x : n // 2 + half_x] = 1.0
    return image


@pytest.mark.parametrize(("hx", "hy"), [(10, 5), (4, 12), (8, 8)])
def test_rectangle_moments(hx: int, hy: int) -> None:
    # over pixel offsets ±0.5, ±1.5, …: Σ dx² = 2 Σ_{i<h} (i + 0.5)² per row
    sx = 2 * sum((i + 0.5) ** 2 for i in range(hx))
    sy = 2 * sum((j + 0.5) ** 2 for j in range(hy))
    mxx, myy = (2 * hy) * sx, (2 * hx) * sy
    s = image_stats(rectangle(hx, hy))
    assert s["horizontal_elongation"] == pytest.approx((mxx - myy) / (mxx + myy))
    assert s["light_ellipticity"] == pytest.approx(abs(mxx - myy) / (mxx + myy))


def test_lines_have_extreme_moments() -> None:
    horizontal, vertical, diagonal = np.zeros((N, N)), np.zeros((N, N)), np.zeros((N, N))
    horizontal[N // 2, 10:54] = 1.0  # row N/2 is 0.5 px from the centre: tiny myy
    vertical[10:54, N // 2] = 1.0
    idx = np.arange(10, 54)
    diagonal[idx, idx] = 1.0  # exactly through the centre
    h, v, d = image_stats(horizontal), image_stats(vertical), image_stats(diagonal)
    assert h["horizontal_elongation"] > 0.99 and v["horizontal_elongation"] < -0.99
    assert d["horizontal_elongation"] == pytest.approx(0.0, abs=1e-12)
    assert d["light_ellipticity"] == pytest.approx(1.0)


def test_light_threshold_and_weights() -> None:
    """Pixels at or below 0.2 carry no weight; brighter ones weigh their value."""
    image = np.zeros((N, N))
    image[N // 2, N // 2 + 20] = 1.0  # far right: mxx
    image[N // 2 + 20, N // 2] = 0.5  # far up: myy, half weight
    image[: N // 2 - 5, :] = 0.2  # a large faint area that must not count
    image[0, 0] = 0.0
    dx, dy = 20.5, 20.5
    mxx = 1.0 * dx**2 + 0.5 * 0.5**2
    myy = 1.0 * 0.5**2 + 0.5 * dy**2
    mxy = 1.0 * dx * 0.5 + 0.5 * 0.5 * dy
    s = image_stats(image)
    assert s["horizontal_elongation"] == pytest.approx((mxx - myy) / (mxx + myy))
    assert s["light_ellipticity"] == pytest.approx(np.hypot(mxx - myy, 2 * mxy) / (mxx + myy))


def reference_stats(image: np.ndarray) -> dict[str, float]:
    """A direct, loop-based transcription of the definitions, to check the vectorised code."""
    im = (image - image.min()) / (image.max() - image.min())
    h, w = im.shape
    sums: dict[int, float] = {}
    counts: dict[int, int] = {}
    mxx = myy = mxy = 0.0
    for yy in range(h):
        for xx in range(w):
            dx, dy = xx - (w - 1) / 2, yy - (h - 1) / 2
            b = int(np.floor(np.hypot(dx, dy)))
            sums[b] = sums.get(b, 0.0) + im[yy, xx]
            counts[b] = counts.get(b, 0) + 1
            if im[yy, xx] > 0.2:
                mxx += im[yy, xx] * dx * dx
                myy += im[yy, xx] * dy * dy
                mxy += im[yy, xx] * dx * dy
    profile = [sums[b] / counts[b] for b in range(max(sums) + 1)]
    peak = int(np.argmax(profile))
    above = [b for b, v in enumerate(profile) if v > profile[peak] / 2]
    corners = np.concatenate([im[:15, :15].ravel(), im[:15, -15:].ravel(),
                              im[-15:, :15].ravel(), im[-15:, -15:].ravel()])  # fmt: skip
    return {
        "ring_radius": peak,
        "ring_fwhm": max(above) - min(above) + 1,
        "background_mean": corners.mean(),
        "background_std": corners.std(),
        "mean_pixel": im.mean(),
        "bright_fraction": (im > 0.5).mean(),
        "light_ellipticity": np.hypot(mxx - myy, 2 * mxy) / (mxx + myy),
        "horizontal_elongation": (mxx - myy) / (mxx + myy),
    }


def test_batch_matches_the_reference_and_single_images() -> None:
    rng = np.random.default_rng(0)
    dx, dy = grid(40)
    images = []
    for _ in range(4):  # noisy, off-centre elongated blobs and rings
        a, b = rng.uniform(3, 9, size=2)
        x0, y0 = rng.uniform(-5, 5, size=2)
        blob = np.exp(-(((dx - x0) / a) ** 2 + ((dy - y0) / b) ** 2) / 2)
        ring = np.exp(-((np.hypot(dx, dy) - rng.uniform(8, 14)) ** 2) / 4)
        images.append(3 * blob + ring + rng.normal(0, 0.05, size=dx.shape))
    batch = np.stack(images)[:, None]  # (N, 1, H, W), as .npy files are
    values = batch_stats(batch)
    for i, image in enumerate(images):
        expected = reference_stats(image)
        single = image_stats(image[None])
        for k in STAT_NAMES:
            assert values[k][i] == pytest.approx(expected[k], rel=1e-9, abs=1e-12), k
            assert single[k] == pytest.approx(values[k][i], rel=1e-12), k


def test_as_batch_normalises_and_averages_channels() -> None:
    raw = np.stack([np.arange(16.0).reshape(4, 4), np.full((4, 4), 7.0)])
    out = as_batch(raw)
    assert out.shape == (2, 4, 4)
    assert out[0].min() == 0 and out[0].max() == 1 and np.all(out[1] == 0)
    rgb = as_batch(np.stack([raw, raw, raw], axis=1))
    assert rgb.shape == (2, 4, 4)
    with pytest.raises(ValueError):
        as_batch(np.zeros(5))


# --- summaries ------------------------------------------------------------------------


def values(offset: float, n: int = 4) -> dict[str, np.ndarray]:
    return {k: np.arange(n, dtype=float) + offset + i for i, k in enumerate(STAT_NAMES)}


def test_summarise_and_compare() -> None:
    a = summarise({"x": values(0.0), "y": values(4.0)}, "A", {"x": 100, "y": 4})
    assert a["groups"]["x"]["n"] == 4 and a["groups"]["x"]["available"] == 100
    ring = a["groups"]["x"]["stats"]["ring_radius"]
    assert ring["mean"] == 1.5 and ring["std"] == pytest.approx(np.std([0, 1, 2, 3]))
    overall = a["overall"]["stats"]["ring_radius"]
    assert a["overall"]["n"] == 8 and overall["mean"] == 3.5
    b = summarise({"x": values(2.0), "z": values(0.0)}, "B")
    diff = compare(a, b)
    assert set(diff) == {"x", "overall"}  # y and z are in one set only
    assert diff["x"]["ring_radius"] == pytest.approx(2.0 / np.std([0, 1, 2, 3]))


GOLDEN_SINGLE = """\
A: sims
statistic                 x (n=4)          overall (n=4)
ring radius (px)          1.50 ± 1.12      1.50 ± 1.12
ring FWHM (px)            2.50 ± 1.12      2.50 ± 1.12
background mean           3.5000 ± 1.1180  3.5000 ± 1.1180
background std            4.5000 ± 1.1180  4.5000 ± 1.1180
mean pixel                5.5000 ± 1.1180  5.5000 ± 1.1180
fraction of pixels > 0.5  6.5000 ± 1.1180  6.5000 ± 1.1180
light ellipticity         7.500 ± 1.118    7.500 ± 1.118
horizontal elongation     8.500 ± 1.118    8.500 ± 1.118
"""

GOLDEN_COMPARE_OVERALL = """\
[overall]                 A (n=4)          B (n=4)          (B-A)/σA
ring radius (px)          1.50 ± 1.12      2.50 ± 1.12      +0.89
ring FWHM (px)            2.50 ± 1.12      3.50 ± 1.12      +0.89
background mean           3.5000 ± 1.1180  4.5000 ± 1.1180  +0.89
background std            4.5000 ± 1.1180  5.5000 ± 1.1180  +0.89
mean pixel                5.5000 ± 1.1180  6.5000 ± 1.1180  +0.89
fraction of pixels > 0.5  6.5000 ± 1.1180  7.5000 ± 1.1180  +0.89
light ellipticity         7.500 ± 1.118    8.500 ± 1.118    +0.89
horizontal elongation     8.500 ± 1.118    9.500 ± 1.118    +0.89
"""


def test_render_golden() -> None:
    a = summarise({"x": values(0.0)}, "sims")
    assert render(a) == GOLDEN_SINGLE
    b = summarise({"x": values(1.0)}, "other")
    text = render(a, b)
    assert text.startswith("A: sims\nB: other\n")
    assert text.endswith(GOLDEN_COMPARE_OVERALL)
    assert "[x]" in text


# --- loading and the CLI ----------------------------------------------------------------


def ring_image(radius: float, n: int = 32) -> np.ndarray:
    """(1, n, n) ring whose profile peaks in bin ``radius`` (bin k holds radii [k, k+1))."""
    dx, dy = grid(n)
    return np.exp(-((np.hypot(dx, dy) - radius - 0.5) ** 2) / 2)[None]


def write_set(root: Path, radii: dict[str, list[float]], split: str | None = None) -> None:
    for cls, rs in radii.items():
        folder = root / split / cls if split else root / cls
        folder.mkdir(parents=True, exist_ok=True)
        for k, r in enumerate(rs):
            np.save(folder / f"{k}.npy", ring_image(r))


def test_folder_layouts_group_by_the_holding_folder(tmp_path: Path) -> None:
    write_set(tmp_path / "ct", {"no": [8, 9], "vort": [10]}, split="train")
    write_set(tmp_path / "ct", {"no": [11]}, split="val")
    (tmp_path / "ct" / "train" / "no" / ".hidden.npy").write_bytes(b"junk")
    catalog = open_catalog(tmp_path / "ct")
    assert {g: len(v) for g, v in catalog.groups.items()} == {"no": 3, "vort": 1}
    flat = tmp_path / "flat"
    flat.mkdir()
    for k in range(3):
        np.save(flat / f"{k}.npy", ring_image(9))
    assert list(open_catalog(flat).groups) == ["flat"]


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(LensError, match="no such file"):
        open_catalog(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LensError, match="no .npy images"):
        open_catalog(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(LensError, match="packed .h5"):
        open_catalog(tmp_path / "notes.txt")
    bad = tmp_path / "bad" / "no"
    bad.mkdir(parents=True)
    np.save(bad / "0.npy", ring_image(5))
    np.save(bad / "1.npy", ring_image(5, n=40))
    np.save(bad / "2.npy", np.full((1, 32, 32), np.nan))
    catalog = open_catalog(tmp_path / "bad")
    with pytest.raises(LensError, match="1.npy: size differs"):
        catalog.read(catalog.groups["no"][:2])
    with pytest.raises(LensError, match="2.npy: contains NaN"):
        catalog.read(catalog.groups["no"][2:])


def invoke(*args: str):
    return CliRunner().invoke(app, ["stats", *args])


def test_cli_one_set_json_and_table(tmp_path: Path) -> None:
    write_set(tmp_path / "a", {"no": [8, 8, 8], "vort": [12, 12]})
    result = invoke(str(tmp_path / "a"), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["A"]["groups"]["no"]["stats"]["ring_radius"]["mean"] == 8.0
    assert data["A"]["groups"]["vort"]["stats"]["ring_radius"]["mean"] == 12.0
    assert data["A"]["overall"]["n"] == 5 and "B" not in data
    table = invoke(str(tmp_path / "a"))
    assert table.exit_code == 0 and "ring radius (px)" in table.output
    assert "8.00 ± 0.00" in table.output


def test_cli_compares_two_sets_and_writes_a_montage(tmp_path: Path) -> None:
    write_set(tmp_path / "a", {"no": [8, 10], "vort": [12]})
    write_set(tmp_path / "b", {"no": [11, 11]})
    png = tmp_path / "out" / "m.png"
    result = invoke(str(tmp_path / "a"), str(tmp_path / "b"), "--json", "--montage", str(png))
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert set(data["difference_in_std_of_A"]) == {"no", "overall"}
    assert data["difference_in_std_of_A"]["no"]["ring_radius"] == pytest.approx(2.0)  # (11-9)/1
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(png.parent.glob(".*"))  # written atomically, no temporary left


def test_cli_reads_a_packed_file(tmp_path: Path) -> None:
    from lens.data.h5file import write_packed

    images = np.stack([ring_image(r) for r in (6, 6, 9, 9, 9)]).astype(np.float32)
    path = tmp_path / "p.h5"
    write_packed(path, images, np.array([0, 0, 1, 1, -1]), ["cdm", "axion"])
    result = invoke(str(path), "--json", "--max-per-class", "0")
    assert result.exit_code == 0, result.output
    groups = json.loads(result.output)["A"]["groups"]
    assert {g: v["n"] for g, v in groups.items()} == {"cdm": 2, "axion": 2, "unlabeled": 1}
    assert groups["cdm"]["stats"]["ring_radius"]["mean"] == 6.0


def test_cli_samples_per_class(tmp_path: Path) -> None:
    write_set(tmp_path / "a", {"no": [8] * 6})
    result = invoke(str(tmp_path / "a"), "--json", "--max-per-class", "4")
    group = json.loads(result.output)["A"]["groups"]["no"]
    assert group["n"] == 4 and group["available"] == 6


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--max-per-class", "-1"], "--max-per-class"),
        (["--montage", "m.jpg"], "PNG"),
        (["--montage-per-class", "0"], "--montage-per-class"),
    ],
)
def test_cli_errors(tmp_path: Path, args: list[str], match: str) -> None:
    write_set(tmp_path / "a", {"no": [8]})
    extra = [str(tmp_path / a) if a.endswith(".jpg") else a for a in args]
    result = invoke(str(tmp_path / "a"), *extra)
    assert result.exit_code != 0
    assert isinstance(result.exception, LensError) and match in str(result.exception)
    missing = invoke(str(tmp_path / "nothing"))
    assert isinstance(missing.exception, LensError)
