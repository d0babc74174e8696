"""Thin wrappers over the Slurm commands (sbatch, sacct, scancel) with clear errors.

Job states come from ``sacct`` (accounting), which still knows a job after ``squeue`` has
forgotten it. Array tasks that have started are reported one per line as ``JOBID_TASK``;
tasks still pending share one line such as ``JOBID_[2-4%2]``.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lens.errors import LensError

# States after which a job (or array task) will not run again by itself.
TERMINAL_STATES = frozenset({
    "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL",
    "OUT_OF_MEMORY", "PREEMPTED", "TIMEOUT",
})


@dataclass(frozen=True)
class JobState:
    """One line of sacct: ``job_id`` is ``12`` or ``12_3`` (array task 3)."""

    job_id: str
    state: str
    exit_code: int
    signal: int
    elapsed: str
    start: str
    end: str

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES


def run(argv: Sequence[str], *, timeout: float = 60, cwd: str | Path | None = None) -> str:
    """Run a Slurm command; its stdout, or LensError with the command and its stderr."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                              cwd=cwd)
    except FileNotFoundError:
        raise LensError(f"{argv[0]} not found: is this a Slurm login node? "
                        "(for a local test cluster: bash slurm/dev/start.sh)") from None
    except subprocess.TimeoutExpired:
        raise LensError(f"`{shlex.join(argv)}` did not answer within {timeout:.0f} s") from None
    if done.returncode != 0:
        raise LensError(f"`{shlex.join(argv)}` failed (exit {done.returncode}): "
                        f"{done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def sbatch(
    args: Sequence[str] = (),
    *,
    script: str | Path | None = None,
    wrap: str | None = None,
    cwd: str | Path | None = None,
) -> str:
    """Submit a script (or ``--wrap`` command); return the job id."""
    if (script is None) == (wrap is None):
        raise ValueError("give exactly one of script and wrap")
    argv = ["sbatch", "--parsable", *args]
    argv += ["--wrap", wrap] if wrap is not None else [str(script)]
    out = run(argv, cwd=cwd).strip()
    job_id = out.split(";")[0]  # --parsable: JOBID[;CLUSTER]
    if not job_id.isdigit():
        raise LensError(f"sbatch printed {out!r}, not a job id")
    return job_id


def job_states(job_ids: Iterable[str]) -> dict[str, JobState]:
    """sacct's view of jobs: one entry per job, started array task, or pending range."""
    ids = ",".join(job_ids)
    out = run(["sacct", "-X", "-P", "-n", "-j", ids,
               "--format=JobID,State,ExitCode,Elapsed,Start,End"])
    states: dict[str, JobState] = {}
    for line in out.splitlines():
        parts = line.split("|")
        if len(parts) != 6:
            continue
        job_id, state, exit_code, elapsed, start, end = parts
        code, _, sig = exit_code.partition(":")
        states[job_id] = JobState(
            job_id=job_id, state=state.split()[0] if state else "UNKNOWN",
            exit_code=int(code or 0), signal=int(sig or 0), elapsed=elapsed,
            start=start, end=end,
        )
    return states


def squeue_states(job_ids: Iterable[str]) -> dict[str, JobState]:
    """slurmctld's view of queued and running jobs, one entry per array task (no exit code
    or times: only sacct has those)."""
    out = run(["squeue", "-h", "-r", "-j", ",".join(job_ids), "-o", "%i|%T|%M"])
    states: dict[str, JobState] = {}
    for line in out.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3:
            states[parts[0]] = JobState(parts[0], parts[1], 0, 0, parts[2], "", "")
    return states


def wait_finished(
    job_ids: Iterable[str], *, expected: int | None = None, timeout: float = 300,
    poll: float = 1.0,
) -> dict[str, JobState]:
    """Poll sacct until every job/task of ``job_ids`` is finished (and, when ``expected``
    is given, at least that many entries exist); LensError on timeout."""
    ids = list(job_ids)
    deadline = time.monotonic() + timeout
    while True:
        states = job_states(ids)
        enough = expected is None or len(states) >= expected
        if states and enough and all(s.finished for s in states.values()):
            return states
        if time.monotonic() > deadline:
            summary = ", ".join(f"{k}={v.state}" for k, v in sorted(states.items()))
            raise LensError(f"jobs {','.join(ids)} not finished after {timeout:.0f} s: "
                            f"{summary or 'unknown to sacct'}")
        time.sleep(poll)


def scancel(job_ids: Iterable[str], *, signal: str | None = None, batch: bool = False) -> None:
    """Cancel jobs, or send them a signal (``batch``: only to the batch shell)."""
    argv = ["scancel"]
    if signal:
        argv += ["--signal", signal]
    if batch:
        argv.append("--batch")
    run([*argv, *job_ids])


def job_key(job_id: str) -> tuple[int, str]:
    """Sort key of Slurm job ids ("123", "123_4"): by number, not as text."""
    head = job_id.split("_")[0]
    return (int(head), job_id) if head.isdigit() else (0, job_id)
