"""One module per `lens` command; each exposes ``register(app)``."""
