"""Survey-scale prediction as N independent jobs: contiguous shards, one part file each,
merged in order into the file an unsharded run writes.

    shard_range(n_images, shard, n_shards) -> (start, stop)
    predict_shard(run, data, shard, n_shards, out_dir)   # writes out_dir/part_<shard>.h5
    merge_parts(out_dir, n_shards, out)                   # writes out.h5, out.csv, ...

A part is written atomically, so one that exists is complete: running a shard again
(a requeued array task) returns at once. Parts hold the same datasets as PRED.h5 for
their rows, with attributes shard, n_shards, start, stop.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from pathlib import Path
from typing import Any

from lens.errors import LensError
from lens.predict.finish import Finished, finish, prepare_outputs
from lens.predict.montage import ranked_classes
from lens.predict.output import PART_KEYS, Outputs, n_rows, read_attrs, read_rows, writing
from lens.predict.settings import DEFAULT_BATCH, Progress, check_batch_size

MERGE_ROWS = 1 << 16  # rows copied at a time when merging: memory stays bounded


def shard_range(n_images: int, shard: int, n_shards: int) -> tuple[int, int]:
    """Rows start..stop-1 of shard ``shard`` of ``n_shards``: contiguous, in order, sizes
    differing by at most one, together every row exactly once."""
    if n_shards < 1:
        raise LensError(f"the number of shards must be at least 1, got {n_shards}")
    if not 0 <= shard < n_shards:
        raise LensError(f"shard {shard} is out of range: shards are 0..{n_shards - 1}")
    if n_images < 0:
        raise LensError(f"the number of images must be >= 0, got {n_images}")
    base, extra = divmod(n_images, n_shards)
    start = shard * base + min(shard, extra)
    return start, start + base + (1 if shard < extra else 0)


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> (I, N), I in 0..N-1."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m:
        raise LensError(f"--shard {text}: expected I/N, e.g. --shard 0/8 (shard I of N, "
                        f"counting from 0)")
    shard, n = int(m.group(1)), int(m.group(2))
    shard_range(0, shard, n)  # the range checks
    return shard, n


def part_path(out_dir: str | Path, shard: int) -> Path:
    return Path(out_dir) / f"part_{shard}.h5"


def merged_after_parts(parts: Path, merged: Path, done: Collection[int], n_shards: int) -> bool:
    """Every part is there (``done``: the shards with a part) and ``merged`` (PRED.h5) was
    written after the newest of them."""
    if len(done) != n_shards or not merged.is_file():
        return False
    newest = max(part_path(parts, i).stat().st_mtime_ns for i in done)
    return merged.stat().st_mtime_ns >= newest


def same_path(a: Any, b: Any) -> bool:
    return Path(str(a)).resolve() == Path(str(b)).resolve()


def _check_done(part: Path, run: str | Path, data: str | Path, stage: str | None,
                shard: int, n_shards: int) -> None:
    """An existing part must be this shard of this command; LensError otherwise."""
    attrs = read_attrs(part)
    problems = []
    if (attrs.get("shard"), attrs.get("n_shards")) != (shard, n_shards):
        problems.append(f"it is shard {attrs.get('shard')}/{attrs.get('n_shards')}, "
                        f"not {shard}/{n_shards}")
    if not same_path(attrs.get("run"), run):
        problems.append(f"its run is {attrs.get('run')}, not {run}")
    if not same_path(attrs.get("data"), data):
        problems.append(f"its data is {attrs.get('data')}, not {data}")
    if stage is not None and attrs.get("stage") != stage:
        problems.append(f"its stage is {attrs.get('stage')}, not {stage}")
    if problems:
        raise LensError(f"{part} exists but was made by another command ({'; '.join(problems)}); "
                        f"delete {part.parent} (or use another --out) to predict again")


def predict_shard(run: str | Path, data: str | Path, shard: int, n_shards: int,
                  out_dir: str | Path, *, stage: str | None = None,
                  batch_size: int = DEFAULT_BATCH, device: str = "auto",
                  progress: Progress | None = None) -> Path:
    """Write ``out_dir/part_<shard>.h5`` (rows ``shard_range`` of the data); return its path.
    A complete part of the same command is kept as it is."""
    from lens.predict.data import open_data
    from lens.predict.models import load_ensemble
    from lens.predict.run import base_attrs, infer, resolve_device

    shard_range(0, shard, n_shards)
    check_batch_size(batch_size)
    out_dir = Path(out_dir)
    part = part_path(out_dir, shard)
    if part.exists():
        _check_done(part, run, data, stage, shard, n_shards)
        return part
    dev = resolve_device(device)
    ensemble = load_ensemble(run, stage)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open_data(data, ensemble.trained, out_dir, progress) as info:
        start, stop = shard_range(info.n, shard, n_shards)
        attrs = {**base_attrs(ensemble, data, info, batch_size, dev), "start": start,
                 "stop": stop, "shard": shard, "n_shards": n_shards}
        with writing(part, None, stop - start, attrs) as write:
            for block in infer(ensemble, info, start, stop, batch_size=batch_size, device=dev,
                               progress=progress):
                write(block)
    return part


def _check_parts(out_dir: Path, n_shards: int) -> list[dict[str, Any]]:
    """The attributes of every part, after checking that they fit together."""
    if n_shards < 1:
        raise LensError(f"--shards {n_shards}: must be at least 1")
    paths = [part_path(out_dir, i) for i in range(n_shards)]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        shown = ", ".join(missing[:20]) + (f" and {len(missing) - 20} more"
                                           if len(missing) > 20 else "")
        raise LensError(f"{out_dir}: missing {len(missing)} of {n_shards} parts: {shown}; "
                        f"run those shards (`lens predict RUN DATA --out PRED --shard I/"
                        f"{n_shards}`) first")
    attrs = [read_attrs(p) for p in paths]
    first = {k: v for k, v in attrs[0].items() if k not in (*PART_KEYS, "start", "stop")}
    for i, (p, a) in enumerate(zip(paths, attrs, strict=True)):
        if (a.get("shard"), a.get("n_shards")) != (i, n_shards):
            raise LensError(f"{p}: is shard {a.get('shard')}/{a.get('n_shards')}, "
                            f"expected {i}/{n_shards}")
        common = {k: v for k, v in a.items() if k not in (*PART_KEYS, "start", "stop")}
        changed = sorted(k for k in set(first) | set(common) if first.get(k) != common.get(k))
        if changed:
            key = changed[0]
            raise LensError(f"{p}: made by another command than {paths[0].name} ({key}: "
                            f"{common.get(key)!r} vs {first.get(key)!r})")
        expected = shard_range(int(a["data_n"]), i, n_shards)
        if (a["start"], a["stop"]) != expected or n_rows(p) != expected[1] - expected[0]:
            raise LensError(f"{p}: holds rows {a['start']}..{a['stop'] - 1}, expected "
                            f"{expected[0]}..{expected[1] - 1}")
    return attrs


def merge_parts(out_dir: str | Path, n_shards: int, out: str | Path, *, n_boot: int = 1000,
                top: int = 0, montage: str | Path | None = None,
                montage_class: str | None = None, force: bool = False,
                progress: Progress | None = None) -> Finished:
    """Merge out_dir/part_0.h5 .. part_<N-1>.h5, in order, into OUT.h5 and OUT.csv (and,
    as an unsharded run would, OUT.metrics.json and OUT.roc.png when labeled). The montage
    reads the images from the data file the parts name, which must be a packed file."""
    out_dir = Path(out_dir)
    outs = Outputs.of(out)
    attrs = _check_parts(out_dir, n_shards)
    ranked_classes(json.loads(attrs[0]["class_names"]), montage_class)
    prepare_outputs(outs, force)
    n = int(attrs[0]["data_n"])
    merged = {k: v for k, v in attrs[0].items() if k not in PART_KEYS}
    merged.update(start=0, stop=n)
    done = 0
    with writing(outs.h5, outs.csv, n, merged) as write:
        for i in range(n_shards):
            part, size = part_path(out_dir, i), attrs[i]["stop"] - attrs[i]["start"]
            for lo in range(0, size, MERGE_ROWS):
                block = read_rows(part, lo, min(size, lo + MERGE_ROWS))
                write(block)
                done += len(block)
                if progress is not None:
                    progress("merge", done, n)
    images = _packed_data(merged) if montage is not None else None
    result = finish(outs, images, n_boot=n_boot, top=top, montage=montage,
                    montage_class=montage_class)
    result.written[:0] = [outs.h5, outs.csv]
    return result


def _packed_data(attrs: dict[str, Any]) -> Path:
    """The packed data file the parts were predicted from, if it is one and unchanged."""
    from lens.data.h5file import read_info

    data = Path(str(attrs["data"]))
    if data.is_dir() or not data.is_file():
        raise LensError(f"the montage needs the images, but {data} is "
                        f"{'a folder (packed on the fly)' if data.is_dir() else 'not readable'}"
                        f"; pack it with `lens pack` and predict from the packed file")
    info = read_info(data)
    if info.created != attrs["data_created"] or info.n != int(attrs["data_n"]):
        raise LensError(f"{data} changed since the parts were predicted (repacked?)")
    return data


def merged_result(out: str | Path) -> dict[str, Any]:
    """What a merge wrote, for the command's message: attributes of OUT.h5."""
    attrs = read_attrs(Outputs.of(out).h5)
    return {"n": int(attrs["data_n"]), "stage": attrs["stage"],
            "folds": json.loads(attrs["folds"])}
