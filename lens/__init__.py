"""lens: DeepLense strong-lensing experiments as reproducible batch jobs."""

__version__ = "0.1.0"
