"""Cluster profiles: where and with what resources the jobs of an experiment run.

A profile is a small TOML file (slurm/profiles/*.toml) of flat keys, loaded into the frozen
dataclass :class:`SlurmProfile`. Unknown keys are errors that list the valid ones, so a typo
never silently drops a setting. Command-line options override profile values through
:func:`with_overrides`.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from lens.errors import LensError

# Slurm time limits: "M", "M:S", "H:M:S", "D-H", "D-H:M", "D-H:M:S".
_TIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")
_MEM = re.compile(r"^\d+[KMGT]?$")


@dataclass(frozen=True)
class SlurmProfile:
    """Resources and site settings for the jobs of one experiment.

    ``gpus_per_task`` is the number of GPUs of one array task (one fold): the task runs that
    many ranks (``--ntasks-per-node``, DDP), each with ``cpus_per_task`` CPUs;
    ``ntasks_per_node`` overrides the rank count (e.g. 2 CPU ranks with gloo). ``mem`` is per
    node. ``python`` is the interpreter command on the compute nodes (default: the Python
    that runs ``lens generate``; with a container: ``python`` inside the image). ``setup``
    lines run in the batch shell before the task (``module load ...``). ``container`` is an
    Apptainer image; ``binds`` are extra ``SRC[:DST[:ro]]`` mounts.
    """

    name: str = "default"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str = "01:00:00"
    gpus_per_task: int = 0
    gpu_type: str | None = None
    cpus_per_task: int = 1
    ntasks_per_node: int | None = None
    mem: str | None = None
    constraint: str | None = None
    array_parallelism: int | None = None
    signal_delay_s: int = 120
    max_requeues: int = 20
    extra_sbatch: tuple[str, ...] = ()
    setup: tuple[str, ...] = ()
    python: str | None = None
    container: str | None = None
    binds: tuple[str, ...] = ()
    report_partition: str | None = None
    report_time: str = "00:30:00"
    report_mem: str | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):  # TOML arrays arrive as lists
                object.__setattr__(self, f.name, value := tuple(value))
            _check_type(self.name, f.name, value, _EXPECTED[f.name])
        _check_values(self)


_EXPECTED: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "partition": (str, type(None)),
    "account": (str, type(None)),
    "qos": (str, type(None)),
    "time": (str,),
    "gpus_per_task": (int,),
    "gpu_type": (str, type(None)),
    "cpus_per_task": (int,),
    "ntasks_per_node": (int, type(None)),
    "mem": (str, type(None)),
    "constraint": (str, type(None)),
    "array_parallelism": (int, type(None)),
    "signal_delay_s": (int,),
    "max_requeues": (int,),
    "extra_sbatch": (tuple,),
    "setup": (tuple,),
    "python": (str, type(None)),
    "container": (str, type(None)),
    "binds": (tuple,),
    "report_partition": (str, type(None)),
    "report_time": (str,),
    "report_mem": (str, type(None)),
}

VALID_KEYS = tuple(f.name for f in fields(SlurmProfile))


def _check_type(profile: str, key: str, value: Any, expected: tuple[type, ...]) -> None:
    if isinstance(value, bool) or not isinstance(value, expected):
        names = " or ".join("none" if t is type(None) else t.__name__ for t in expected)
        names = names.replace("tuple", "list of strings")
        raise LensError(f"profile {profile}: {key} = {value!r} must be {names}")
    if isinstance(value, tuple):
        for item in value:
            if not isinstance(item, str):
                raise LensError(f"profile {profile}: {key} must be a list of strings, got {item!r}")
    for text in value if isinstance(value, tuple) else (value,):
        if isinstance(text, str) and ("\n" in text or "\r" in text or "\0" in text):
            raise LensError(f"profile {profile}: {key} = {text!r} must be one line")


def _check_values(p: SlurmProfile) -> None:
    where = f"profile {p.name}"
    for key in ("time", "report_time"):
        if not _TIME.match(getattr(p, key)):
            raise LensError(
                f"{where}: {key} = {getattr(p, key)!r} is not a Slurm time "
                "(e.g. '30', '04:00:00', '1-12:00:00')"
            )
    for key in ("mem", "report_mem"):
        value = getattr(p, key)
        if value is not None and not _MEM.match(value):
            raise LensError(f"{where}: {key} = {value!r} is not a Slurm size (e.g. '16G', '4000M')")
    for key, low in (("gpus_per_task", 0), ("cpus_per_task", 1), ("signal_delay_s", 0),
                     ("max_requeues", 0)):
        if getattr(p, key) < low:
            raise LensError(f"{where}: {key} = {getattr(p, key)} must be at least {low}")
    for key in ("array_parallelism", "ntasks_per_node"):
        value = getattr(p, key)
        if value is not None and value < 1:
            raise LensError(f"{where}: {key} = {value} must be at least 1")
    for line in p.extra_sbatch:
        if not line.startswith("--") or "$" in line:
            raise LensError(
                f"{where}: extra_sbatch line {line!r} must be one sbatch option such as "
                "'--mail-type=END' (no shell variables: #SBATCH lines are not expanded)"
            )
    for key in ("partition", "account", "qos", "gpu_type", "constraint", "report_partition"):
        value = getattr(p, key)
        if value is not None and (not value or any(c.isspace() for c in value)):
            raise LensError(f"{where}: {key} = {value!r} must be a non-empty word")


def profile_from_dict(data: dict[str, Any], name: str = "default") -> SlurmProfile:
    """Build a profile from a dict (a parsed TOML file); unknown keys are errors."""
    unknown = sorted(set(data) - set(VALID_KEYS))
    if unknown:
        raise LensError(
            f"profile {name}: unknown key(s) {', '.join(unknown)}; valid keys: "
            f"{', '.join(VALID_KEYS)}"
        )
    data = {"name": name, **data}
    nested = [k for k, v in data.items() if isinstance(v, dict)]
    if nested:
        raise LensError(f"profile {name}: {nested[0]} must be a value, not a [table]")
    return SlurmProfile(**data)


def load_profile(path: str | Path) -> SlurmProfile:
    """Read a profile TOML file; its name is the file name without ``.toml``."""
    path = Path(path)
    if not path.is_file():
        raise LensError(f"{path}: no such profile file")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise LensError(f"{path}: not valid TOML ({exc})") from None
    name = path.name.removesuffix(".toml")
    try:
        return profile_from_dict(data, name=name)
    except LensError as exc:
        raise LensError(f"{path}: {exc}") from None


def with_overrides(profile: SlurmProfile, **overrides: Any) -> SlurmProfile:
    """The profile with every override that is not None applied (command-line options).

    List-valued keys (``binds``, ``setup``, ``extra_sbatch``) are appended to, not replaced,
    so ``--bind`` adds a mount to the profile's binds.
    """
    unknown = sorted(set(overrides) - set(VALID_KEYS))
    if unknown:
        raise LensError(f"unknown profile setting(s) {', '.join(unknown)}; valid: "
                        f"{', '.join(VALID_KEYS)}")
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        if value is None:
            continue
        if _EXPECTED[key] == (tuple,):
            changes[key] = getattr(profile, key) + tuple(value)
        else:
            changes[key] = value
    return dataclasses.replace(profile, **changes)
