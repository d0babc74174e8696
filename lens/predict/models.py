"""The fold models of a trained run: found, rebuilt from their files, checked to agree.

A fold's model is RUN/<stage>/fold_<K>/model.pt (weights, config, how the training data
was packed). Runs trained before model.pt existed fall back to the final checkpoint.pt of
a completed task, with the packing read from the training file named in result.json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lens.errors import LensError

STAGES = ("classify", "finetune")
MODEL_FORMAT = "lens-model-1"  # lens.train.results.MODEL_FORMAT (not imported: it pulls in
# the training loop)


@dataclass(frozen=True)
class TrainedOn:
    """How the images the models were trained on were packed: what inference reproduces."""

    channels: int
    height: int
    width: int
    class_names: tuple[str, ...]
    normalize: str
    nan_policy: str
    size: int  # lens pack --size (0: not resized)
    crop: int  # lens pack --crop (0: not cropped)
    dtype: str
    path: str  # the training file, as training saw it
    created: str  # its creation time: with the shape, identifies the file

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainedOn:
        return cls(channels=int(d["channels"]), height=int(d["height"]), width=int(d["width"]),
                   class_names=tuple(d["class_names"]), normalize=str(d["normalize"]),
                   nan_policy=str(d.get("nan_policy", "error")), size=int(d.get("size", 0)),
                   crop=int(d.get("crop", 0)), dtype=str(d.get("dtype", "float32")),
                   path=str(d.get("path", "")), created=str(d.get("created", "")))

    def key(self) -> tuple:
        """What every fold model of one run must share."""
        return (self.channels, self.height, self.width, self.class_names, self.normalize)


@dataclass
class FoldModel:
    fold: int
    model: nn.Module
    source: Path  # the file the weights came from
    trained: TrainedOn
    config: dict[str, Any]


@dataclass
class Ensemble:
    """Every usable fold model of one stage of a run, in fold order."""

    run: Path
    stage: str
    members: list[FoldModel]
    missing: list[int] = field(default_factory=list)  # expected folds without a model

    @property
    def folds(self) -> list[int]:
        return [m.fold for m in self.members]

    @property
    def trained(self) -> TrainedOn:
        return self.members[0].trained

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.trained.class_names

    @property
    def models(self) -> list[nn.Module]:
        return [m.model for m in self.members]


def _fold_dirs(run: Path, stage: str) -> list[tuple[int, Path]]:
    out = []
    for d in (run / stage).glob("fold_*"):
        suffix = d.name[len("fold_"):]
        if d.is_dir() and suffix.isdigit():
            out.append((int(suffix), d))
    return sorted(out)


def _completed(task: Path) -> dict[str, Any] | None:
    try:
        result = json.loads((task / "result.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return result if isinstance(result, dict) and result.get("status") == "completed" else None


def _has_model(task: Path) -> bool:
    return (task / "model.pt").is_file() or (
        _completed(task) is not None and (task / "checkpoint.pt").is_file())


def choose_stage(run: str | Path, stage: str | None = None) -> str:
    """``stage`` if given (and trained), else finetune when it has a model, else classify."""
    run = Path(run)
    if not run.is_dir():
        raise LensError(f"{run}: no such run folder")
    if stage is not None:
        if stage not in STAGES:
            raise LensError(f"--stage {stage}: predictions come from {' or '.join(STAGES)}")
        if not any(_has_model(d) for _, d in _fold_dirs(run, stage)):
            raise LensError(f"{run / stage}: no trained fold model (fold_K/model.pt); "
                            f"train it with `lens train --stage {stage}` first")
        return stage
    for name in ("finetune", "classify"):
        if any(_has_model(d) for _, d in _fold_dirs(run, name)):
            return name
    raise LensError(f"{run}: no trained classify or finetune model "
                    f"(RUN/<stage>/fold_K/model.pt); train with `lens train` first")


def build_model(config: dict[str, Any], stage: str, trained: TrainedOn,
                state: dict[str, Any]) -> nn.Module:
    """The classifier of ``stage`` built by the training code itself (so the head of every
    finetune mode stays what training made), with ``state`` loaded."""
    from lens.models import build_classifier

    if trained.height != trained.width:
        raise LensError(f"models need square images, trained on {trained.height}x{trained.width}")
    name = config.get("model", {}).get("name", "resnet18")
    if stage == "classify":
        model = build_classifier(name, trained.channels, trained.height,
                                 len(trained.class_names))
    else:
        model = _finetune_model(config, trained, state)
    model.load_state_dict(state)
    return model


def _finetune_model(config: dict[str, Any], trained: TrainedOn, state: dict[str, Any]
                    ) -> nn.Module:
    """lens.train.stages.finetune.build_model, given the parts of a task it reads."""
    from types import SimpleNamespace

    from lens.train.config import CONFIGS, from_dict
    from lens.train.stages.finetune import build_model as finetune_model

    cfg = from_dict(CONFIGS["finetune"], config)
    ctx = SimpleNamespace(cfg=cfg, image_size=trained.height,
                          info=SimpleNamespace(channels=trained.channels,
                                               num_classes=len(trained.class_names)))
    encoder = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    return finetune_model(ctx, {"state_dict": encoder})


def _load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise LensError(f"{path}: cannot read the model ({type(exc).__name__}: {exc})") from None


def _from_model_file(path: Path) -> tuple[dict, dict, TrainedOn]:
    saved = _load(path)
    if not isinstance(saved, dict) or saved.get("format") != MODEL_FORMAT:
        raise LensError(f"{path}: not a lens model file (expected format {MODEL_FORMAT})")
    return saved["state_dict"], saved["config"], TrainedOn.from_dict(saved["data"])


def _from_checkpoint(task: Path, result: dict[str, Any]) -> tuple[dict, dict, TrainedOn]:
    """Runs from before model.pt: the last checkpoint of a completed task holds the final
    weights; the packing comes from the training file, which must still be the same."""
    from lens.data.h5file import read_info
    from lens.train.checkpoint import load
    from lens.train.results import training_data

    ckpt = load(task / "checkpoint.pt")
    data_path = Path(result.get("data", {}).get("path", ""))
    why = None
    if not data_path.is_file():
        why = f"the training file {data_path} is not readable here"
    else:
        info = read_info(data_path)
        if info.created != ckpt.get("data", {}).get("created"):
            why = f"the training file {data_path} was repacked since"
    if why:
        raise LensError(
            f"{task}: no model.pt (trained before lens wrote one), and {why}, so the image "
            f"size and normalisation the model expects are unknown; retrain the fold or "
            f"restore the training file")
    return ckpt["model"], ckpt["config"], TrainedOn.from_dict(training_data(info))


def load_fold(task: Path, stage: str, fold: int) -> FoldModel:
    """One fold's model in eval mode on the CPU; LensError when it cannot be rebuilt."""
    model_file = task / "model.pt"
    if model_file.is_file():
        state, config, trained = _from_model_file(model_file)
        source = model_file
    else:
        result = _completed(task)
        if result is None:
            raise LensError(f"{task}: no model.pt and the task is not complete")
        state, config, trained = _from_checkpoint(task, result)
        source = task / "checkpoint.pt"
    try:
        model = build_model(config, stage, trained, state)
    except RuntimeError as exc:
        why = " ".join(str(exc).split())  # torch's multi-line message on one line
        raise LensError(f"{source}: the weights do not fit the {stage} model of its config "
                        f"({why[:400]}{'...' if len(why) > 400 else ''})") from None
    return FoldModel(fold=fold, model=model.eval(), source=source, trained=trained,
                     config=config)


def _expected_folds(run: Path, stage: str) -> int:
    counts = [int((_completed(d) or {}).get("data", {}).get("n_folds", 0))
              for _, d in _fold_dirs(run, stage)]
    return max(counts, default=0)


def load_ensemble(run: str | Path, stage: str | None = None) -> Ensemble:
    """Every fold model of the stage (default: finetune if trained, else classify).

    Folds still training (no model yet) are skipped and listed in ``missing``; the models
    found must agree on the images they expect.
    """
    run = Path(run)
    stage = choose_stage(run, stage)
    members = [load_fold(d, stage, k) for k, d in _fold_dirs(run, stage) if _has_model(d)]
    keys = {m.trained.key() for m in members}
    if len(keys) > 1:
        listing = "; ".join(f"fold {m.fold}: {m.trained.channels}x{m.trained.height}x"
                            f"{m.trained.width}, classes {list(m.trained.class_names)}, "
                            f"normalize {m.trained.normalize}" for m in members)
        raise LensError(f"{run / stage}: the fold models were trained on different data "
                        f"({listing}); predict with models of one run")
    found = {m.fold for m in members}
    expected = max(_expected_folds(run, stage), max(found) + 1)
    missing = [k for k in range(expected) if k not in found]
    return Ensemble(run=run, stage=stage, members=members, missing=missing)
