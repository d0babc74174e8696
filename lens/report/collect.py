"""Gather every (stage, fold) task of a run directory into plain data.

A task is complete when its ``result.json`` says so; anything else is reported with the
best state we can find (Slurm's, through an injectable lookup, or the files on disk).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

EVAL_STAGES = ("classify", "finetune")
STAGE_ORDER = ("classify", "pretrain", "finetune")

# (stage, fold) -> (state, log path or None), e.g. from sacct; None when unknown.
StateLookup = Callable[[str, int], "tuple[str, str | None] | None"]
FAILURE = "failed.json"  # what a task that raised leaves (lens.train.results.write_failure)


@dataclass(frozen=True)
class FoldOutcome:
    stage: str
    fold: int
    state: str  # COMPLETED, or FAILED / RUNNING / PENDING / MISSING / ...
    result: dict | None
    task_dir: Path
    log: str | None = None

    @property
    def completed(self) -> bool:
        return self.result is not None


def task_dir(run: Path, stage: str, fold: int) -> Path:
    return run / stage / f"fold_{fold}"


def read_result(directory: Path) -> dict | None:
    """The task's result when it is complete and readable, else None."""
    try:
        result = json.loads((directory / "result.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return result if result.get("status") == "completed" else None


def expected_folds(run: Path, stage: str) -> int:
    """How many folds a stage should have: from run.json, else from the results themselves."""
    manifest = read_manifest(run)
    if manifest and stage in manifest.get("stages", {}):
        return int(manifest["stages"][stage]["folds"])
    counts = []
    for path in sorted((run / stage).glob("fold_*/result.json")):
        result = read_result(path.parent)
        if result:
            counts.append(int(result.get("data", {}).get("n_folds", 0)))
    return max(counts, default=0)


def read_manifest(run: Path) -> dict | None:
    try:
        return json.loads((run / "run.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None


def stages_in(run: Path) -> list[str]:
    manifest = read_manifest(run)
    names = set(manifest.get("stages", {})) if manifest else set()
    names |= {s for s in STAGE_ORDER if (run / s).is_dir()}
    return [s for s in STAGE_ORDER if s in names]


def collect(run: Path, stage: str, lookup: StateLookup | None = None) -> list[FoldOutcome]:
    outcomes = []
    for fold in range(expected_folds(run, stage)):
        directory = task_dir(run, stage, fold)
        result = read_result(directory)
        if result is not None:
            outcomes.append(FoldOutcome(stage, fold, "COMPLETED", result, directory))
            continue
        found = lookup(stage, fold) if lookup else None
        if found is not None:
            state, log = found
        elif (directory / FAILURE).exists():  # the task recorded its error as it failed
            state, log = "FAILED", str(directory / FAILURE)
        else:
            state = "INCOMPLETE" if directory.exists() else "MISSING"
            log = None
        outcomes.append(FoldOutcome(stage, fold, state, None, directory, log))
    return outcomes


def load_predictions(outcome: FoldOutcome) -> dict[str, np.ndarray] | None:
    try:
        with np.load(outcome.task_dir / "predictions.npz", allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError):
        return None
