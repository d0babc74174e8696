"""The simulator's physics and parameters: cosmology, presets, scenes, rendered images."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from lens.errors import LensError
from lens.simulate.cosmology import einstein_radius
from lens.simulate.physics import Renderer, normalise
from lens.simulate.presets import PRESETS, SimParams, load_params
from lens.simulate.scene import (
    Scene,
    draw_scene,
    image_rng,
    subhalo_masses,
    substructure_scene,
    theta_e,
)

MODEL_I = PRESETS["model-i"]


def ring_radius(image: np.ndarray) -> int:
    """Integer radius (px) where the azimuthally averaged profile about the centre peaks."""
    n = image.shape[-1]
    y, x = np.indices(image.shape)
    r = np.hypot(x - (n - 1) / 2, y - (n - 1) / 2).astype(int)
    profile = np.bincount(r.ravel(), image.ravel()) / np.bincount(r.ravel())
    return int(np.argmax(profile))


def centred_source(params: SimParams) -> dict[str, float]:
    return {
        "amp": params.source_amp,
        "R_sersic": params.source_r_sersic,
        "n_sersic": params.source_n_sersic,
        "e1": params.source_e1,
        "e2": params.source_e2,
        "center_x": 0.0,
        "center_y": 0.0,
    }


def centred_scene(params: SimParams, exposure: float) -> Scene:
    """The no-substructure lens with the source exactly behind it: a full Einstein ring."""
    return substructure_scene(params, "no", centred_source(params), exposure, None)


# --- cosmology ---------------------------------------------------------------------


@pytest.mark.parametrize("convention", ["luminosity", "angular"])
def test_einstein_radius_matches_astropy(convention: str) -> None:
    import astropy.units as u
    from astropy.constants import G, M_sun, c
    from astropy.cosmology import FlatLambdaCDM

    cosmo = FlatLambdaCDM(H0=70, Om0=0.3, Ob0=0.05)
    if convention == "luminosity":
        d_l = cosmo.luminosity_distance(0.5)
        d_s = cosmo.luminosity_distance(1.0)
        d_ls = d_s - d_l
    else:
        d_l = cosmo.angular_diameter_distance(0.5)
        d_s = cosmo.angular_diameter_distance(1.0)
        d_ls = cosmo.angular_diameter_distance(0.5, 1.0)  # between the two redshifts
    expected = (np.sqrt(4 * G * 1e12 * M_sun / c**2 * d_ls / (d_l * d_s)).decompose() * u.rad)
    expected_arcsec = expected.to(u.arcsec).value
    got = einstein_radius(1e12, 0.5, 1.0, 70, 0.3, convention)
    assert got == pytest.approx(expected_arcsec, rel=1e-6)


def test_einstein_radius_documented_values() -> None:
    # simulation.md: 1e12 M☉ → θ_E ≈ 1.28″ ≈ 25.6 px at 0.05″/px (luminosity distances)
    assert einstein_radius(1e12, 0.5, 1.0) == pytest.approx(1.2815, abs=1e-3)
    assert einstein_radius(1e12, 0.5, 1.0, convention="angular") == pytest.approx(1.6645, abs=1e-3)
    # θ_E ∝ sqrt(M), and arrays work
    radii = einstein_radius(np.array([1e10, 4e10]), 0.5, 1.0)
    assert radii[1] / radii[0] == pytest.approx(2.0)
    with pytest.raises(LensError, match="z_source"):
        einstein_radius(1e12, 1.0, 0.5)
    with pytest.raises(LensError, match="distance_convention"):
        einstein_radius(1e12, 0.5, 1.0, convention="comoving")


# --- presets and TOML overrides ------------------------------------------------------


def test_model_i_preset_is_the_documented_physics() -> None:
    p = load_params("model-i")
    assert (p.h0, p.om0, p.z_lens, p.z_source) == (70.0, 0.3, 0.5, 1.0)
    assert (p.lens_mass, p.lens_e1, p.lens_e2, p.shear_gamma1) == (1e12, 0.1, 0.0, 0.05)
    assert (p.source_amp, p.source_r_sersic, p.source_n_sersic) == (20.0, 0.25, 1.0)
    assert (p.source_e1, p.source_e2, p.source_center_max) == (-0.1, 0.1, 0.35)
    assert (p.n_subhalos, p.subhalo_beta, p.vortex_mass, p.vortex_elements) == (25, -0.9, 3e10, 100)
    assert (p.psf_fwhm, p.background_rms, p.field_of_view) == (0.087, 0.01, 7.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.lens_mass = 2e12  # type: ignore[misc]


def test_params_file_overrides_and_rejects_unknown_keys(tmp_path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('lens_mass = 5e11\nn_subhalos = 10\ndistance_convention = "angular"\n')
    p = load_params("model-i", good)
    assert (p.lens_mass, p.n_subhalos, p.distance_convention) == (5e11, 10, "angular")
    assert p.source_amp == MODEL_I.source_amp  # the rest stays the preset's

    bad = tmp_path / "bad.toml"
    bad.write_text("lens_mas = 5e11\n")
    with pytest.raises(LensError) as err:
        load_params("model-i", bad)
    message = str(err.value)
    assert "bad.toml" in message and "lens_mas" in message
    assert "valid parameters" in message and "lens_mass" in message and "psf_fwhm" in message


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('lens_mass = "big"\n', "not a number"),
        ("lens_mass = -1.0\n", "must be > 0"),
        ("n_subhalos = 2.5\n", "not an integer"),
        ("exposure_log10_min = 4.0\n", "larger than exposure_log10_max"),
        ('distance_convention = "comoving"\n', "distance_convention"),
        ("[physics]\nlens_mass = 1.0\n", "tables are not allowed"),
        ("lens_mass = \n", "not valid TOML"),
    ],
)
def test_params_file_bad_values(tmp_path, text: str, match: str) -> None:
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(LensError, match=match):
        load_params("model-i", path)


def test_unknown_preset_and_missing_file(tmp_path) -> None:
    with pytest.raises(LensError, match="model-i"):
        load_params("model-z")
    with pytest.raises(LensError, match="no such parameter file"):
        load_params("model-i", tmp_path / "missing.toml")


# --- scenes ---------------------------------------------------------------------------


def test_scene_draws_are_reproducible_and_follow_the_priors() -> None:
    a = draw_scene(MODEL_I, "substructure", "sphere", image_rng(7, "substructure", 1, 3))
    b = draw_scene(MODEL_I, "substructure", "sphere", image_rng(7, "substructure", 1, 3))
    c = draw_scene(MODEL_I, "substructure", "sphere", image_rng(7, "substructure", 1, 4))
    assert a == b and a != c
    assert a.lens_models == ("SIE", "SHEAR") + ("POINT_MASS",) * 25
    assert 10**3 <= a.exposure_time <= 10**3.5
    assert max(abs(a.source_kwargs["center_x"]), abs(a.source_kwargs["center_y"])) <= 0.35
    r = [np.hypot(k["center_x"], k["center_y"]) for k in a.lens_kwargs[2:]]
    assert min(r) >= 0.25 and max(r) <= 2.0
    vort = draw_scene(MODEL_I, "substructure", "vort", image_rng(7, "substructure", 2, 0))
    assert len(vort.lens_kwargs) == 2 + 100
    assert 1e-24 <= vort.meta["axion_mass"] <= 1e-22
    # the elements lie on one line through the centre, 3e10 M☉ in total
    xy = np.array([[k["center_x"], k["center_y"]] for k in vort.lens_kwargs[2:]])
    assert np.allclose(xy[0], -xy[-1]) and np.linalg.matrix_rank(xy, tol=1e-9) == 1
    per_element = vort.lens_kwargs[2]["theta_E"]
    assert per_element == pytest.approx(theta_e(MODEL_I, 3e10 / 100))


def test_subhalo_masses_follow_the_power_law() -> None:
    u = np.random.default_rng(0).uniform(size=200_000)
    m = subhalo_masses(MODEL_I, u)
    assert m.min() >= 1e6 and m.max() <= 1e10
    # dN/dm ∝ m^-0.9: the CDF at m is (m^0.1 - lo^0.1) / (hi^0.1 - lo^0.1)
    mid = 1e8
    expected = (mid**0.1 - 1e6**0.1) / (1e10**0.1 - 1e6**0.1)
    assert np.mean(m < mid) == pytest.approx(expected, abs=0.005)


# --- rendering -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(MODEL_I, 150)


def test_noise_free_ring_sits_at_the_einstein_radius(renderer: Renderer) -> None:
    scene = centred_scene(MODEL_I, 1e3)
    expected_px = theta_e(MODEL_I, MODEL_I.lens_mass) / renderer.pixel_scale  # 25.6 px
    assert expected_px == pytest.approx(25.6, abs=0.1)
    assert abs(ring_radius(renderer.model(scene)) - expected_px) <= 1.5


def test_ring_radius_scales_with_size_and_convention() -> None:
    small = Renderer(MODEL_I, 76)  # the same 7.5″ field: the ring spans fewer pixels
    scene = centred_scene(MODEL_I, 1e3)
    assert abs(ring_radius(small.model(scene)) - 25.63 * 76 / 150) <= 1.0
    angular = dataclasses.replace(MODEL_I, distance_convention="angular")
    scene = centred_scene(angular, 1e3)
    assert abs(ring_radius(Renderer(angular, 150).model(scene)) - 33.3) <= 1.5


def test_noisy_high_exposure_image_keeps_the_ring(renderer: Renderer) -> None:
    scene = centred_scene(MODEL_I, 1e6)
    image = renderer.render(scene, np.random.default_rng(0))
    assert image.shape == (1, 150, 150) and image.dtype == np.float64
    assert abs(ring_radius(image[0]) - 25.6) <= 1.5


def test_substructure_changes_the_image_with_the_source_held_fixed(renderer: Renderer) -> None:
    source = centred_source(MODEL_I) | {"center_x": 0.1, "center_y": -0.05}
    images = {}
    for name in ("no", "sphere", "vort"):
        scene = substructure_scene(MODEL_I, name, source, 2e3, np.random.default_rng(5))
        images[name] = renderer.model(scene)
    peak = images["no"].max()

    def rel_diff(a: str, b: str) -> float:
        return float(np.abs(images[a] - images[b]).max() / peak)

    assert rel_diff("no", "sphere") > 0.01
    assert rel_diff("no", "vort") > 0.01
    assert rel_diff("sphere", "vort") > 0.01
    # ... yet all three are the same ring: the main lens dominates
    for name in ("sphere", "vort"):
        assert abs(ring_radius(images[name]) - ring_radius(images["no"])) <= 2


def test_noise_model_counts_are_integers_with_the_right_level(renderer: Renderer) -> None:
    flat = np.full((150, 150), 0.1)
    counts = renderer.observe(flat, 1000.0, np.random.default_rng(1))
    assert np.all(counts == np.round(counts)) and counts.min() >= 0
    # mean t·flux = 100 counts; variance = Poisson (100) + photon term (100) + (t·rms)² (100)
    assert counts.mean() == pytest.approx(100, rel=0.01)
    assert counts.var() == pytest.approx(300, rel=0.05)


def test_sky_brightness_adds_a_poisson_background() -> None:
    params = dataclasses.replace(MODEL_I, background_rms=0.0, sky_brightness=4.0)
    r = Renderer(params, 150)
    counts = r.observe(np.zeros((150, 150)), 1000.0, np.random.default_rng(2))
    expected = 4.0 * r.pixel_scale**2 * 1000.0  # 10 counts per pixel
    assert counts.mean() == pytest.approx(expected, rel=0.02)
    assert counts.var() == pytest.approx(2 * expected, rel=0.06)


def test_normalise() -> None:
    out = normalise(np.array([[2.0, 4.0], [6.0, 10.0]]))
    assert out.min() == 0.0 and out.max() == 1.0 and out[0, 1] == 0.25
    assert np.all(normalise(np.full((3, 3), 7.0)) == 0.0)


def test_lensfinding_lenses_make_rings_and_non_lenses_do_not() -> None:
    r = Renderer(MODEL_I, 150)
    n_ring = 0
    for k in range(6):
        lens = draw_scene(MODEL_I, "lensfinding", "lens", image_rng(0, "lensfinding", 0, k))
        nonlens = draw_scene(MODEL_I, "lensfinding", "nonlens", image_rng(0, "lensfinding", 1, k))
        assert lens.lens_models == ("SIE", "SHEAR") and nonlens.lens_models == ()
        assert lens.lens_light_kwargs is not None and nonlens.lens_light_kwargs is not None
        offset = np.hypot(nonlens.source_kwargs["center_x"], nonlens.source_kwargs["center_y"])
        assert 0.4 <= offset <= 2.0
        # without the foreground light, the lensed source spreads into a ring of radius θ_E
        dark = dataclasses.replace(lens, lens_light_kwargs=lens.lens_light_kwargs | {"amp": 0.0})
        expected = lens.lens_kwargs[0]["theta_E"] / r.pixel_scale
        n_ring += abs(ring_radius(r.model(dark)) - expected) <= 3
    assert n_ring >= 4  # a few strongly offset sources make arcs that peak elsewhere
