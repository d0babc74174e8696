"""sbatch scripts as pure functions of frozen dataclasses (golden tests pin the output).

- :func:`render_array_script`: one stage, one array task per fold, ``srun`` for the ranks,
  DDP rendezvous variables, and the host-side requeue on exit code 75.
- :func:`render_aggregate_script`: ``python -m lens report RUN`` after the arrays.
- :func:`render_submit_script`: ``submit.sh``, chaining the scripts with dependencies.

Quoting: values in shell lines go through :func:`shlex.quote`; values in ``#SBATCH`` lines
through :func:`sbatch_quote` (sbatch's own parser: double quotes and backslash escapes, and
an unquoted ``#`` starts a comment). ``#SBATCH`` lines never contain shell variables.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from lens.cluster.requeue import EX_TEMPFAIL, requeue_block, wait_block
from lens.errors import LensError

DEPENDENCIES = ("afterany", "aftercorr", "afterok")
_SAFE_SBATCH = re.compile(r"^[A-Za-z0-9_./:=%,@+-]+$")


@dataclass(frozen=True)
class Resources:
    """What one job (or one array task) asks Slurm for. ``mem`` and ``gpus`` are per node."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str = "01:00:00"
    ntasks_per_node: int = 1
    cpus_per_task: int = 1
    gpus: int = 0
    gpu_type: str | None = None
    mem: str | None = None
    constraint: str | None = None
    extra: tuple[str, ...] = ()


@dataclass(frozen=True)
class ArrayJob:
    """One stage of an experiment: ``lens train`` once per fold, as one Slurm array.

    ``python`` is the argv prefix that runs lens's Python: an interpreter, or
    ``apptainer exec ... IMAGE python`` (lens.cluster.container).
    """

    stage: str
    data: str
    run_dir: str
    folds: tuple[int, ...]
    python: tuple[str, ...]
    resources: Resources = Resources()
    config: str | None = None
    sets: tuple[str, ...] = ()
    setup: tuple[str, ...] = ()
    array_parallelism: int | None = None
    signal_delay_s: int = 120
    max_requeues: int = 20
    job_name: str | None = None

    @property
    def name(self) -> str:
        return self.job_name or f"lens-{self.stage}"


@dataclass(frozen=True)
class AggregateJob:
    """The job that aggregates the folds: ``python -m lens report RUN``."""

    run_dir: str
    python: tuple[str, ...]
    resources: Resources = Resources(time="00:30:00")
    setup: tuple[str, ...] = ()
    job_name: str = "lens-report"


@dataclass(frozen=True)
class SubmitStep:
    """One ``sbatch`` in submit.sh; ``after`` names an earlier step, ``dependency`` its type."""

    name: str
    script: str
    after: str | None = None
    dependency: str | None = None


@dataclass(frozen=True)
class SubmitScript:
    run_dir: str
    steps: tuple[SubmitStep, ...]


# ---- quoting ---------------------------------------------------------------------------------


def sbatch_quote(value: str) -> str:
    """Quote a value for an ``#SBATCH`` line the way sbatch's own parser reads it back."""
    _one_line(value)
    if _SAFE_SBATCH.match(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _one_line(value: str) -> str:
    if any(c in value for c in "\n\r\0"):
        raise LensError(f"{value!r}: a value in a Slurm script must be one line")
    return value


def _q(value: str) -> str:
    return shlex.quote(_one_line(value))


def _qwords(words: Sequence[str]) -> str:
    return " ".join(_q(w) for w in words)


def array_spec(folds: Sequence[int], parallelism: int | None = None) -> str:
    """``--array`` value: ranges compressed, ``%N`` throttle. (0,1,2,4) -> '0-2,4'."""
    if not folds:
        raise LensError("an array job needs at least one fold")
    if any(f < 0 for f in folds) or len(set(folds)) != len(folds):
        raise LensError(f"folds {list(folds)} must be distinct non-negative integers")
    items, ordered = [], sorted(folds)
    start = prev = ordered[0]
    for f in [*ordered[1:], None]:
        if f is not None and f == prev + 1:
            prev = f
            continue
        items.append(str(start) if start == prev else f"{start}-{prev}")
        if f is not None:
            start = prev = f
    throttle = f"%{parallelism}" if parallelism else ""
    return ",".join(items) + throttle


def log_pattern(run_dir: str, stem: str) -> str:
    """A Slurm output path under RUN/logs; a literal % in RUN is escaped as %%.

    Slurm drops every backslash from an output path and then expands no %A/%a: such a run
    folder cannot hold the logs, so it is refused.
    """
    if "\\" in run_dir:
        raise LensError(f"run folder {run_dir!r}: Slurm log paths cannot contain a backslash")
    return f"{run_dir.rstrip('/').replace('%', '%%')}/logs/{stem}.out"


# ---- pieces ----------------------------------------------------------------------------------


def _resource_lines(r: Resources) -> list[str]:
    opts = [("partition", r.partition), ("account", r.account), ("qos", r.qos),
            ("time", r.time), ("nodes", "1"), ("ntasks-per-node", str(r.ntasks_per_node)),
            ("cpus-per-task", str(r.cpus_per_task))]
    if r.gpus:
        opts.append(("gres", f"gpu:{r.gpu_type}:{r.gpus}" if r.gpu_type else f"gpu:{r.gpus}"))
    opts += [("mem", r.mem), ("constraint", r.constraint)]
    lines = [f"#SBATCH --{key}={sbatch_quote(value)}" for key, value in opts if value]
    for extra in r.extra:
        if not extra.startswith("--") or "$" in _one_line(extra):
            raise LensError(f"extra sbatch line {extra!r} must be one option without variables")
        lines.append(f"#SBATCH {extra}")
    return lines


def _setup_block(setup: Sequence[str]) -> list[str]:
    if not setup:
        return []
    return ["", "# Site setup (from the profile).", *(_one_line(line) for line in setup)]


def train_command(job: ArrayJob) -> str:
    """The per-task command; the fold is the array index, expanded by the batch shell."""
    words = [*job.python, "-m", "lens", "train", "--stage", job.stage, "--data", job.data]
    tail = ["--out", job.run_dir]
    if job.config:
        tail += ["--config", job.config]
    for item in job.sets:
        tail += ["--set", item]
    return f'{_qwords(words)} --fold "$SLURM_ARRAY_TASK_ID" {_qwords(tail)}'


_CHECKPOINT = """\
# Preemption and time limits, handled on the host. Slurm signals this batch shell (B:USR2)
# {delay} s before the limit; the shell forwards SIGUSR2 to the srun step, every rank
# checkpoints and exits {code} ("run me again"), and the shell then requeues this array task
# with scontrol, here on the host: scontrol is usually missing inside a container image.
# The requeued task starts this script again with SLURM_RESTART_COUNT + 1 and resumes from
# its checkpoint.
"""

_SIGNAL_BLOCK = """\
forward_usr2() {{
    echo "lens: SIGUSR2 received; asking the task to {verb}" >&2
    if [[ -n "${{step:-}}" ]]; then kill -USR2 "$step" 2>/dev/null || true; fi
}}
trap forward_usr2 USR2

{command} &
step=$!
# A trapped signal ends `wait` early (status > 128): wait again until the step is gone.
"""


def signal_block(command: str, delay_s: int, max_requeues: int, *, explain: str = "",
                 verb: str = "checkpoint") -> str:
    """Run ``command`` (an srun step) in the background; forward Slurm's SIGUSR2 to it; on
    its exit code 75, requeue this array task from the host (see ``_CHECKPOINT``)."""
    if delay_s < 0 or max_requeues < 0:
        raise LensError("signal_delay_s and max_requeues must be non-negative")
    explain = explain or _CHECKPOINT.format(delay=delay_s, code=EX_TEMPFAIL)
    return (explain + _SIGNAL_BLOCK.format(verb=verb, command=command) + wait_block("step")
            + "\n" + requeue_block(max_requeues))


# ---- scripts ---------------------------------------------------------------------------------


def render_array_script(job: ArrayJob) -> str:
    """The sbatch script of one stage: one array task per fold."""
    if job.signal_delay_s < 0 or job.max_requeues < 0:
        raise LensError("signal_delay_s and max_requeues must be non-negative")
    r = job.resources
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={sbatch_quote(job.name)}",
        f"#SBATCH --array={array_spec(job.folds, job.array_parallelism)}",
        f"#SBATCH --output={sbatch_quote(log_pattern(job.run_dir, job.stage + '_%A_%a'))}",
        "#SBATCH --open-mode=append",
        *_resource_lines(r),
        "#SBATCH --requeue",
        f"#SBATCH --signal=B:USR2@{job.signal_delay_s}",
        "#",
        f"# lens: stage {job.stage}, one array task per fold (fold = SLURM_ARRAY_TASK_ID),",
        f"# {r.ntasks_per_node} rank(s) per task started by srun. Written by `lens generate`.",
        "set -euo pipefail",
        *_setup_block(job.setup),
        "",
        "# DDP rendezvous: rank 0 listens on the first host of the allocation, on a port",
        "# derived from the job id (array tasks sharing a node get different ports).",
        "# (sed reads every line: `head -n 1` could end scontrol with SIGPIPE under pipefail)",
        'MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)',
        "MASTER_PORT=$((20000 + SLURM_JOB_ID % 20000))",
        "export MASTER_ADDR MASTER_PORT",
        'echo "lens: $SLURM_JOB_NAME task ${SLURM_ARRAY_TASK_ID} on $(hostname)'
        ' (restart ${SLURM_RESTART_COUNT:-0}, rendezvous $MASTER_ADDR:$MASTER_PORT)"',
        "",
    ]
    return "\n".join(lines) + "\n" + signal_block(
        f"srun {train_command(job)}", job.signal_delay_s, job.max_requeues)


def render_single_step_script(job_name: str, log: str, resources: Resources,
                              about: Sequence[str], setup: Sequence[str],
                              words: Sequence[str]) -> str:
    """A small job of one srun step (the report, a prediction's merge): ``about`` is the
    comment explaining it, one ``# lens: ...`` line each."""
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={sbatch_quote(job_name)}",
        f"#SBATCH --output={sbatch_quote(log)}",
        *_resource_lines(resources),
        "#",
        *about,
        "set -euo pipefail",
        *_setup_block(setup),
        "",
        f"srun {_qwords(words)}",
        "",
    ]
    return "\n".join(lines)


def render_aggregate_script(job: AggregateJob) -> str:
    """One small job that aggregates every fold into the run's report."""
    return render_single_step_script(
        job.job_name, log_pattern(job.run_dir, "report_%j"), job.resources,
        ["# lens: aggregate every fold of the run into its report (after the arrays, whatever",
         "# their outcome, so failed folds are reported too). Written by `lens generate`."],
        job.setup, [*job.python, "-m", "lens", "report", job.run_dir])


def render_submit_script(plan: SubmitScript) -> str:
    """submit.sh: sbatch each script in order, chained with ``--dependency``."""
    names = [s.name for s in plan.steps]
    for i, step in enumerate(plan.steps):
        if not re.fullmatch(r"[a-z][a-z0-9_]*", step.name):
            raise LensError(f"step name {step.name!r} must be a lower-case word")
        if (step.after is None) != (step.dependency is None):
            raise LensError(f"step {step.name}: give both after and dependency, or neither")
        if step.after is not None and step.after not in names[:i]:
            raise LensError(f"step {step.name} waits for {step.after!r}, not an earlier step")
        if step.dependency is not None and step.dependency not in DEPENDENCIES:
            raise LensError(f"step {step.name}: dependency {step.dependency!r} must be one of "
                            f"{', '.join(DEPENDENCIES)}")
    chain = " -> ".join(
        s.name if s.after is None else f"{s.name} ({s.dependency})" for s in plan.steps
    )
    lines = [
        "#!/bin/bash",
        f"# Submit the experiment: {chain}.",
        "# Prints one line per job: its step name and Slurm job id. If an sbatch fails, the",
        "# jobs already submitted are cancelled. Written by `lens generate`.",
        "set -euo pipefail",
        'here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)',
        f"mkdir -p {_q(plan.run_dir.rstrip('/') + '/logs')}",
        "",
        "submitted=()",
        "cancel_submitted() {",
        '    if ((${#submitted[@]})); then scancel "${submitted[@]}" || true; fi',
        "}",
        "trap cancel_submitted ERR",
        "",
    ]
    for step in plan.steps:
        dep = ""
        if step.after is not None:
            dep = f'--dependency={step.dependency}:"${step.after}" --kill-on-invalid-dep=yes '
        lines += [
            f'{step.name}=$(sbatch --parsable {dep}"$here"/{_q(step.script)})',
            f"{step.name}=${{{step.name}%%;*}}  # --parsable prints JOBID[;CLUSTER]",
            f'submitted+=("${step.name}")',
            f'echo "{step.name} ${step.name}"',
        ]
    return "\n".join(lines) + "\n"
