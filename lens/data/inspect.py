"""`lens inspect`: what a packed file holds, from its index and one streaming pass over pixels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lens.data.h5file import TEST, TRAIN, read_index, read_info
from lens.data.summary import count_rows, counts_table, human_bytes, render

BLOCK_BYTES = 32 << 20  # pixels read at once for the value range


def summarize(path: str | Path) -> dict[str, Any]:
    """A JSON-ready description of a packed file; LensError for a bad or unknown file."""
    import h5py

    info = read_info(path)  # validates the schema (unknown versions are refused here)
    index = read_index(path)
    with h5py.File(info.path, "r") as f:
        lo, hi, nonfinite = _value_range(f["images"])
        hashes = [h.decode() if isinstance(h, bytes) else str(h) for h in f["hash"][:]]
        attrs = {k: f.attrs[k] for k in ("nan_policy", "size", "crop") if k in f.attrs}
    train_hashes = {h for h, s in zip(hashes, index.split, strict=True) if s == TRAIN}
    leaks = sum(
        1 for h, s in zip(hashes, index.split, strict=True) if s == TEST and h in train_hashes
    )
    return {
        "path": str(info.path),
        "schema_version": info.schema_version,
        "images": info.n,
        "shape": [info.channels, info.height, info.width],
        "dtype": info.dtype,
        "file_bytes": info.path.stat().st_size,
        "classes": list(info.class_names),
        "counts": count_rows(index.labels, index.split, index.fold, info.class_names, info.n_folds),
        "n_folds": info.n_folds,
        "fold_seed": info.fold_seed,
        "value_range": None if lo is None else [lo, hi],
        "nonfinite_values": nonfinite,
        "test_images_also_in_train": leaks,
        "normalize": info.normalize,
        "nan_policy": str(attrs.get("nan_policy", "")),
        "resize": int(attrs.get("size", 0)),
        "crop": int(attrs.get("crop", 0)),
        "provenance": {
            "command": info.command,
            "created": info.created,
            "lens_version": info.lens_version,
        },
    }


def _value_range(images: Any) -> tuple[float | None, float | None, int]:
    """(min, max) of the finite pixels and the count of non-finite ones, block by block."""
    n = images.shape[0]
    per_image = max(1, int(np.prod(images.shape[1:])) * images.dtype.itemsize)
    block = max(1, BLOCK_BYTES // per_image)
    lo, hi, nonfinite = np.inf, -np.inf, 0
    for s in range(0, n, block):
        x = images[s : s + block]
        finite = np.isfinite(x)
        if not finite.all():
            nonfinite += int((~finite).sum())
            x = x[finite]
        if x.size:
            lo, hi = min(lo, float(x.min())), max(hi, float(x.max()))
    if lo > hi:
        return None, None, nonfinite
    return lo, hi, nonfinite


def render_inspect(s: dict[str, Any], width: int = 100) -> str:
    """The text `lens inspect` prints (pure function of ``summarize``'s dict)."""
    c, h, w = s["shape"]
    vr = s["value_range"]
    value_range = "n/a" if vr is None else f"[{vr[0]:.6g}, {vr[1]:.6g}]"
    if s["nonfinite_values"]:
        value_range += f" and {s['nonfinite_values']:,} NaN/Inf values"
    folds = f"{s['n_folds']} (seed {s['fold_seed']})" if s["n_folds"] else "none"
    transform = [f"normalize {s['normalize']}", f"NaN policy {s['nan_policy'] or 'n/a'}"]
    if s["crop"]:
        transform.append(f"centre crop {s['crop']}")
    if s["resize"]:
        transform.append(f"resized to {s['resize']}x{s['resize']}")
    leaks = s["test_images_also_in_train"]
    prov = s["provenance"]
    head = "\n".join(
        [
            f"{s['path']}: lens packed file, schema version {s['schema_version']}, "
            f"{human_bytes(s['file_bytes'])}",
            f"images   {s['images']:,} x ({c}, {h}, {w}) {s['dtype']}",
            f"classes  {', '.join(s['classes']) if s['classes'] else '(unlabeled)'}",
            f"values   {value_range}",
            f"folds    {folds}",
            f"packing  {', '.join(transform)}",
            f"leakage  {leaks:,} test image(s) identical to a train image"
            if leaks
            else "leakage  no test image is identical to a train image",
            f"command  {prov['command'] or 'n/a'}",
            f"created  {prov['created'] or 'n/a'} by lens {prov['lens_version'] or 'n/a'}",
        ]
    )
    return render(head, counts_table(s["counts"], s["n_folds"]), width=width)
