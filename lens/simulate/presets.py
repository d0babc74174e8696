"""Every physical parameter of the simulator, as one frozen dataclass, and the named presets.

``model-i`` is the documented DeepLense "Model I" physics (docs/SIMULATION.md lists the
source of each number). A TOML file can override any field (``lens simulate --params``);
unknown keys are errors that list the valid keys.

Units: angles in arcseconds, masses in solar masses, fluxes in lenstronomy amplitude units
(surface brightness per arcsec²; a pixel receives brightness × pixel area), exposure time in
arbitrary units (expected photon counts = exposure time × flux).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lens.errors import LensError

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]


@dataclass(frozen=True)
class SimParams:
    """The physics of one simulated data set. Field names are the TOML keys."""

    # --- geometry and cosmology (flat ΛCDM) ---
    h0: float = 70.0
    om0: float = 0.3
    ob0: float = 0.05  # recorded for completeness; flat-ΛCDM distances depend on om0 only
    z_lens: float = 0.5
    z_source: float = 1.0
    distance_convention: str = "luminosity"  # "luminosity" (original code) or "angular"

    # --- main lens: SIE + external shear (substructure data sets) ---
    lens_mass: float = 1e12
    lens_e1: float = 0.1
    lens_e2: float = 0.0
    shear_gamma1: float = 0.05
    shear_gamma2: float = 0.0

    # --- source: elliptical Sérsic, centre uniform in a square ---
    source_amp: float = 20.0
    source_r_sersic: float = 0.25
    source_n_sersic: float = 1.0
    source_e1: float = -0.1
    source_e2: float = 0.1
    source_center_max: float = 0.35  # centre ~ U(-max, max) on each axis

    # --- sphere: CDM point-mass subhalos ---
    n_subhalos: int = 25
    subhalo_mass_min: float = 1e6
    subhalo_mass_max: float = 1e10
    subhalo_beta: float = -0.9  # dN/dm ∝ m^beta
    subhalo_r_min: float = 0.25
    subhalo_r_max: float = 2.0

    # --- vort: axion vortex, a line of point masses through the centre ---
    vortex_mass: float = 3e10
    vortex_elements: int = 100
    axion_log10_mass_min: float = -24.0  # eV
    axion_log10_mass_max: float = -22.0

    # --- instrument and noise ---
    field_of_view: float = 7.5  # arcsec on a side, whatever the pixel count
    psf_fwhm: float = 0.087
    psf_truncation: float = 3.0
    background_rms: float = 0.01  # Gaussian noise per pixel, flux units
    sky_brightness: float = 0.0  # uniform sky, per arcsec²; adds Poisson background
    exposure_log10_min: float = 3.0  # exposure time t = 10^U(min, max)
    exposure_log10_max: float = 3.5

    # --- lens finding (binary lens / non-lens) ---
    lf_theta_e_min: float = 0.5  # SIE Einstein radius of lenses, arcsec
    lf_theta_e_max: float = 1.6
    lf_lens_q_min: float = 0.6  # axis ratio of lens mass and light, U(q_min, 1)
    lf_shear_max: float = 0.08  # |gamma| ~ U(0, max), random direction
    lf_light_amp_min: float = 1.0  # foreground (lens) galaxy, Sérsic
    lf_light_amp_max: float = 10.0
    lf_light_r_sersic_min: float = 0.3
    lf_light_r_sersic_max: float = 1.0
    lf_light_n_sersic: float = 3.0
    lf_source_amp_min: float = 10.0  # background galaxy
    lf_source_amp_max: float = 60.0
    lf_source_r_sersic_min: float = 0.1
    lf_source_r_sersic_max: float = 0.4
    lf_source_n_min: float = 0.8
    lf_source_n_max: float = 2.5
    lf_source_q_min: float = 0.4
    lf_source_center_max: float = 0.3  # lenses: source behind the lens, within this radius
    lf_nonlens_offset_min: float = 0.4  # non-lenses: the unlensed galaxy's distance
    lf_nonlens_offset_max: float = 2.0  # from the foreground galaxy

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type == "str":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise LensError(f"parameter {f.name} = {value!r} is not a number")
            if not math.isfinite(value):
                raise LensError(f"parameter {f.name} = {value!r} is not finite")
            if f.type == "int" and int(value) != value:
                raise LensError(f"parameter {f.name} = {value!r} is not an integer")
        from lens.simulate.cosmology import CONVENTIONS

        if self.distance_convention not in CONVENTIONS:
            raise LensError(
                f"parameter distance_convention = {self.distance_convention!r} is not one of "
                f"{', '.join(CONVENTIONS)}"
            )
        positive = (
            "h0", "lens_mass", "source_r_sersic", "source_n_sersic", "subhalo_mass_min",
            "vortex_mass", "vortex_elements", "field_of_view", "psf_fwhm", "psf_truncation",
            "lf_theta_e_min", "lf_light_r_sersic_min", "lf_light_n_sersic",
            "lf_source_r_sersic_min", "lf_source_n_min", "lf_lens_q_min", "lf_source_q_min",
        )  # fmt: skip
        for name in positive:
            if getattr(self, name) <= 0:
                raise LensError(f"parameter {name} = {getattr(self, name)} must be > 0")
        non_negative = (
            "n_subhalos", "subhalo_r_min", "background_rms", "sky_brightness",
            "source_center_max", "lf_shear_max", "lf_light_amp_min", "lf_source_amp_min",
            "lf_source_center_max", "lf_nonlens_offset_min",
        )  # fmt: skip
        for name in non_negative:
            if getattr(self, name) < 0:
                raise LensError(f"parameter {name} = {getattr(self, name)} must be >= 0")
        ranges = [
            ("z_lens", "z_source"),
            ("subhalo_mass_min", "subhalo_mass_max"),
            ("subhalo_r_min", "subhalo_r_max"),
            ("axion_log10_mass_min", "axion_log10_mass_max"),
            ("exposure_log10_min", "exposure_log10_max"),
            ("lf_theta_e_min", "lf_theta_e_max"),
            ("lf_light_amp_min", "lf_light_amp_max"),
            ("lf_light_r_sersic_min", "lf_light_r_sersic_max"),
            ("lf_source_amp_min", "lf_source_amp_max"),
            ("lf_source_r_sersic_min", "lf_source_r_sersic_max"),
            ("lf_source_n_min", "lf_source_n_max"),
            ("lf_nonlens_offset_min", "lf_nonlens_offset_max"),
        ]
        for lo, hi in ranges:
            if getattr(self, lo) > getattr(self, hi):
                lo_value, hi_value = getattr(self, lo), getattr(self, hi)
                raise LensError(
                    f"parameter {lo} = {lo_value} is larger than {hi} = {hi_value}"
                )
        if self.subhalo_beta == -1.0:
            raise LensError("parameter subhalo_beta = -1 is not supported (log-uniform masses)")
        for name in ("lf_lens_q_min", "lf_source_q_min"):
            if getattr(self, name) > 1:
                raise LensError(f"parameter {name} = {getattr(self, name)} must be <= 1")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(SimParams)]


MODEL_I = SimParams()

# Calibrated on the public Common Test I files: every summary statistic of docs/SIMULATION.md
# within half a real standard deviation of the real mean (tests/test_stats_calibration.py).
COMMON_TEST_I = dataclasses.replace(
    MODEL_I,
    # smaller rings (23 px, not 26): a lighter main halo
    lens_mass=0.92e12,
    # light elongated along x (horizontal elongation 0.34, not 0.07): stronger external shear
    shear_gamma1=0.19,
    # twice the light above the background and twice the bright pixels: a larger, brighter
    # source, a little closer to the optical axis (more complete rings)
    source_r_sersic=0.38,
    source_amp=43.0,
    source_center_max=0.33,
    # a faint, smooth background (std 0.004 of the peak, not 0.025): photon noise of a
    # uniform sky instead of Gaussian read noise, and a nearly constant exposure time
    background_rms=0.0,
    sky_brightness=2.5,
    exposure_log10_min=3.4,
    exposure_log10_max=3.5,
)

PRESETS: dict[str, SimParams] = {
    "model-i": MODEL_I,
    "common-test-i": COMMON_TEST_I,
}


def with_overrides(base: SimParams, overrides: dict[str, Any], origin: str) -> SimParams:
    """``base`` with ``overrides`` applied; unknown keys raise LensError naming ``origin``."""
    valid = field_names()
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise LensError(
            f"{origin}: unknown parameter(s) {', '.join(unknown)}; valid parameters: "
            f"{', '.join(valid)}"
        )
    types = {f.name: f.type for f in dataclasses.fields(SimParams)}
    clean: dict[str, Any] = {}
    for key, value in overrides.items():
        if types[key] == "float" and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if types[key] == "int" and isinstance(value, float) and value.is_integer():
            value = int(value)
        if types[key] == "str" and not isinstance(value, str):
            raise LensError(f"{origin}: parameter {key} = {value!r} is not a string")
        clean[key] = value
    try:
        return dataclasses.replace(base, **clean)
    except LensError as exc:
        raise LensError(f"{origin}: {exc}") from None


def load_params(preset: str = "model-i", params_file: str | Path | None = None) -> SimParams:
    """The preset's parameters, overridden by a flat TOML file of ``key = value`` lines."""
    if preset not in PRESETS:
        raise LensError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    params = PRESETS[preset]
    if params_file is None:
        return params
    path = Path(params_file)
    try:
        with path.open("rb") as f:
            overrides = tomllib.load(f)
    except FileNotFoundError:
        raise LensError(f"{path}: no such parameter file") from None
    except tomllib.TOMLDecodeError as exc:
        raise LensError(f"{path}: not valid TOML ({exc})") from None
    nested = [k for k, v in overrides.items() if isinstance(v, dict)]
    if nested:
        raise LensError(
            f"{path}: tables are not allowed ([{nested[0]}]); write flat `key = value` lines"
        )
    return with_overrides(params, overrides, str(path))
