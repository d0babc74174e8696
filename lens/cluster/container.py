"""The Apptainer command that runs lens's Python inside the image, as argv words.

    container_argv("lens.sif", [data_dir, run_dir], gpus=True)
    -> ["apptainer", "exec", "--nv", "--bind", "/data,/runs/exp1", "lens.sif", "python"]

Every srun rank starts its own container (``srun apptainer exec ... python -m lens ...``).
Never ``--cleanenv``: it would drop the SLURM_* and SUBMITIT_* variables the task reads.
Pure functions, except :func:`check_image_python`, whose runner is injectable.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from lens.errors import LensError

_MODES = ("ro", "rw")


@dataclass(frozen=True)
class Bind:
    """One ``--bind`` entry: host path ``src`` mounted at ``dst`` (``ro`` or ``rw``)."""

    src: str
    dst: str
    mode: str = "rw"

    def spec(self) -> str:
        if self.dst == self.src and self.mode == "rw":
            return self.src
        return f"{self.src}:{self.dst}" + (":ro" if self.mode == "ro" else "")


def parse_bind(text: str) -> Bind:
    """``SRC``, ``SRC:DST`` or ``SRC:DST:ro|rw``; relative sources are made absolute."""
    parts = text.split(":")
    if not text or len(parts) > 3 or not all(parts):
        raise LensError(f"--bind {text!r}: expected SRC, SRC:DST or SRC:DST:ro")
    src = os.path.abspath(os.path.expanduser(parts[0]))  # keep symlinks: users' paths
    dst = parts[1] if len(parts) > 1 else src
    mode = parts[2] if len(parts) > 2 else "rw"
    if mode not in _MODES:
        raise LensError(f"--bind {text!r}: mode {mode!r} must be ro or rw")
    if not dst.startswith("/"):
        raise LensError(f"--bind {text!r}: the container path {dst!r} must be absolute")
    if "," in text:
        raise LensError(f"--bind {text!r}: apptainer cannot bind a path that contains a comma")
    return Bind(os.path.normpath(src), os.path.normpath(dst), mode)


def resolve_binds(binds: Iterable[str | os.PathLike[str]]) -> tuple[Bind, ...]:
    """Parse, check and de-duplicate binds, keeping the first occurrence's order.

    Every source must exist on the submitting host (a missing one is a LensError naming
    it). A bind that is already visible through an earlier identity bind of a parent folder
    with the same mode is dropped, as are exact repeats.
    """
    out: list[Bind] = []
    for item in binds:
        bind = parse_bind(os.fspath(item))
        if not os.path.exists(bind.src):
            raise LensError(f"bind source {bind.src} does not exist")
        if any(_covered_by(bind, kept) for kept in out):
            continue
        if any(b.dst == bind.dst for b in out):
            raise LensError(f"two binds mount different sources at {bind.dst}")
        out.append(bind)
    return tuple(out)


def _covered_by(bind: Bind, other: Bind) -> bool:
    if bind == other:
        return True
    identity = bind.src == bind.dst and other.src == other.dst and bind.mode == other.mode
    return identity and bind.src.startswith(other.src.rstrip("/") + "/")


def container_argv(
    image: str | os.PathLike[str],
    binds: Iterable[str | os.PathLike[str]] = (),
    *,
    gpus: bool,
    python: str = "python",
) -> list[str]:
    """``apptainer exec [--nv] [--bind B1,B2,...] IMAGE python`` as argv words.

    ``--nv`` (the host's NVIDIA driver) only when the job asks for GPUs.
    """
    image = os.fspath(image)
    if not image:
        raise LensError("the container image path is empty")
    argv = ["apptainer", "exec"]
    if gpus:
        argv.append("--nv")
    resolved = resolve_binds(binds)
    if resolved:
        argv += ["--bind", ",".join(b.spec() for b in resolved)]
    return [*argv, image, python]


def shell_command(argv: Sequence[str]) -> str:
    """The argv as one shell-quoted line (for scripts and ``slurm_python``)."""
    return shlex.join(argv)


# ---- the image's Python must match the submitting Python (pickles cross between them) ----

Runner = Callable[[list[str]], str]


def _run(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=True)
    except FileNotFoundError:
        raise LensError(
            f"{argv[0]} not found on PATH: load it first (e.g. `module load apptainer`)"
        ) from None
    except subprocess.CalledProcessError as exc:
        tail = (exc.stderr or exc.stdout or "").strip().splitlines()[-5:]
        raise LensError(f"`{shlex.join(argv)}` failed (exit {exc.returncode}): "
                        + " / ".join(tail)) from None
    except subprocess.TimeoutExpired:
        raise LensError(f"`{shlex.join(argv)}` did not answer within 300 s") from None
    return done.stdout


def image_python_version(image: str, runner: Runner = _run) -> tuple[int, int]:
    """(major, minor) of the Python inside the image."""
    argv = ["apptainer", "exec", image, "python", "-c",
            "import sys; print(tuple(sys.version_info[:2]))"]
    out = runner(argv)
    match = re.search(r"\((\d+),\s*(\d+)\)", out)
    if not match:
        raise LensError(f"{image}: cannot read its Python version from {out.strip()!r}")
    return int(match.group(1)), int(match.group(2))


def check_image_python(
    image: str, runner: Runner = _run, local: tuple[int, int] | None = None
) -> tuple[int, int]:
    """Raise LensError unless the image's Python minor version equals the submitting one.

    submitit pickles the task here and unpickles it inside the image: the versions must
    match. Returns the image's version.
    """
    local = tuple(sys.version_info[:2]) if local is None else tuple(local)
    found = image_python_version(image, runner)
    if found != local:
        have, want = ".".join(map(str, found)), ".".join(map(str, local))
        raise LensError(
            f"{image} has Python {have} but lens runs here on Python {want}: rebuild the image "
            f"from a base with Python {want} (containers/lens.def, From:), or submit from a "
            f"Python {have} environment"
        )
    return found
