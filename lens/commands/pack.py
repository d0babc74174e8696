"""`lens pack SRC... OUT.h5`: image folders into one validated HDF5 file."""

from __future__ import annotations

import shlex
import sys
from enum import Enum
from pathlib import Path

import typer

from lens.errors import LensError


class Normalize(str, Enum):
    none = "none"
    minmax = "minmax"


class NanPolicy(str, Enum):
    error = "error"
    zero = "zero"


class Dtype(str, Enum):
    float32 = "float32"
    float16 = "float16"


def pack(
    paths: list[Path] = typer.Argument(
        ...,
        metavar="SRC... OUT.h5",
        show_default=False,
        help="Image folders to read (several are merged), then the file to write.",
    ),
    label: list[str] = typer.Option(
        [],
        "--label",
        metavar="CLASS=REGEX",
        show_default=False,
        help="Flat folders: files whose name contains a match of REGEX get CLASS. "
        "Repeat for more classes; the first matching rule wins.",
    ),
    default_label: str | None = typer.Option(
        None,
        "--default-label",
        metavar="CLASS",
        help="Flat folders: the class of files that match no --label rule "
        "(without it they are an error).",
    ),
    normalize: Normalize = typer.Option(
        Normalize.none,
        "--normalize",
        help="minmax: scale each image, per channel, to [0, 1] (a constant image becomes 0).",
    ),
    nan: NanPolicy = typer.Option(
        NanPolicy.error,
        "--nan",
        help="What to do with NaN/Inf pixels: error, or zero (replace with 0 and list the files).",
    ),
    size: int | None = typer.Option(
        None, "--size", metavar="N", help="Resize every image to NxN (antialiased bilinear)."
    ),
    crop: int | None = typer.Option(
        None, "--crop", metavar="N", help="Centre-crop every image to NxN (before --size)."
    ),
    dtype: Dtype = typer.Option(Dtype.float32, "--dtype", help="Stored pixel type."),
    folds: int | None = typer.Option(
        None,
        "--folds",
        metavar="K",
        help="Assign a stratified cross-validation fold (0..K-1) to every training image.",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the fold assignment."),
    workers: int = typer.Option(
        1,
        "--workers",
        metavar="N",
        help="Processes decoding files; one writer keeps their order. 2-4 speed up "
        "large sets on a multi-core node.",
    ),
    force: bool = typer.Option(False, "--force", help="Replace OUT.h5 if it exists."),
    strict: bool = typer.Option(
        False,
        "--strict",
        help="Fail when an image of the test split is identical to a training image.",
    ),
) -> None:
    """Pack image folders into one validated HDF5 file (docs/DATA_FORMAT.md).

    Reads .npy of shape (H,W), (1,H,W) or (C,H,W) (never pickled), PNG and JPEG.
    The layout of each SRC decides splits and classes (class names are folder names):

    - class folders  SRC/<class>/*                  (all train)
    - split folders  SRC/{train,val,test}/<class>/*  (val, test: the test split)
    - split+class    SRC/train_<class>/*, SRC/test_<class>/*
    - flat folder    SRC/*, labeled by --label rules, else unlabeled (-1)

    Every file is checked, and each bad one is named. On any error OUT.h5 is not
    created, and an existing OUT.h5 is left untouched.

    Examples:

        lens pack dataset/ data/substructure.h5 --folds 5 --seed 0

        lens pack lensfinding/ data/lenses.h5 --workers 4 --strict

        lens pack hst/ data/hst.h5 --label nonlens='^nl_' --default-label lens \\
            --nan zero --normalize minmax

        lens pack shard_000/ shard_001/ data/pretrain.h5 --dtype float16

        lens pack pngs/ data/pngs.h5 --size 64
    """
    from lens.data.pack import PackOptions
    from lens.data.pack import pack as run_pack
    from lens.data.summary import render_pack

    if len(paths) < 2:
        raise LensError("expected at least one SRC folder and then OUT.h5")
    *srcs, out = paths
    options = PackOptions(
        normalize=normalize.value,
        nan=nan.value,
        size=size,
        crop=crop,
        dtype=dtype.value,
        folds=folds,
        seed=seed,
        workers=workers,
        force=force,
        strict=strict,
        labels=tuple(label),
        default_label=default_label,
    )
    command = _typed_command() or _command_from(srcs, out, options)
    with _progress() as progress:
        report = run_pack(srcs, out, options, command=command, progress=progress)
    typer.echo(render_pack(report), nl=False)


def _typed_command() -> str:
    """The command line as typed, when this process is the `lens` console command."""
    argv = sys.argv
    if Path(argv[0]).name in ("lens", "__main__.py") and "pack" in argv[1:]:
        return shlex.join(["lens", *argv[1:]])
    return ""


def _command_from(srcs: list[Path], out: Path, o) -> str:
    """An equivalent command line, rebuilt from the parsed options (library or test use)."""
    words = ["lens", "pack", *map(str, srcs), str(out)]
    for rule in o.labels:
        words += ["--label", rule]
    defaults = {
        "default_label": None,
        "normalize": "none",
        "nan": "error",
        "size": None,
        "crop": None,
        "dtype": "float32",
        "folds": None,
        "seed": 0,
        "workers": 1,
    }
    for key, default in defaults.items():
        value = getattr(o, key)
        if value != default and not (key == "seed" and o.folds is None):
            words += [f"--{key.replace('_', '-')}", str(value)]
    words += [flag for flag, on in (("--force", o.force), ("--strict", o.strict)) if on]
    return shlex.join(words)


def _progress():
    from lens.progress import StageProgress

    return StageProgress({"check": "checking files", "pack": "packing images"})


def register(app: typer.Typer) -> None:
    app.command("pack")(pack)
