"""Simulated DeepLense-like strong-lensing images (`lens simulate`).

presets.py   every physical parameter as a frozen dataclass; named presets; TOML overrides
cosmology.py Einstein radius of a mass (luminosity or angular-diameter distances)
scene.py     draws one image's explicit parameters from a seeded RNG (no lenstronomy)
physics.py   renders a scene with lenstronomy and adds the instrument noise
run.py       which images a shard makes, the worker pool, atomic .npy writing

lenstronomy is imported only in physics.py, and only when an image is rendered.
"""
