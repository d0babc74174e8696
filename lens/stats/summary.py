"""Mean ± std of every statistic per group and overall; two sets side by side.

``collect`` reads a catalog in chunks and returns per-image values; ``summarise``,
``compare`` and ``render`` are pure functions of those values (the CLI prints ``render``;
``--json`` prints the summaries and differences).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lens.stats.load import Catalog
from lens.stats.measures import STAT_LABELS, STAT_NAMES, batch_stats

OVERALL = "overall"
FORMATS: dict[str, str] = {
    "ring_radius": ".2f",
    "ring_fwhm": ".2f",
    "background_mean": ".4f",
    "background_std": ".4f",
    "mean_pixel": ".4f",
    "bright_fraction": ".4f",
    "light_ellipticity": ".3f",
    "horizontal_elongation": ".3f",
}

PerImage = dict[str, dict[str, np.ndarray]]  # group → statistic → (n,) values


def collect(
    catalog: Catalog, max_per_class: int = 500, seed: int = 0, chunk: int = 256
) -> tuple[PerImage, dict[str, int]]:
    """Per-image statistics of up to ``max_per_class`` random images of every group.

    Returns (values, available): available is each group's size before sampling.
    """
    rng = np.random.default_rng(seed)
    values: PerImage = {}
    for group in catalog.groups:
        items = catalog.sample(group, max_per_class, rng)
        parts = [batch_stats(catalog.read(items[i : i + chunk]))
                 for i in range(0, len(items), chunk)]  # fmt: skip
        values[group] = {k: np.concatenate([p[k] for p in parts]) for k in STAT_NAMES}
    return values, {g: len(items) for g, items in catalog.groups.items()}


def _describe(values: dict[str, np.ndarray]) -> dict[str, Any]:
    n = len(values[STAT_NAMES[0]])
    stats = {}
    for k in STAT_NAMES:
        v = values[k][np.isfinite(values[k])]
        stats[k] = {
            "mean": float(v.mean()) if v.size else float("nan"),
            "std": float(v.std()) if v.size else float("nan"),
        }
    return {"n": n, "stats": stats}


def summarise(
    values: PerImage, path: str = "", available: dict[str, int] | None = None
) -> dict[str, Any]:
    """{"path", "groups": {group: {"n", "available", "stats"}}, "overall": {...}}."""
    groups = {}
    for group, v in values.items():
        groups[group] = _describe(v)
        groups[group]["available"] = (available or {}).get(group, groups[group]["n"])
    pooled = {k: np.concatenate([v[k] for v in values.values()]) for k in STAT_NAMES}
    return {"path": path, "groups": groups, OVERALL: _describe(pooled)}


def _group(summary: dict[str, Any], name: str) -> dict[str, Any]:
    return summary[OVERALL] if name == OVERALL else summary["groups"][name]


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, dict[str, float]]:
    """(mean_B − mean_A) / std_A per statistic, for every group in both and overall."""
    shared = [g for g in a["groups"] if g in b["groups"]] + [OVERALL]
    out: dict[str, dict[str, float]] = {}
    for name in shared:
        sa, sb = _group(a, name)["stats"], _group(b, name)["stats"]
        out[name] = {}
        for k in STAT_NAMES:
            spread = sa[k]["std"]
            delta = sb[k]["mean"] - sa[k]["mean"]
            out[name][k] = delta / spread if spread > 0 else float("nan")
    return out


def _cell(stats: dict[str, Any], key: str) -> str:
    fmt = FORMATS[key]
    return f"{stats[key]['mean']:{fmt}} ± {stats[key]['std']:{fmt}}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for r in [header, *rows]:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return lines


def render(a: dict[str, Any], b: dict[str, Any] | None = None) -> str:
    """Plain-text table: A's groups and overall; with B, each shared group side by side."""
    if b is None:
        names = [*a["groups"], OVERALL]
        header = ["statistic", *[f"{g} (n={_group(a, g)['n']})" for g in names]]
        rows = [[STAT_LABELS[k], *[_cell(_group(a, g)["stats"], k) for g in names]]
                for k in STAT_NAMES]  # fmt: skip
        return "\n".join([f"A: {a['path']}", *_table(header, rows)]) + "\n"
    diff = compare(a, b)
    lines = [f"A: {a['path']}", f"B: {b['path']}", "(B-A)/σA: difference of means in units "
             "of A's standard deviation"]  # fmt: skip
    for name, z in diff.items():
        ga, gb = _group(a, name), _group(b, name)
        header = [f"[{name}]", f"A (n={ga['n']})", f"B (n={gb['n']})", "(B-A)/σA"]
        rows = [[STAT_LABELS[k], _cell(ga["stats"], k), _cell(gb["stats"], k), f"{z[k]:+.2f}"]
                for k in STAT_NAMES]  # fmt: skip
        lines += ["", *_table(header, rows)]
    only = sorted(set(a["groups"]) ^ set(b["groups"]))
    if only:
        lines += ["", f"groups in only one set (overall only): {', '.join(only)}"]
    return "\n".join(lines) + "\n"
