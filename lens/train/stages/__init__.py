"""One module per stage; each exposes ``run(ctx) -> result dict``.

Imported lazily so that a classify task never imports the self-supervised methods.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def _lazy(name: str) -> Callable[[Any], dict[str, Any]]:
    def run(ctx: Any) -> dict[str, Any]:
        return importlib.import_module(f"lens.train.stages.{name}").run(ctx)

    return run


STAGES: dict[str, Callable[[Any], dict[str, Any]]] = {
    name: _lazy(name) for name in ("classify", "pretrain", "finetune")
}
