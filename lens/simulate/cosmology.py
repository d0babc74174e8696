"""Einstein radius of a point mass in flat ΛCDM, without astropy (fast to import).

θ_E = sqrt(4 G M / c² · D_LS / (D_L D_S)). Two distance conventions:

- ``luminosity``: D = luminosity distances and D_LS = D_S − D_L. This is what the original
  DeepLense "Model I" code used (unusual, but it sets the published images' ring size:
  θ_E(1e12 M☉) ≈ 1.28″).
- ``angular``: the textbook angular-diameter distances, D_LS = (D_C(S) − D_C(L)) / (1 + z_S)
  in a flat universe (θ_E(1e12 M☉) ≈ 1.66″).
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.integrate import quad

from lens.errors import LensError

G = 6.67430e-11  # m³ kg⁻¹ s⁻², CODATA 2018 (as astropy)
C = 299_792_458.0  # m/s
M_SUN = 1.988409870698051e30  # kg, IAU 2015 nominal (as astropy)
MPC = 3.0856775814913673e22  # m
RAD_TO_ARCSEC = 180.0 / np.pi * 3600.0

CONVENTIONS = ("luminosity", "angular")


def comoving_distance(z: float, h0: float, om0: float) -> float:
    """Line-of-sight comoving distance in metres (flat ΛCDM, no radiation)."""
    hubble_distance = C / 1000.0 / h0 * MPC  # c/H0 with H0 in km/s/Mpc

    def inv_e(zz: float) -> float:
        return 1.0 / np.sqrt(om0 * (1.0 + zz) ** 3 + (1.0 - om0))

    integral, _ = quad(inv_e, 0.0, z, epsabs=0.0, epsrel=1e-10)
    return hubble_distance * integral


def einstein_radius(
    mass: float | np.ndarray,
    z_lens: float,
    z_source: float,
    h0: float = 70.0,
    om0: float = 0.3,
    convention: str = "luminosity",
) -> float | np.ndarray:
    """Einstein radius in arcseconds of ``mass`` (solar masses), scalar or array."""
    if z_source <= z_lens:
        raise LensError(f"z_source ({z_source}) must be larger than z_lens ({z_lens})")
    dc_l = comoving_distance(z_lens, h0, om0)
    dc_s = comoving_distance(z_source, h0, om0)
    if convention == "luminosity":
        d_l, d_s = dc_l * (1 + z_lens), dc_s * (1 + z_source)
        d_ls = d_s - d_l
    elif convention == "angular":
        d_l, d_s = dc_l / (1 + z_lens), dc_s / (1 + z_source)
        d_ls = (dc_s - dc_l) / (1 + z_source)
    else:
        raise LensError(
            f"distance_convention {convention!r} is not one of {', '.join(CONVENTIONS)}"
        )
    m = np.asarray(mass, dtype=np.float64) * M_SUN
    theta = np.sqrt(4.0 * G * m / C**2 * d_ls / (d_l * d_s)) * RAD_TO_ARCSEC
    return float(theta) if theta.ndim == 0 else theta


@functools.lru_cache(maxsize=32)
def einstein_radius_per_sqrt_mass(
    z_lens: float, z_source: float, h0: float, om0: float, convention: str
) -> float:
    """θ_E of 1 M☉ in arcsec; θ_E(M) = this × sqrt(M). Cached: one integral per setup."""
    return float(einstein_radius(1.0, z_lens, z_source, h0, om0, convention))
