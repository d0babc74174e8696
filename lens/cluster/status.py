"""Where every task of a run stands: `lens status`, the `--wait` table, and `lens report`.

A task's state comes from, in order: its result.json (COMPLETED when valid, whatever the
scheduler says), Slurm (sacct, and squeue for a job submitted a moment ago that the
accounting database does not list yet; pending array ranges such as ``123_[2-4%2]`` are
expanded per fold), the local executor's record in run.json (checked against the live
processes), and finally the files on disk (INCOMPLETE: a task folder without a result;
MISSING: nothing at all). A job that Slurm does not know is UNKNOWN, with a note saying so.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lens.cluster import manifest
from lens.cluster.slurmcli import TERMINAL_STATES, JobState
from lens.errors import LensError

STAGE_ORDER = ("classify", "pretrain", "finetune")
REPORT = "report"
# States in which a task will still run (or run again) without anyone resubmitting it.
ACTIVE_STATES = frozenset({"PENDING", "RUNNING", "REQUEUED", "RESIZING", "SUSPENDED",
                           "CONFIGURING", "COMPLETING", "REQUEUE_HOLD", "REQUEUE_FED",
                           "SIGNALING", "STAGE_OUT", "STOPPED"})
_PENDING_RANGE = re.compile(r"^(\d+)_\[([0-9,\-]+)(?:%\d+)?\]$")
_REQUEUE_LINE = "checkpointed; requeueing it"


@dataclass(frozen=True)
class TaskStatus:
    """One row: a (stage, fold) task, or the report job (``fold`` None)."""

    stage: str
    fold: int | None
    state: str
    job_id: str | None = None
    elapsed: str | None = None
    restarts: int | None = None
    log: str | None = None
    detail: str = ""

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def finished(self) -> bool:
        return not self.active


@dataclass(frozen=True)
class RunStatus:
    run: str
    tasks: tuple[TaskStatus, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)

    def stage_tasks(self, stage: str) -> list[TaskStatus]:
        return [t for t in self.tasks if t.stage == stage]

    @property
    def report(self) -> TaskStatus | None:
        rows = self.stage_tasks(REPORT)
        return rows[0] if rows else None

    def to_json(self) -> dict[str, Any]:
        counts: dict[str, dict[str, int]] = {}
        for t in self.tasks:
            counts.setdefault(t.stage, {})
            counts[t.stage][t.state] = counts[t.stage].get(t.state, 0) + 1
        return {"run": self.run, "tasks": [asdict(t) for t in self.tasks],
                "summary": counts, "notes": list(self.notes)}


# ---- Slurm ---------------------------------------------------------------------------------


def expand_job_id(job_id: str) -> list[str]:
    """``123_[0-2,5%2]`` -> 123_0, 123_1, 123_2, 123_5; anything else unchanged."""
    match = _PENDING_RANGE.match(job_id)
    if not match:
        return [job_id]
    base, spec = match.groups()
    out = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        out += [f"{base}_{i}" for i in range(int(lo), int(hi or lo) + 1)]
    return out


def slurm_query(ids: list[str]) -> dict[str, JobState]:
    """sacct, then squeue for the jobs sacct does not list yet: the accounting database
    learns of a job a moment after sbatch returns, slurmctld at once."""
    from lens.cluster import slurmcli

    states = slurmcli.job_states(ids)
    known = {key.split("_")[0] for key in states}
    missing = [i for i in ids if i not in known]
    if missing:
        try:
            states.update(slurmcli.squeue_states(missing))
        except LensError:
            pass
    return states


def sacct_states(job_ids: Iterable[str],
                 query: Callable[[list[str]], dict[str, JobState]] | None = None,
                 ) -> dict[str, JobState]:
    """Slurm's state of each job and array task (``123`` and ``123_4``) of the given jobs."""
    ids = sorted({j.split("_")[0] for j in job_ids}, key=int)
    if not ids:
        return {}
    raw = (query or slurm_query)(ids)
    states: dict[str, JobState] = {}
    for key, state in raw.items():
        for one in expand_job_id(key):
            states[one] = state
    return states


# ---- local executor --------------------------------------------------------------------------


def process_alive(pid: int | None, needle: str | None = None) -> bool:
    """Is ``pid`` a live process (whose command line contains ``needle``, where /proc
    lets us check: a recycled pid must not pass for the task)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if needle is None:
        return True
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return True  # no /proc (macOS): trust the pid
    return needle in cmdline


def local_driver_alive(data: dict[str, Any], submission: int | None) -> bool | None:
    """Whether the `lens submit` process that runs a local submission still runs; None when
    it ran on another host (we cannot tell from here)."""
    subs = data.get("submissions") or []
    if submission is None or not 0 <= submission < len(subs):
        return False
    return driver_alive(subs[submission])


def driver_alive(submission: dict[str, Any]) -> bool | None:
    """Whether the process recorded as a submission's ``driver`` still runs; None when it
    ran on another host."""
    driver = submission.get("driver") or {}
    if driver.get("host") != socket.gethostname():
        return None
    return process_alive(driver.get("pid"))


# ---- assembling ------------------------------------------------------------------------------


def format_seconds(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    s = int(round(seconds))
    days, s = divmod(s, 86400)
    text = f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return f"{days}-{text}" if days else text


def count_requeues(log: str | None) -> int | None:
    if not log:
        return None
    try:
        with open(log, errors="replace") as f:
            return sum(_REQUEUE_LINE in line for line in f)
    except OSError:
        return None


def _read_result(run: Path, stage: str, fold: int) -> dict[str, Any] | None:
    from lens.report.collect import read_result, task_dir

    return read_result(task_dir(run, stage, fold))


def _job_row(stage: str, fold: int | None, entry: dict[str, Any] | None,
             sacct: dict[str, JobState] | None, data: dict[str, Any],
             unknown: list[str]) -> TaskStatus:
    """A task (or report job) without a valid result, from its job record."""
    assert entry is not None
    job_id, log = entry.get("job_id"), entry.get("log")
    if entry.get("executor") == "slurm":
        if sacct is None:
            return TaskStatus(stage, fold, "UNKNOWN", job_id, log=log,
                              detail="sacct is not available here")
        found = sacct.get(job_id or "")
        if found is None:
            unknown.append(job_id or "?")
            return TaskStatus(stage, fold, "UNKNOWN", job_id, log=log,
                              detail=f"sacct does not know job {job_id}")
        detail = ""
        if found.state == "COMPLETED" and fold is not None:
            detail = "the job ended without a valid result.json"
        elif found.state in TERMINAL_STATES and found.state != "COMPLETED":
            detail = f"exit code {found.exit_code}" + (f", signal {found.signal}"
                                                       if found.signal else "")
        return TaskStatus(stage, fold, found.state, job_id, found.elapsed,
                          count_requeues(log) if fold is not None else None, log, detail)
    # local or debug: the driver's record, checked against the processes
    state = entry.get("state", "UNKNOWN")
    elapsed = format_seconds(entry.get("elapsed_s"))
    if state in ACTIVE_STATES:
        alive = local_driver_alive(data, entry.get("submission"))
        if alive is False:
            return TaskStatus(stage, fold, "INTERRUPTED", job_id, elapsed, None, log,
                              "the `lens submit` process that ran it has ended")
        if alive is None:
            return TaskStatus(stage, fold, state, job_id, elapsed, None, log,
                              "ran on another host; cannot check its process from here")
    return TaskStatus(stage, fold, state, job_id, elapsed, None, log,
                      entry.get("detail", ""))


def run_status(run: str | os.PathLike[str], *,
               query: Callable[[list[str]], dict[str, JobState]] | None = None) -> RunStatus:
    """Every task of the run (and its latest report job). ``query`` replaces sacct (tests)."""
    run = Path(run)
    data = manifest.require(run)
    stages = [s for s in STAGE_ORDER if s in (data.get("stages") or {})]
    slurm_ids = [e["job_id"] for s in stages for e in manifest.fold_jobs(data, s).values()
                 if e.get("executor") == "slurm" and e.get("job_id")]
    report = manifest.latest_report(data)
    if report and report.get("executor") == "slurm" and report.get("job_id"):
        slurm_ids.append(report["job_id"])
    notes: list[str] = []
    sacct: dict[str, JobState] | None = {}
    if slurm_ids:
        try:
            sacct = sacct_states(slurm_ids, query)
        except LensError as exc:
            sacct = None
            notes.append(f"Slurm's accounting is not available ({exc}); states of unfinished "
                         "tasks are unknown")
    unknown: list[str] = []
    rows: list[TaskStatus] = []
    for stage in stages:
        jobs = manifest.fold_jobs(data, stage)
        for fold in range(int(data["stages"][stage]["folds"])):
            entry = jobs.get(fold)
            result = _read_result(run, stage, fold)
            if result is not None:
                elapsed = None
                if entry and entry.get("executor") == "slurm" and sacct:
                    found = sacct.get(entry.get("job_id", ""))
                    elapsed = found.elapsed if found else None
                elif entry:
                    elapsed = format_seconds(entry.get("elapsed_s"))
                elapsed = elapsed or format_seconds(result.get("wall_time_s"))
                rows.append(TaskStatus(stage, fold, "COMPLETED",
                                       entry.get("job_id") if entry else None, elapsed,
                                       int(result.get("restarts", 0)),
                                       entry.get("log") if entry else None))
            elif entry is not None:
                rows.append(_job_row(stage, fold, entry, sacct, data, unknown))
            else:
                exists = (run / stage / f"fold_{fold}").exists()
                rows.append(TaskStatus(stage, fold, "INCOMPLETE" if exists else "MISSING",
                                       detail="no job submitted for it"))
    if report is not None:
        rows.append(_job_row(REPORT, None, report, sacct, data, unknown))
    if unknown:
        notes.append(f"sacct does not know job(s) {', '.join(sorted(set(unknown)))}: they may "
                     "have left the accounting database, or were submitted on another cluster; "
                     "their tasks show UNKNOWN unless their result files are complete")
    return RunStatus(str(run), tuple(rows), tuple(notes))


Lookup = Callable[[str, int], 'tuple[str, str | None] | None']


def state_lookup(run: str | os.PathLike[str]) -> Lookup:
    """(stage, fold) -> (state, log) for `lens report`; never raises (runs without a
    manifest, or without Slurm, simply get no lookup results)."""
    try:
        status = run_status(run)
    except LensError:
        return lambda stage, fold: None
    table = {(t.stage, t.fold): (t.state, t.log) for t in status.tasks if t.fold is not None}
    return lambda stage, fold: table.get((stage, fold))


# ---- rendering ---------------------------------------------------------------------------

_STYLE = {"COMPLETED": "green", "RUNNING": "cyan", "PENDING": "yellow", "REQUEUED": "yellow",
          "MISSING": "dim"}


def summary_line(status: RunStatus) -> str:
    """Per stage, in the order of the rows: ``classify 3/5 completed``; the job that follows
    the arrays (``fold`` None: the report, a prediction's merge) by its state."""
    parts = []
    for stage in dict.fromkeys(t.stage for t in status.tasks):
        rows = status.stage_tasks(stage)
        if rows[0].fold is None:
            parts.append(f"{stage} {rows[0].state}")
            continue
        done = sum(r.state == "COMPLETED" for r in rows)
        parts.append(f"{stage} {done}/{len(rows)} completed")
    return "; ".join(parts)


def render_table(status: RunStatus) -> Any:
    """A rich Table of the tasks (pure: the same status gives the same table)."""
    from rich.table import Table

    table = Table(title=f"{status.run}", title_justify="left", caption=summary_line(status),
                  caption_justify="left")
    for name, justify in (("stage", "left"), ("fold", "right"), ("state", "left"),
                          ("job", "left"), ("elapsed", "right"), ("restarts", "right"),
                          ("log / note", "left")):
        table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for t in status.tasks:
        problem = t.state not in ("COMPLETED", "RUNNING", "PENDING", "REQUEUED")
        where = " ".join(x for x in ((t.log if problem else None), t.detail) if x)
        table.add_row(t.stage, "" if t.fold is None else str(t.fold),
                      f"[{_STYLE.get(t.state, 'red')}]{t.state}[/]", t.job_id or "",
                      t.elapsed or "", "" if t.restarts is None else str(t.restarts), where)
    return table


def render_text(status: RunStatus, width: int = 120) -> str:
    """The table and the notes as plain text (golden tests, logs)."""
    import io

    from rich.console import Console

    console = Console(width=width, record=True, color_system=None, file=io.StringIO())
    console.print(render_table(status))
    for note in status.notes:
        console.print(f"note: {note}")
    return console.export_text()
