"""One image's explicit physical parameters, drawn from a seeded RNG (no lenstronomy here).

A ``Scene`` holds everything lenstronomy needs to render an image: the lens profiles and
their keyword arguments, the source and (optional) foreground-galaxy light, and the
exposure time. ``draw_scene`` draws it; tests build scenes by hand to hold a source fixed.

Coordinates: x (RA direction) grows with the column index, y with the row index; the image
centre (pixel (n-1)/2, (n-1)/2) is (0, 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lens.errors import LensError
from lens.simulate.cosmology import einstein_radius_per_sqrt_mass
from lens.simulate.presets import SimParams

DATASETS: dict[str, tuple[str, ...]] = {
    "substructure": ("no", "sphere", "vort"),
    "lensfinding": ("lens", "nonlens"),
}


@dataclass(frozen=True)
class Scene:
    """Explicit parameters of one image (lenstronomy profile names and keyword dicts)."""

    lens_models: tuple[str, ...]
    lens_kwargs: tuple[dict[str, float], ...]
    source_kwargs: dict[str, float]  # SERSIC_ELLIPSE
    exposure_time: float
    lens_light_kwargs: dict[str, float] | None = None  # SERSIC_ELLIPSE foreground galaxy
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. the axion mass of a vortex


def image_rng(seed: int, dataset: str, class_index: int, k: int) -> np.random.Generator:
    """The RNG of image ``k`` of class ``class_index``: independent of workers and shards."""
    dataset_id = list(DATASETS).index(dataset)
    ss = np.random.SeedSequence(seed, spawn_key=(dataset_id, class_index, k))
    return np.random.default_rng(ss)


def theta_e(params: SimParams, mass: float | np.ndarray) -> float | np.ndarray:
    """Einstein radius (arcsec) of ``mass`` (M☉) in the preset's cosmology and convention."""
    factor = einstein_radius_per_sqrt_mass(
        params.z_lens, params.z_source, params.h0, params.om0, params.distance_convention
    )
    return factor * np.sqrt(mass)


def ellipticity(q: float, phi: float) -> tuple[float, float]:
    """lenstronomy (e1, e2) of axis ratio ``q`` with the major axis at angle ``phi``."""
    e = (1.0 - q) / (1.0 + q)
    return e * float(np.cos(2 * phi)), e * float(np.sin(2 * phi))


# --- substructure data set -------------------------------------------------------------


def main_lens(params: SimParams) -> tuple[tuple[str, ...], tuple[dict[str, float], ...]]:
    """The SIE + external shear shared by every substructure class."""
    sie = {
        "theta_E": float(theta_e(params, params.lens_mass)),
        "e1": params.lens_e1,
        "e2": params.lens_e2,
        "center_x": 0.0,
        "center_y": 0.0,
    }
    shear = {"gamma1": params.shear_gamma1, "gamma2": params.shear_gamma2}
    return ("SIE", "SHEAR"), (sie, shear)


def draw_source(params: SimParams, rng: np.random.Generator) -> dict[str, float]:
    cx, cy = rng.uniform(-params.source_center_max, params.source_center_max, size=2)
    return {
        "amp": params.source_amp,
        "R_sersic": params.source_r_sersic,
        "n_sersic": params.source_n_sersic,
        "e1": params.source_e1,
        "e2": params.source_e2,
        "center_x": float(cx),
        "center_y": float(cy),
    }


def draw_exposure(params: SimParams, rng: np.random.Generator) -> float:
    return float(10 ** rng.uniform(params.exposure_log10_min, params.exposure_log10_max))


def subhalo_masses(params: SimParams, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF of dN/dm ∝ m^beta on [mass_min, mass_max] at uniform deviates ``u``."""
    b1 = params.subhalo_beta + 1.0
    lo, hi = params.subhalo_mass_min**b1, params.subhalo_mass_max**b1
    return (lo + (hi - lo) * u) ** (1.0 / b1)


def draw_subhalos(params: SimParams, rng: np.random.Generator) -> list[dict[str, float]]:
    n = params.n_subhalos
    masses = subhalo_masses(params, rng.uniform(0.0, 1.0, size=n))
    r = rng.uniform(params.subhalo_r_min, params.subhalo_r_max, size=n)
    angle = rng.uniform(0.0, 2 * np.pi, size=n)
    radii = theta_e(params, masses)
    return [
        {"theta_E": float(t), "center_x": float(x), "center_y": float(y)}
        for t, x, y in zip(radii, r * np.cos(angle), r * np.sin(angle), strict=True)
    ]


def axion_half_length(axion_mass_ev: float) -> float:
    """Half-length (arcsec) of the vortex line: 0.06 / (2 m) · 1e-22 (valid for z_lens 0.5)."""
    return 0.06 / (2.0 * axion_mass_ev) * 1e-22


def draw_vortex(
    params: SimParams, rng: np.random.Generator
) -> tuple[list[dict[str, float]], float]:
    """Equal point masses evenly along a line through the centre; returns (kwargs, m_axion)."""
    log_m = rng.uniform(params.axion_log10_mass_min, params.axion_log10_mass_max)
    axion_mass = float(10**log_m)
    angle = rng.uniform(0.0, 2 * np.pi)
    n = params.vortex_elements
    radius = float(theta_e(params, params.vortex_mass / n))
    s = np.linspace(-1.0, 1.0, n) * axion_half_length(axion_mass)
    xs, ys = s * np.cos(angle), s * np.sin(angle)
    kwargs = [
        {"theta_E": radius, "center_x": float(x), "center_y": float(y)}
        for x, y in zip(xs, ys, strict=True)
    ]
    return kwargs, axion_mass


def substructure_scene(
    params: SimParams,
    class_name: str,
    source: dict[str, float],
    exposure_time: float,
    rng: np.random.Generator | None,
) -> Scene:
    """The scene of one substructure class around a given source (``rng`` draws the rest;
    the ``no`` class draws nothing and accepts None)."""
    models, kwargs = main_lens(params)
    meta: dict[str, Any] = {}
    if class_name == "no":
        extra: list[dict[str, float]] = []
    elif class_name in ("sphere", "vort"):
        if rng is None:
            raise ValueError(f"class {class_name!r} needs an rng")
        if class_name == "sphere":
            extra = draw_subhalos(params, rng)
        else:
            extra, meta["axion_mass"] = draw_vortex(params, rng)
    else:
        raise LensError(f"unknown substructure class {class_name!r}")
    return Scene(
        lens_models=models + ("POINT_MASS",) * len(extra),
        lens_kwargs=kwargs + tuple(extra),
        source_kwargs=source,
        exposure_time=exposure_time,
        meta=meta,
    )


# --- lens-finding data set -------------------------------------------------------------


def _draw_galaxy(
    rng: np.random.Generator,
    amp: tuple[float, float],
    r_sersic: tuple[float, float],
    n_sersic: tuple[float, float],
    q_min: float,
) -> dict[str, float]:
    e1, e2 = ellipticity(rng.uniform(q_min, 1.0), rng.uniform(0.0, np.pi))
    return {
        "amp": float(rng.uniform(*amp)),
        "R_sersic": float(rng.uniform(*r_sersic)),
        "n_sersic": float(rng.uniform(*n_sersic)),
        "e1": e1,
        "e2": e2,
        "center_x": 0.0,
        "center_y": 0.0,
    }


def lensfinding_scene(params: SimParams, class_name: str, rng: np.random.Generator) -> Scene:
    """A lens (SIE + shear + foreground light lensing a Sérsic source) or a non-lens.

    The non-lens has the same two galaxies with no deflection: the background galaxy sits
    unlensed beside the foreground one, at distances where arcs would appear.
    """
    if class_name not in DATASETS["lensfinding"]:
        raise LensError(f"unknown lens-finding class {class_name!r}")
    exposure = draw_exposure(params, rng)
    p = params
    q = rng.uniform(p.lf_lens_q_min, 1.0)
    phi = rng.uniform(0.0, np.pi)
    e1, e2 = ellipticity(q, phi)
    light = {
        "amp": float(rng.uniform(p.lf_light_amp_min, p.lf_light_amp_max)),
        "R_sersic": float(rng.uniform(p.lf_light_r_sersic_min, p.lf_light_r_sersic_max)),
        "n_sersic": p.lf_light_n_sersic,
        "e1": e1,
        "e2": e2,
        "center_x": 0.0,
        "center_y": 0.0,
    }
    source = _draw_galaxy(
        rng,
        (p.lf_source_amp_min, p.lf_source_amp_max),
        (p.lf_source_r_sersic_min, p.lf_source_r_sersic_max),
        (p.lf_source_n_min, p.lf_source_n_max),
        p.lf_source_q_min,
    )
    angle = rng.uniform(0.0, 2 * np.pi)
    if class_name == "lens":
        r = p.lf_source_center_max * np.sqrt(rng.uniform())  # uniform in a disc
        gamma, gamma_angle = rng.uniform(0.0, p.lf_shear_max), rng.uniform(0.0, np.pi)
        sie = {
            "theta_E": float(rng.uniform(p.lf_theta_e_min, p.lf_theta_e_max)),
            "e1": e1,
            "e2": e2,
            "center_x": 0.0,
            "center_y": 0.0,
        }
        shear = {
            "gamma1": float(gamma * np.cos(2 * gamma_angle)),
            "gamma2": float(gamma * np.sin(2 * gamma_angle)),
        }
        models: tuple[str, ...] = ("SIE", "SHEAR")
        kwargs: tuple[dict[str, float], ...] = (sie, shear)
    else:
        r = rng.uniform(p.lf_nonlens_offset_min, p.lf_nonlens_offset_max)
        models, kwargs = (), ()
    source["center_x"] = float(r * np.cos(angle))
    source["center_y"] = float(r * np.sin(angle))
    return Scene(models, kwargs, source, exposure, lens_light_kwargs=light)


def draw_scene(
    params: SimParams, dataset: str, class_name: str, rng: np.random.Generator
) -> Scene:
    """Draw one image's scene. The draw order is fixed: it is part of reproducibility."""
    if dataset == "lensfinding":
        return lensfinding_scene(params, class_name, rng)
    if dataset != "substructure":
        raise LensError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    exposure = draw_exposure(params, rng)
    source = draw_source(params, rng)
    return substructure_scene(params, class_name, source, exposure, rng)
