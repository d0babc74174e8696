"""Frozen dataclass configs per stage, loaded from TOML with ``--set key=value`` overrides.

Every key is checked: an unknown key (in the file or in ``--set``) is an error that lists the
valid keys with their defaults, and a value of the wrong type names the key, the value and
the expected type. The resolved config (``to_dict``) is what config.json and every
checkpoint hold, so a resumed task can refuse to mix two configs.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, Union

from lens.augment import AugmentConfig
from lens.errors import LensError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

STAGES = ("classify", "pretrain", "finetune")


@dataclass(frozen=True)
class ModelConfig:
    name: str = "resnet18"  # a key of lens.models.MODELS


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with a linear warm-up then cosine decay, stepped every optimizer step."""

    lr: float = 1e-3
    weight_decay: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.999
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01  # the cosine ends at lr * min_lr_ratio
    grad_clip: float = 0.0  # max global gradient norm; 0 = off

    def __post_init__(self) -> None:
        _check(self.lr > 0, "optim.lr", self.lr, "> 0")
        _check(self.weight_decay >= 0, "optim.weight_decay", self.weight_decay, ">= 0")
        _check(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "optim.beta1/beta2",
               (self.beta1, self.beta2), "in [0, 1)")
        _check(self.warmup_epochs >= 0, "optim.warmup_epochs", self.warmup_epochs, ">= 0")
        _check(0 <= self.min_lr_ratio <= 1, "optim.min_lr_ratio", self.min_lr_ratio, "in [0, 1]")
        _check(self.grad_clip >= 0, "optim.grad_clip", self.grad_clip, ">= 0")


@dataclass(frozen=True)
class MethodConfig:
    """The self-supervised method (a key of lens.ssl.METHODS) and its constructor params."""

    name: str = "simclr"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FinetuneSection:
    mode: Literal["linear", "mlp", "full"] = "linear"
    backbone_lr_scale: float = 0.1  # full mode: backbone lr = optim.lr * this
    hidden: int = 256  # mlp mode: feature_dim -> hidden -> classes
    balance: Literal["weighted_loss", "sampler", "none"] = "weighted_loss"

    def __post_init__(self) -> None:
        _check(self.backbone_lr_scale >= 0, "finetune.backbone_lr_scale",
               self.backbone_lr_scale, ">= 0")
        _check(self.hidden >= 1, "finetune.hidden", self.hidden, ">= 1")


@dataclass(frozen=True)
class BaseConfig:
    """Settings shared by every stage."""

    seed: int = 0
    epochs: int = 30
    batch_size: int = 128  # global: split evenly over the ranks
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    deterministic: bool = False
    channels_last: bool = True
    data_mode: Literal["auto", "memory", "stream"] = "auto"
    data_on_device: bool | Literal["auto"] = "auto"
    memory_limit_gb: float = 16.0
    num_workers: int = 4
    sync_batchnorm: bool = True
    checkpoint_every_steps: int = 0
    eval_every_epochs: int = 1
    n_boot: int = 1000
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, "epochs", self.epochs, ">= 1")
        _check(self.batch_size >= 1, "batch_size", self.batch_size, ">= 1")
        _check(self.memory_limit_gb >= 0, "memory_limit_gb", self.memory_limit_gb, ">= 0")
        _check(self.num_workers >= 0, "num_workers", self.num_workers, ">= 0")
        _check(self.checkpoint_every_steps >= 0, "checkpoint_every_steps",
               self.checkpoint_every_steps, ">= 0")
        _check(self.eval_every_epochs >= 1, "eval_every_epochs", self.eval_every_epochs, ">= 1")
        _check(self.n_boot >= 0, "n_boot", self.n_boot, ">= 0")
        _check(self.seed >= 0, "seed", self.seed, ">= 0")


@dataclass(frozen=True)
class ClassifyConfig(BaseConfig):
    class_weighting: bool = False  # weight the loss by inverse class frequency


@dataclass(frozen=True)
class PretrainConfig(BaseConfig):
    method: MethodConfig = field(default_factory=MethodConfig)
    linear_probe: bool = True  # labeled, folded files: logistic regression on the features
    augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(dihedral=False))


@dataclass(frozen=True)
class FinetuneConfig(BaseConfig):
    finetune: FinetuneSection = field(default_factory=FinetuneSection)


CONFIGS: dict[str, type[BaseConfig]] = {
    "classify": ClassifyConfig,
    "pretrain": PretrainConfig,
    "finetune": FinetuneConfig,
}


def _check(ok: bool, key: str, value: Any, rule: str) -> None:
    if not ok:
        raise LensError(f"config key {key} = {value!r} must be {rule}")


# ---------------------------------------------------------------------------------------
# Generic loading: dict -> dataclass with key and type checks


def _valid_keys(cls: type) -> str:
    default = cls()
    return ", ".join(f"{f.name}={_show(getattr(default, f.name))}" for f in fields(cls))


def _show(value: Any) -> str:
    return f"[{type(value).__name__}]" if is_dataclass(value) else repr(value)


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is dict:
        return "table"
    return getattr(tp, "__name__", str(tp))


def _matches(value: Any, tp: Any) -> tuple[bool, Any]:
    """Does ``value`` fit type ``tp``? Returns (ok, value converted where lossless)."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return value in typing.get_args(tp) and not isinstance(value, bool), value
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            ok, converted = _matches(value, arg)
            if ok:
                return True, converted
        return False, value
    if origin is dict or tp is dict:
        return isinstance(value, dict), value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        return False, value
    if tp is str:
        return isinstance(value, str), value
    return isinstance(value, tp), value


def from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    """Build dataclass ``cls`` from a (nested) dict, checking every key and type."""
    if not isinstance(data, dict):
        raise LensError(f"config section [{where.rstrip('.')}] must be a table, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        section = f" in [{where.rstrip('.')}]" if where else ""
        raise LensError(
            f"unknown config key(s) {', '.join(where + k for k in unknown)}{section}; "
            f"valid keys: {_valid_keys(cls)}"
        )
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        tp = hints[name]
        if is_dataclass(tp):
            kwargs[name] = from_dict(tp, value, f"{where}{name}.")
            continue
        ok, converted = _matches(value, tp)
        if not ok:
            raise LensError(
                f"config key {where}{name} = {value!r} has the wrong type: "
                f"expected {_type_name(tp)}, got {type(value).__name__}"
            )
        kwargs[name] = converted
    return cls(**kwargs)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr=0.01"`` -> (["optim", "lr"], 0.01). Values use TOML syntax; a value that
    is not valid TOML is taken as a bare string (so ``model.name=resnet18`` works)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise LensError(f"--set {text!r}: expected key=value, e.g. optim.lr=0.01")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.split("."), value


def _apply_override(cls: type, data: dict[str, Any], path: list[str], value: Any,
                    text: str) -> None:
    """Set ``data[path] = value``, first checking that every part of the path is a key."""
    hints = typing.get_type_hints(cls)
    head, rest = path[0], path[1:]
    names = [f.name for f in fields(cls)]
    if head not in names:
        raise LensError(
            f"--set {text}: unknown config key {head!r}; valid keys: {_valid_keys(cls)}"
        )
    tp = hints[head]
    if is_dataclass(tp) and rest:
        section = data.setdefault(head, {})
        if not isinstance(section, dict):
            raise LensError(f"--set {text}: config key {head} is not a table")
        _apply_override(tp, section, rest, value, text)
    elif rest and (typing.get_origin(tp) is dict or tp is dict):
        table = data.setdefault(head, {})
        for part in rest[:-1]:
            table = table.setdefault(part, {})
        table[rest[-1]] = value
    elif rest:
        raise LensError(f"--set {text}: config key {head} is a value, not a table")
    else:
        data[head] = value


def load_config(stage: str, path: str | Path | None = None,
                overrides: tuple[str, ...] | list[str] = ()) -> BaseConfig:
    """The stage's config: defaults, then the TOML file, then each ``--set`` in order."""
    if stage not in CONFIGS:
        raise LensError(f"unknown stage {stage!r}; valid stages: {', '.join(STAGES)}")
    cls = CONFIGS[stage]
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise LensError(f"{path}: config file not found")
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise LensError(f"{path}: not valid TOML ({exc})") from None
    for text in overrides:
        keys, value = parse_override(text)
        _apply_override(cls, data, keys, value, text)
    try:
        return from_dict(cls, data)
    except LensError as exc:
        where = f"{path}: " if path is not None else ""
        raise LensError(f"{where}{exc}") from None
    except TypeError as exc:  # e.g. a section's own __post_init__ rejecting a value type
        raise LensError(f"{path or 'config'}: {exc}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config (JSON- and torch.load(weights_only)-safe)."""
    return dataclasses.asdict(cfg)


def diff(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Keys whose values differ between two config dicts, as 'key: old -> new' lines."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<missing>"), new.get(key, "<missing>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += diff(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out
