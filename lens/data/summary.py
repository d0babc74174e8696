"""Counts per split, class and fold, and their rendering: pure functions of their inputs."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from lens.data.h5file import TEST, TRAIN, UNLABELED


def count_rows(
    labels: np.ndarray,
    split: np.ndarray,
    fold: np.ndarray,
    class_names: Sequence[str],
    n_folds: int,
) -> list[dict[str, Any]]:
    """One row per class (then "unlabeled" if any, then "total"): images in train, in each
    training fold, in test, and in all."""
    groups = [(name, labels == k) for k, name in enumerate(class_names)]
    if (labels == UNLABELED).any():
        groups.append(("unlabeled", labels == UNLABELED))
    groups.append(("total", np.ones(labels.shape, dtype=bool)))
    rows = []
    for name, member in groups:
        train = member & (split == TRAIN)
        rows.append(
            {
                "class": name,
                "train": int(train.sum()),
                "folds": [int((train & (fold == k)).sum()) for k in range(n_folds)],
                "test": int((member & (split == TEST)).sum()),
                "total": int(member.sum()),
            }
        )
    return rows


def counts_table(rows: list[dict[str, Any]], n_folds: int):
    """A rich Table of ``count_rows``; the "total" row is its footer."""
    from rich import box
    from rich.table import Table

    *body, total = rows
    table = Table(box=box.SIMPLE, pad_edge=False, show_edge=False, show_footer=True)

    def column(name: str, total_cell: int | str, left: bool = False) -> None:
        footer = total_cell if isinstance(total_cell, str) else f"{total_cell:,}"
        table.add_column(name, footer=footer, justify="left" if left else "right")

    column("class", total["class"], left=True)
    column("train", total["train"])
    for k in range(n_folds):
        column(f"fold {k}", total["folds"][k])
    column("test", total["test"])
    column("total", total["total"])
    for row in body:
        cells = [row["train"], *row["folds"], row["test"], row["total"]]
        table.add_row(row["class"], *(f"{c:,}" for c in cells))
    return table


def render(*parts: Any, width: int = 100) -> str:
    """Plain text of strings and rich renderables, one after the other (no colour codes)."""
    from rich.console import Console

    buffer = io.StringIO()
    console = Console(
        file=buffer,
        width=width,
        color_system=None,
        force_terminal=False,
        highlight=False,
        soft_wrap=False,
    )
    for part in parts:
        console.print(part, soft_wrap=isinstance(part, str))  # long paths are not broken
    return buffer.getvalue()


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # not reached


def render_pack(report: Any, width: int = 100) -> str:
    """What `lens pack` prints at the end (``report`` is a lens.data.pack.PackReport)."""
    from lens.data.problems import listing

    c, h, w = report.shape
    rate = report.n / report.seconds if report.seconds > 0 else 0.0
    head = [
        f"packed {report.n:,} images of shape ({c}, {h}, {w}) {report.dtype} into {report.out} "
        f"in {report.seconds:.1f} s ({rate:,.0f} images/s)",
        *(f"layout  {line}" for line in report.layouts),
        f"classes {', '.join(report.class_names) if report.class_names else '(unlabeled)'}",
    ]
    if report.n_folds:
        head.append(
            f"folds   {report.n_folds} stratified folds of the train split, seed {report.seed}"
        )
    tail = []
    if report.leaks:
        tail.append(
            f"leakage: {len(report.leaks)} image(s) appear in both train and test "
            "(identical content; --strict makes this an error):"
        )
        tail += listing([f"{a} = {b}" for a, b in report.leaks])
    else:
        tail.append("leakage: no image appears in both train and test")
    if report.duplicates:
        tail.append(
            f"duplicates: {report.duplicates} image(s) repeat an earlier image of the same split"
        )
    if report.nan_replaced:
        tail.append(f"NaN/Inf replaced with 0 in {len(report.nan_replaced)} file(s):")
        tail += listing(list(report.nan_replaced))
    if report.skipped:
        tail.append(f"skipped {len(report.skipped)} file(s) that are not .npy/.png/.jpg:")
        tail += listing(list(report.skipped))
    return render(
        "\n".join(head),
        counts_table(list(report.rows), report.n_folds),
        "\n".join(tail),
        width=width,
    )
