"""`lens demo`: the whole experiment on a small simulated set, on this machine (or a cluster)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from lens.cluster.options import ProfileOpt
from lens.errors import LensError


class DemoExecutor(str, Enum):
    local = "local"
    slurm = "slurm"


@dataclass(frozen=True)
class DemoSettings:
    """What the demo simulates and trains. Lens finding at 32 px: a few minutes on 2 CPU
    cores for 15 tasks (5 folds of classify, pretrain and finetune), with ResNet-18."""

    dataset: str = "lensfinding"
    size: int = 32
    train_per_class: int = 500
    test_per_class: int = 100
    folds: int = 5
    seed: int = 0
    classify: tuple[str, ...] = ("epochs=5", "batch_size=64", "n_boot=200", "num_workers=0")
    pretrain: tuple[str, ...] = ("epochs=5", "batch_size=128", "n_boot=200", "num_workers=0")
    finetune: tuple[str, ...] = ("epochs=5", "batch_size=64", "n_boot=200", "num_workers=0")


# --quick: the same steps with 6x fewer images, 1-2 epochs and the small CNN: a smoke test,
# not a result (75-190 s measured on 2 shared cores).
QUICK = DemoSettings(
    train_per_class=60, test_per_class=20,
    classify=("epochs=2", "batch_size=32", "n_boot=50", "num_workers=0",
              "model.name=cnn_attention"),
    pretrain=("epochs=1", "batch_size=32", "n_boot=50", "num_workers=0",
              "model.name=cnn_attention"),
    finetune=("epochs=1", "batch_size=32", "n_boot=50", "num_workers=0",
              "model.name=cnn_attention"),
)


def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for the images, data and run.")]
    = Path("demo"),
    executor: Annotated[DemoExecutor, typer.Option(
        "--executor", help="local: here, on this machine's CPUs; slurm: as cluster jobs.")]
    = DemoExecutor.local,
    quick: Annotated[bool, typer.Option(
        "--quick", help="Fewer images and epochs, a small CNN: a smoke test.")] = False,
    profile: ProfileOpt = None,
) -> None:
    """Simulate, pack, cross-validate and report: the whole experiment, small.

    Simulates lens-finding images (lens, nonlens; 32 px) with lenstronomy into
    OUT/images/{train,test}, packs them into OUT/lenses.h5 with 5 stratified folds,
    then runs classify (ResNet-18 from scratch) and pretrain (SimCLR) -> finetune
    (linear probe) on every fold into OUT/run, and writes OUT/run/report.md with
    per-fold ROC-AUC, the pooled out-of-fold AUC and the test-split ensemble.
    Running it again reuses what is already done.

    Examples:

      lens demo

      lens demo --out /tmp/demo --quick

      lens demo --executor slurm --profile slurm/profiles/local.toml
    """
    start = time.perf_counter()
    settings = QUICK if quick else DemoSettings()
    out = Path(os.path.abspath(out))
    _check_settings(out, settings)
    data = out / "lenses.h5"
    if not data.exists():
        _simulate(out / "images", settings)
        _pack(out / "images", data, settings)
    else:
        typer.echo(f"using {data}")
    report = _experiments(out / "run", data, settings, executor.value, profile)
    typer.echo(f"report: {_shown(out / 'run' / 'report.md')}")
    for line in headlines(report):
        typer.echo(line)
    typer.echo(f"demo done in {time.perf_counter() - start:.0f} s")
    missing = [(s, m["fold"]) for s, st in report["stages"].items() for m in st["missing"]]
    if missing:
        raise LensError(f"{len(missing)} task(s) missing or failed; see "
                        f"{out / 'run' / 'report.md'}")


def _shown(path: Path) -> str:
    """The path relative to the current folder when it is below it (as typed), else whole."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _check_settings(out: Path, settings: DemoSettings) -> None:
    """A demo folder is one set of settings: never mix a quick and a full run."""
    from lens import atomic

    record = out / "demo.json"
    wanted = json.loads(json.dumps(asdict(settings)))
    if record.exists():
        if json.loads(record.read_text()) != wanted:
            raise LensError(f"{out}: holds a demo made with other settings (--quick or not); "
                            "use another --out, or delete it")
        return
    if out.exists() and any(out.iterdir()):
        raise LensError(f"{out}: exists and is not a lens demo folder; use another --out")
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_json(record, wanted)


def _simulate(images: Path, s: DemoSettings) -> None:
    from lens.simulate.presets import load_params
    from lens.simulate.run import SimulationSpec, run

    workers = max(1, os.cpu_count() or 1)
    for split, per_class, seed in (("train", s.train_per_class, s.seed),
                                   ("test", s.test_per_class, s.seed + 1)):
        t0 = time.perf_counter()
        spec = SimulationSpec(out=images / split, dataset=s.dataset, preset="model-i",
                              params=load_params("model-i"), per_class=per_class, size=s.size,
                              seed=seed)
        n = run(spec, workers=workers, resume=True)
        typer.echo(f"simulated {n} {s.dataset} images ({split}, {s.size} px) in "
                   f"{time.perf_counter() - t0:.1f} s")


def _pack(images: Path, data: Path, s: DemoSettings) -> None:
    from lens.data.pack import PackOptions, pack

    t0 = time.perf_counter()
    options = PackOptions(folds=s.folds, seed=s.seed)
    pack([images], data, options,
         command=f"lens pack {images} {data} --folds {s.folds} --seed {s.seed}")
    typer.echo(f"packed {data} with {s.folds} folds in {time.perf_counter() - t0:.1f} s")


def _experiments(run: Path, data: Path, s: DemoSettings, executor: str,
                 profile: Path | None) -> dict:
    """classify, then pretrain -> finetune, in one run folder: one report with both."""
    from rich.console import Console

    from lens.cluster.options import StageInput, cluster_profile
    from lens.cluster.submit import Request, submit
    from lens.cluster.watch import Display, wait_for_report

    prof = cluster_profile(profile)
    sets = {"classify": s.classify, "pretrain": s.pretrain, "finetune": s.finetune}
    console = Console()
    for experiment in ("classify", "all"):
        stages = ("classify",) if experiment == "classify" else ("pretrain", "finetune")
        request = Request(experiment=experiment, data=data, run=run, folds=s.folds,
                          executor=executor, profile=prof,
                          inputs={st: StageInput(None, sets[st]) for st in stages},
                          command=("lens", "demo"))
        if executor == "local":
            with Display(console) as display:
                submit(request, on_update=display.update)
        else:
            outcome = submit(request)
            for array in outcome.arrays:
                typer.echo(f"{array.stage}: array job {array.job_id}")
    if executor == "slurm":
        wait_for_report(run, console)
    try:
        return json.loads((run / "report.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise LensError(f"{run / 'report.json'}: no report was written ({exc})") from None


def headlines(report: dict) -> list[str]:
    """Mean ± std over folds, and the test-split ensemble, per evaluated stage."""
    lines = []
    for stage in ("classify", "finetune"):
        st = report.get("stages", {}).get(stage)
        if not st or not st.get("summary") or not st["summary"].get("macro_auc"):
            continue
        m = st["summary"]["macro_auc"]
        line = (f"{stage}: ROC-AUC {m['mean']:.3f} ± {m['std']:.3f} over {m['n']} folds")
        if st.get("oof"):
            line += f", pooled out-of-fold {st['oof']['macro_auc']:.3f}"
        if st.get("test_ensemble"):
            ens = st["test_ensemble"]
            line += f", test split ({ens['n']} images, {ens['n_models']}-model ensemble) " \
                    f"{ens['macro_auc']:.3f}"
        lines.append(line)
    return lines


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
