"""Render a Scene with lenstronomy and observe it through the instrument.

``Renderer`` builds the pixel grid and PSF once, and one lenstronomy ``ImageModel`` per
distinct list of lens profiles (a worker renders thousands of images with a handful of
them). Noise follows the DeepLense "Model I" recipe, with the image's own RNG:

    expected = t · (model + sky + n_photon + n_background),  counts = Poisson(max(expected, 0))

where n_photon ~ N(0, sqrt(|model + sky| / t)) and n_background ~ N(0, background_rms).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lens.simulate.presets import SimParams
from lens.simulate.scene import Scene


class Renderer:
    """lenstronomy objects for one (params, size); renders any number of scenes."""

    def __init__(self, params: SimParams, size: int):
        from lenstronomy.Data.imaging_data import ImageData
        from lenstronomy.Data.psf import PSF
        from lenstronomy.Util import util

        self.params = params
        self.size = size
        self.pixel_scale = params.field_of_view / size
        # inverse=False: x grows with the column index, as in the original simulations.
        _, _, ra0, dec0, _, _, pix2coord, _ = util.make_grid_with_coordtransform(
            num_pix=size, delta_pix=self.pixel_scale, inverse=False
        )
        self._data = ImageData(
            image_data=np.zeros((size, size)),
            ra_at_xy_0=ra0,
            dec_at_xy_0=dec0,
            transform_pix2angle=pix2coord,
        )
        self._psf = PSF(
            psf_type="GAUSSIAN",
            fwhm=params.psf_fwhm,
            pixel_size=self.pixel_scale,
            truncation=params.psf_truncation,
        )
        self._models: dict[tuple[tuple[str, ...], bool], Any] = {}
        # sky surface brightness → flux per pixel, the same unit as the rendered model
        self.sky_per_pixel = params.sky_brightness * self.pixel_scale**2

    def _image_model(self, lens_models: tuple[str, ...], lens_light: bool) -> Any:
        key = (lens_models, lens_light)
        if key not in self._models:
            from lenstronomy.ImSim.image_model import ImageModel
            from lenstronomy.LensModel.lens_model import LensModel
            from lenstronomy.LightModel.light_model import LightModel

            self._models[key] = ImageModel(
                self._data,
                self._psf,
                lens_model_class=LensModel(list(lens_models)),
                source_model_class=LightModel(["SERSIC_ELLIPSE"]),
                lens_light_model_class=LightModel(["SERSIC_ELLIPSE"]) if lens_light else None,
                kwargs_numerics={"supersampling_factor": 1, "supersampling_convolution": False},
            )
        return self._models[key]

    def model(self, scene: Scene) -> np.ndarray:
        """Noise-free flux per pixel (PSF-convolved), shape (size, size)."""
        has_light = scene.lens_light_kwargs is not None
        image_model = self._image_model(scene.lens_models, has_light)
        image = image_model.image(
            kwargs_lens=list(scene.lens_kwargs),
            kwargs_source=[scene.source_kwargs],
            kwargs_lens_light=[scene.lens_light_kwargs] if has_light else None,
        )
        return np.asarray(image, dtype=np.float64)

    def observe(
        self, model: np.ndarray, exposure_time: float, rng: np.random.Generator
    ) -> np.ndarray:
        """Integer photon counts (as float64) of a noise-free model."""
        flux = model + self.sky_per_pixel
        photon = rng.standard_normal(flux.shape) * np.sqrt(np.abs(flux) / exposure_time)
        background = rng.standard_normal(flux.shape) * self.params.background_rms
        expected = np.clip(exposure_time * (flux + photon + background), 0.0, None)
        return rng.poisson(expected).astype(np.float64)

    def render(self, scene: Scene, rng: np.random.Generator) -> np.ndarray:
        """The published form of one image: counts, min-max normalised, float64 (1, H, W)."""
        counts = self.observe(self.model(scene), scene.exposure_time, rng)
        return normalise(counts)[None]


def normalise(image: np.ndarray) -> np.ndarray:
    """Min-max scale to exactly [0, 1] (a constant image becomes all zeros)."""
    image = np.asarray(image, dtype=np.float64)
    lo, hi = float(image.min()), float(image.max())
    if hi <= lo:
        return np.zeros_like(image)
    return (image - lo) / (hi - lo)
