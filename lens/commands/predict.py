"""`lens predict`: every fold model of a trained run, and their ensemble, on new images."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from lens.errors import LensError


class Stage(str, Enum):
    classify = "classify"
    finetune = "finetune"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


def predict(
    run: Annotated[Path | None, typer.Argument(
        metavar="RUN", show_default=False,
        help="Run folder of `lens train` (holds <stage>/fold_<K>/model.pt).")] = None,
    data: Annotated[Path | None, typer.Argument(
        metavar="DATA", show_default=False,
        help="Packed HDF5 file (`lens pack`), or a folder `lens pack` can read "
             "(packed on the fly like the training file, then removed).")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", metavar="PRED", show_default=False,
        help="Writes PRED.h5 and PRED.csv (+ PRED.metrics.json, PRED.roc.png when labeled).",
    )] = None,
    stage: Annotated[Stage | None, typer.Option(
        "--stage", show_default=False,
        help="Models to use (default: finetune if trained, else classify).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", metavar="N",
                                            help="Images per forward pass.")] = 256,
    device: Annotated[Device, typer.Option(
        "--device", help="auto: the GPU when there is one (bf16 autocast), else the CPU.",
    )] = Device.auto,
    top: Annotated[int, typer.Option(
        "--top", metavar="K",
        help="Print the K images with the highest probability of the class (see --class).",
    )] = 0,
    montage: Annotated[Path | None, typer.Option(
        "--montage", metavar="PNG", show_default=False,
        help="Draw the top K images (default K 16) with their scores into PNG.")] = None,
    class_name: Annotated[str | None, typer.Option(
        "--class", metavar="NAME", show_default=False,
        help="Class ranked by --top/--montage (default: the lens class (lens, lenses or "
             "lensed), else the second class of a binary run, else every class).")] = None,
    n_boot: Annotated[int, typer.Option(
        "--n-boot", metavar="N", help="Bootstrap resamples of the AUC interval (labeled data).",
    )] = 1000,
    shard: Annotated[str | None, typer.Option(
        "--shard", metavar="I/N", show_default=False,
        help="Predict only shard I of N (counting from 0) into PRED.parts/part_I.h5; "
             "a complete part is kept. Merge the N parts with --merge.")] = None,
    merge: Annotated[Path | None, typer.Option(
        "--merge", metavar="PRED", show_default=False,
        help="Merge PRED.parts/part_0.h5 .. part_<N-1>.h5 into PRED.h5 and PRED.csv, "
             "as the unsharded run writes them (no RUN or DATA).")] = None,
    shards: Annotated[int | None, typer.Option(
        "--shards", metavar="N", show_default=False,
        help="With --merge: the number of parts.")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Replace PRED.h5 and PRED.csv if they exist.")] = False,
) -> None:
    """Predict with every fold model of a trained run, and their ensemble (mean).

    Checks that DATA has the channels, image size and normalisation the models
    were trained on. Writes the probabilities of each fold model and of the
    ensemble for every image, with its source path, to PRED.h5 (exact float32
    arrays) and PRED.csv. When DATA is labeled, the training metrics (per
    class, macro, micro, bootstrap interval) of the ensemble and of each fold
    model are printed and saved to PRED.metrics.json, with ROC curves in
    PRED.roc.png; on the run's own training file only its test split counts.

    Survey scale: run N shards as separate jobs (--shard I/N, e.g. a Slurm
    array), then merge them (--merge PRED --shards N); the merged files equal
    those of an unsharded run with the same --batch-size and device.

    Examples:

      lens predict runs/exp1 data/test.h5 --out preds/test

      lens predict runs/ssl cutouts/ --out preds/cutouts --stage finetune \\
          --top 64 --montage preds/cutouts_top.png

      lens predict runs/exp1 data/hst.h5 --out preds/hst --top 20 --class lenses

      lens predict runs/exp1 data/survey.h5 --out preds/survey --shard 3/16

      lens predict --merge preds/survey --shards 16 \\
          --top 100 --montage preds/survey_top.png
    """
    from lens.predict.output import Outputs

    if montage is not None and montage.suffix.lower() != ".png":
        raise LensError(f"--montage {montage}: the montage is a PNG file (NAME.png)")
    if top < 0:
        raise LensError(f"--top {top}: must be >= 0")
    if merge is not None:
        if run is not None or data is not None or out is not None or shard is not None:
            raise LensError("--merge PRED takes no RUN, DATA, --out or --shard: it merges "
                            "PRED.parts/ into PRED (e.g. lens predict --merge preds/survey "
                            "--shards 16)")
        if shards is None:
            raise LensError("--merge needs --shards N, the number of parts to merge")
        _merge(Outputs.of(merge), shards, n_boot, top, montage, class_name, force)
        return
    if shards is not None:
        raise LensError("--shards N goes with --merge PRED; to predict one shard use "
                        "--shard I/N")
    if run is None or data is None or out is None:
        raise LensError("expected RUN DATA --out PRED (or --merge PRED --shards N); "
                        "see lens predict --help")
    if shard is not None:
        if top or montage is not None:
            raise LensError("--top and --montage rank the whole set: give them to --merge")
        _shard(run, data, Outputs.of(out), shard, stage, batch_size, device)
        return
    from lens.predict.run import predict as run_predict

    with _progress() as progress:
        summary = run_predict(run, data, out, stage=stage.value if stage else None,
                              batch_size=batch_size, device=device.value, n_boot=n_boot,
                              top=top, montage=montage, montage_class=class_name, force=force,
                              progress=progress)
    _warn_missing(summary.missing, summary.folds)
    typer.echo(f"{summary.stage}: {_models(summary.folds)} on {summary.device}: "
               f"{summary.n:,} images in {summary.seconds:.1f} s "
               f"({summary.images_per_s:,.0f} images/s)")
    _report(summary.written, summary.metrics, summary.top)


def _models(folds: list[int]) -> str:
    return (f"{len(folds)} fold model{'s' if len(folds) != 1 else ''} "
            f"(fold{'s' if len(folds) != 1 else ''} {', '.join(map(str, folds))})")


def _warn_missing(missing: list[int], folds: list[int]) -> None:
    if missing:
        typer.secho(f"warning: fold(s) {', '.join(map(str, missing))} have no trained model "
                    f"yet; the ensemble is the mean of folds {', '.join(map(str, folds))}",
                    err=True, fg=typer.colors.YELLOW)


def _report(written: list[Path], metrics: dict | None, top: list[dict] | None) -> None:
    from lens.predict.evaluate import render_metrics
    from lens.predict.montage import render_top

    if metrics is not None:
        typer.echo(render_metrics(metrics), nl=False)
    if top:
        typer.echo(render_top(top), nl=False)
    typer.echo("wrote " + ", ".join(str(p) for p in written))


def _shard(run: Path, data: Path, outs, shard_text: str, stage: Stage | None,
           batch_size: int, device: Device) -> None:
    from lens.cluster.requeue import EX_TEMPFAIL
    from lens.interrupts import Stopped, stop_on_signals
    from lens.predict.shards import parse_shard, part_path, predict_shard

    shard, n_shards = parse_shard(shard_text)
    part = part_path(outs.parts, shard)
    existed = part.exists()
    # Slurm's SIGUSR2 (time limit, preemption; see `lens generate --stage predict`) or
    # SIGTERM: drop the unfinished part and exit 75, "run me again" (the requeued task, or
    # the array submitted again, redoes only this shard).
    try:
        with stop_on_signals(), _progress() as progress:
            predict_shard(run, data, shard, n_shards, outs.parts,
                          stage=stage.value if stage else None, batch_size=batch_size,
                          device=device.value, progress=progress)
    except Stopped as exc:
        typer.echo(f"lens: shard {shard}/{n_shards}: {exc}; its part was not written",
                   err=True)
        raise SystemExit(EX_TEMPFAIL) from None
    from lens.predict.output import read_attrs

    attrs = read_attrs(part)
    what = "already complete, kept" if existed else "written"
    typer.echo(f"shard {shard}/{n_shards}: rows {attrs['start']}..{attrs['stop'] - 1} of "
               f"{attrs['data_n']}: {part} {what}")


def _merge(outs, n_shards: int, n_boot: int, top: int, montage: Path | None,
           class_name: str | None, force: bool) -> None:
    from lens.predict.shards import merge_parts, merged_result

    with _progress() as progress:
        done = merge_parts(outs.parts, n_shards, outs.stem, n_boot=n_boot, top=top,
                           montage=montage, montage_class=class_name, force=force,
                           progress=progress)
    info = merged_result(outs.stem)
    typer.echo(f"{info['stage']}: merged {n_shards} parts, {info['n']:,} images, "
               f"{_models(info['folds'])}")
    _report(done.written, done.metrics, done.top)


def _progress():
    from lens.progress import StageProgress

    return StageProgress({"check": "checking files", "pack": "packing images",
                          "predict": "predicting", "merge": "merging parts"})


def register(app: typer.Typer) -> None:
    app.command(name="predict")(predict)
