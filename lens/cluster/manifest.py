"""run.json: how a run directory was made and which jobs work on it (`lens submit`).

    {
      "format": "lens-run-1",
      "run": "/abs/runs/exp1",
      "created": "...", "updated": "...",
      "lens_version": "0.1.0", "git_revision": "3f2c1e0 (modified)", "python": "3.11.9",
      "data": {"path", "sha256", "size", "mtime_ns", "n", "n_folds", "class_names", "shape"},
      "container": null | {"path", "sha256", "size", "mtime_ns", "python"},
      "stages": {"finetune": {"folds": 5, "config_file": ..., "sets": [...], "config": {...}}},
      "jobs": {"finetune": {"3": {"job_id": "124_3", "executor": "slurm", "log": ...,
                                  "submission": 1, ...}}},
      "reports": [{"job_id": "125", "executor": "slurm", "log": ..., "submission": 1}],
      "submissions": [{"time", "command", "experiment", "executor", "profile", "arrays",
                       "report"}]
    }

``stages[S].folds`` is what `lens report` expects; ``config`` is the resolved config every
task of the stage runs with. ``jobs`` holds the latest job of each (stage, fold); a
resubmission replaces the entries of the folds it runs again. Written atomically.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from lens import __version__, atomic
from lens.errors import LensError

MANIFEST = "run.json"
FORMAT = "lens-run-1"


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def path(run: str | os.PathLike[str]) -> Path:
    return Path(run) / MANIFEST


def read(run: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The run's manifest, None when there is none; LensError when it is unreadable."""
    where = path(run)
    try:
        text = where.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LensError(f"{where}: cannot read ({exc.strerror})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LensError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise LensError(f"{where}: not a lens run manifest (format {FORMAT!r} expected)")
    return data


def require(run: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a run made by `lens submit`, or a LensError that says what is wrong."""
    if not Path(run).is_dir():
        raise LensError(f"{run}: no such run directory")
    data = read(run)
    if data is None:
        raise LensError(f"{run}: no {MANIFEST} here; is it a run made by `lens submit`?")
    return data


def write(run: str | os.PathLike[str], data: dict[str, Any]) -> None:
    data["updated"] = now()
    atomic.write_json(path(run), data)


def new(run: Path) -> dict[str, Any]:
    stamp = now()
    return {"format": FORMAT, "run": str(run), "created": stamp, "updated": stamp,
            "lens_version": __version__, "git_revision": git_revision(),
            "python": platform.python_version(), "data": None, "container": None,
            "stages": {}, "jobs": {}, "reports": [], "submissions": []}


# ---- identities of input files ----------------------------------------------------------


def sha256(file: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_identity(file: Path, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """Path, size, mtime and sha256 of a file; the hash is reused from ``previous`` when the
    path, size and mtime are unchanged (data files and images are gigabytes)."""
    try:
        st = file.stat()
    except OSError as exc:
        raise LensError(f"{file}: cannot read ({exc.strerror})") from None
    ident = {"path": str(file), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if previous and all(previous.get(k) == v for k, v in ident.items()) and \
            previous.get("sha256"):
        return {**ident, "sha256": previous["sha256"]}
    return {**ident, "sha256": sha256(file)}


def git_revision() -> str | None:
    """The commit of the lens source tree, with " (modified)" when it has local changes;
    None when lens is not running from a git checkout."""
    source = Path(__file__).resolve().parents[2]
    if not (source / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(source), "rev-parse", "--short=12", "HEAD"],
                              capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain",
                                "--untracked-files=no", "--", "lens"],
                               capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return head.stdout.strip() + (" (modified)" if dirty.stdout.strip() else "")


# ---- jobs ------------------------------------------------------------------------------------


def fold_jobs(data: dict[str, Any], stage: str) -> dict[int, dict[str, Any]]:
    """The latest job of each fold of a stage: {fold: entry}."""
    return {int(k): v for k, v in (data.get("jobs", {}).get(stage) or {}).items()}


def set_fold_job(data: dict[str, Any], stage: str, fold: int, entry: dict[str, Any]) -> None:
    data.setdefault("jobs", {}).setdefault(stage, {})[str(fold)] = entry


def latest_report(data: dict[str, Any]) -> dict[str, Any] | None:
    reports = data.get("reports") or []
    return reports[-1] if reports else None
