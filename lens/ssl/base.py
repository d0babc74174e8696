"""What every self-supervised method shares: parameter checking and the no-op hooks."""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from lens.errors import LensError


def parse_params(method: str, params_cls: type, given: dict[str, Any]) -> Any:
    """Build ``params_cls(**given)``; unknown keys -> LensError listing valid keys and defaults."""
    valid = [f.name for f in fields(params_cls)]
    unknown = sorted(set(given) - set(valid))
    if unknown:
        defaults = ", ".join(f"{k}={v!r}" for k, v in asdict(params_cls()).items())
        raise LensError(
            f"unknown param(s) {unknown} for ssl method {method!r}; valid params: {defaults}"
        )
    defaults = asdict(params_cls())
    values = {key: _typed(method, key, value, defaults[key]) for key, value in given.items()}
    return params_cls(**values)


def _typed(method: str, key: str, value: Any, default: Any) -> Any:
    """``value`` as the type of ``default`` (an int is a fine float), else a LensError."""
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = True
    if not ok:
        raise LensError(f"ssl method {method!r}: {key} must be of type "
                        f"{type(default).__name__} (default {default!r}), got {value!r}")
    return value


def check(ok: bool, method: str, key: str, value: Any, expected: str) -> None:
    """Raise a LensError naming the method, the key and the value when ``ok`` is false."""
    if not ok:
        raise LensError(f"ssl method {method!r}: {key} must be {expected}, got {value!r}")


class SSLMethod(nn.Module):
    """Base class: holds ``backbone``, ``feature_dim`` and the validated ``params``.

    Subclasses set ``name`` and ``Params`` (a frozen dataclass whose ``__post_init__``
    checks ranges) and implement ``forward(x, generator) -> scalar loss``.
    """

    name: ClassVar[str]
    Params: ClassVar[type]

    def __init__(self, backbone: nn.Module, feature_dim: int, **params: Any):
        super().__init__()
        check(isinstance(feature_dim, int) and feature_dim >= 1, self.name, "feature_dim",
              feature_dim, "a positive integer")
        self.backbone = backbone
        self.feature_dim = feature_dim
        self.params = parse_params(self.name, self.Params, params)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """The method's parameters and their default values (for `--help` and configs)."""
        return asdict(cls.Params())

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError

    def after_step(self) -> None:
        """Called by the training loop after every optimizer step; most methods need nothing."""


def mlp(in_dim: int, hidden_dim: int, out_dim: int, batch_norm: bool = True) -> nn.Sequential:
    """Linear -> [BatchNorm] -> ReLU -> Linear: the projection/prediction head of SSL papers."""
    layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(hidden_dim))
    layers += [nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim)]
    return nn.Sequential(*layers)
