"""report.json -> report.md: a pure function, pinned by a golden test."""

from __future__ import annotations


def _num(value, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _ms(stat: dict | None) -> str:
    return "—" if not stat else f"{stat['mean']:.4f} ± {stat['std']:.4f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _eval_stage(name: str, st: dict) -> list[str]:
    classes = st["class_names"]
    header = ["fold", "state", *[f"AUC {c}" for c in classes], "macro AUC", "micro AUC",
              "accuracy", "test macro AUC", "epochs", "wall (s)", "restarts"]
    rows = []
    for r in st["folds"]:
        per = r.get("auc_per_class", {})
        rows.append([str(r["fold"]), r["state"], *[_num(per.get(c)) for c in classes],
                     _num(r.get("macro_auc")), _num(r.get("micro_auc")), _num(r.get("accuracy")),
                     _num(r.get("test_macro_auc")), _num(r.get("epochs")),
                     _num(r.get("wall_time_s"), 1), _num(r.get("restarts"))])
    out = [f"## {name}", "", f"{st['completed']} of {st['n_folds']} folds completed.", ""]
    out += _table(header, rows) + [""]
    summary = st.get("summary")
    if summary:
        out += ["Mean ± std over completed folds:", ""]
        keys = ["macro_auc", "micro_auc", "accuracy", "balanced_accuracy",
                *[f"auc_{c}" for c in classes]]
        out += _table(["metric", "mean ± std"], [[k, _ms(summary.get(k))] for k in keys]) + [""]
    oof = st.get("oof")
    if oof:
        ci = oof.get("macro_auc_ci") or [None, None]
        out += [f"Pooled out-of-fold ({oof['n']} held-out images): macro AUC "
                f"{_num(oof['macro_auc'])} (95% CI {_num(ci[0])}–{_num(ci[1])}), "
                f"micro AUC {_num(oof['micro_auc'])}, accuracy {_num(oof['accuracy'])}.", ""]
    ens = st.get("test_ensemble")
    if ens:
        ci = ens.get("macro_auc_ci") or [None, None]
        out += [f"Test split, ensemble of {ens['n_models']} fold models ({ens['n']} images): "
                f"macro AUC {_num(ens['macro_auc'])} (95% CI {_num(ci[0])}–{_num(ci[1])}), "
                f"micro AUC {_num(ens['micro_auc'])}, accuracy {_num(ens['accuracy'])}.", ""]
    return out


def _pretrain_stage(st: dict) -> list[str]:
    rows = [[str(r["fold"]), r["state"], _num(r.get("final_loss")), _num(r.get("epochs")),
             _num(r.get("wall_time_s"), 1), _num(r.get("restarts"))] for r in st["folds"]]
    out = ["## pretrain", "", f"{st['completed']} of {st['n_folds']} folds completed.", ""]
    header = ["fold", "state", "final loss", "epochs", "wall (s)", "restarts"]
    return out + _table(header, rows) + [""]


def render_markdown(report: dict) -> str:
    lines = [f"# lens report: {report['run']}", ""]
    if report.get("headline"):
        lines += [report["headline"], ""]
    for name, st in report["stages"].items():
        lines += _pretrain_stage(st) if name == "pretrain" else _eval_stage(name, st)
    missing = [(name, m) for name, st in report["stages"].items() for m in st["missing"]]
    if missing:
        lines += ["## Missing or failed tasks", ""]
        lines += _table(["stage", "fold", "state", "log"],
                        [[n, str(m["fold"]), m["state"], m.get("log") or m["task_dir"]]
                         for n, m in missing]) + [""]
    for fig in report.get("figures", []):
        lines += [f"![{fig}]({fig})", ""]
    return "\n".join(lines).rstrip() + "\n"
