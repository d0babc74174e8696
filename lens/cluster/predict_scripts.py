"""The sbatch scripts of a sharded prediction (`lens generate --stage predict`), rendered as
pure functions of frozen dataclasses (golden tests pin the output).

    predict.sbatch  one array task per shard: `lens predict RUN DATA --out PRED --shard I/N`
    merge.sbatch    `lens predict --merge PRED --shards N --force`, after every shard
    submit.sh       sbatch both; the merge with --dependency=afterany:<array>

Everything a sharded prediction keeps besides its result lives in ``PRED.parts/``: the
parts, the logs (``logs/``), these scripts (``slurm/``) and `lens submit`'s record. A shard
is idempotent (a complete part is kept, an incomplete one was never renamed into place),
so a requeued task, or the whole array submitted again, only redoes the missing parts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from lens.cluster import sbatch
from lens.cluster.jobs import SUBMIT_SCRIPT, Scripts, python_prefix, report_resources
from lens.cluster.profiles import SlurmProfile
from lens.cluster.requeue import EX_TEMPFAIL
from lens.cluster.sbatch import (
    Resources,
    _qwords,
    _resource_lines,
    _setup_block,
    array_spec,
    log_pattern,
    sbatch_quote,
    signal_block,
)
from lens.errors import LensError
from lens.predict.settings import DEFAULT_BATCH, DEFAULT_N_BOOT

PARTS_SUFFIX = ".parts"  # lens.predict.output.Outputs.parts: PRED.parts/
SHARD_SCRIPT = "predict.sbatch"
MERGE_SCRIPT = "merge.sbatch"


def parts_dir(pred: str) -> str:
    """``PRED.parts``: where the parts, logs, scripts and record of PRED live."""
    return pred.rstrip("/") + PARTS_SUFFIX


@dataclass(frozen=True)
class ShardArrayJob:
    """``lens predict RUN DATA --out PRED --shard I/N`` for the shards, as one Slurm array.

    ``pred`` is the prediction's stem (PRED without .h5); ``shards`` the array task ids
    (= shard ids), all N by default.
    """

    run: str
    data: str
    pred: str
    n_shards: int
    python: tuple[str, ...]
    shards: tuple[int, ...] = ()
    stage: str | None = None
    batch_size: int = DEFAULT_BATCH
    resources: Resources = Resources()
    setup: tuple[str, ...] = ()
    array_parallelism: int | None = None
    job_name: str = "lens-predict"
    signal_delay_s: int = 120
    max_requeues: int = 20

    @property
    def task_ids(self) -> tuple[int, ...]:
        return self.shards or tuple(range(self.n_shards))


@dataclass(frozen=True)
class MergeJob:
    """``lens predict --merge PRED --shards N``: the parts, in order, into PRED.h5/.csv."""

    pred: str
    n_shards: int
    python: tuple[str, ...]
    n_boot: int = DEFAULT_N_BOOT
    resources: Resources = Resources(time="00:30:00")
    setup: tuple[str, ...] = ()
    job_name: str = "lens-predict-merge"


def shard_command(job: ShardArrayJob) -> str:
    """The per-task command; the shard is the array index, expanded by the batch shell."""
    words = [*job.python, "-m", "lens", "predict", job.run, job.data, "--out", job.pred]
    if job.stage:
        words += ["--stage", job.stage]
    words += ["--batch-size", str(job.batch_size)]
    return f'{_qwords(words)} --shard "$SLURM_ARRAY_TASK_ID"/{job.n_shards}'


def render_shard_script(job: ShardArrayJob) -> str:
    """The sbatch script of the shards: one array task per shard."""
    r = job.resources
    logs = parts_dir(job.pred)
    if job.n_shards < 1:
        raise LensError(f"--shards {job.n_shards}: must be at least 1")
    bad = [i for i in job.task_ids if not 0 <= i < job.n_shards]
    if bad:
        raise LensError(f"shard(s) {bad}: shards are 0..{job.n_shards - 1}")
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={sbatch_quote(job.job_name)}",
        f"#SBATCH --array={array_spec(job.task_ids, job.array_parallelism)}",
        f"#SBATCH --output={sbatch_quote(log_pattern(logs, 'predict_%A_%a'))}",
        "#SBATCH --open-mode=append",
        *_resource_lines(r),
        "#SBATCH --requeue",
        f"#SBATCH --signal=B:USR2@{job.signal_delay_s}",
        "#",
        f"# lens: prediction in {job.n_shards} shard(s), one array task per shard (shard =",
        "# SLURM_ARRAY_TASK_ID): contiguous rows of the data file into PRED.parts/part_<I>.h5,",
        "# written atomically. A complete part is kept, so a requeued task, or this array",
        "# submitted again, redoes only the missing parts. Written by `lens generate`.",
        "set -euo pipefail",
        *_setup_block(job.setup),
        "",
        'echo "lens: $SLURM_JOB_NAME shard ${SLURM_ARRAY_TASK_ID} on $(hostname)'
        ' (restart ${SLURM_RESTART_COUNT:-0})"',
        "",
    ]
    explain = _STOP.format(delay=job.signal_delay_s, code=EX_TEMPFAIL)
    return "\n".join(lines) + "\n" + signal_block(
        f"srun {shard_command(job)}", job.signal_delay_s, job.max_requeues, explain=explain,
        verb="stop")


_STOP = """\
# Preemption and time limits, handled on the host. Slurm signals this batch shell (B:USR2)
# {delay} s before the limit; the shell forwards SIGUSR2 to the srun step, the shard drops
# its unfinished part and exits {code} ("run me again"), and the shell then requeues this
# array task with scontrol, here on the host. The requeued task predicts the shard again.
"""


def render_merge_script(job: MergeJob) -> str:
    """One small job that merges the parts (after the shards, whatever their outcome: it
    fails naming the missing parts)."""
    if job.n_shards < 1 or job.n_boot < 0:
        raise LensError("n_shards must be at least 1 and n_boot non-negative")
    words = [*job.python, "-m", "lens", "predict", "--merge", job.pred,
             "--shards", str(job.n_shards), "--n-boot", str(job.n_boot), "--force"]
    return sbatch.render_single_step_script(
        job.job_name, log_pattern(parts_dir(job.pred), "merge_%j"), job.resources,
        ["# lens: merge the parts, in order, into PRED.h5 and PRED.csv (with metrics and ROC",
         "# when the images are labeled), replacing an earlier merge. It runs after every",
         "# shard, whatever their outcome, and fails naming the missing parts. Written by",
         "# `lens generate`."],
        job.setup, words)


def shard_resources(p: SlurmProfile) -> Resources:
    """One shard: one process, and one GPU when the profile gives the tasks GPUs (a shard
    uses one; more GPUs are better spent on more shards)."""
    return Resources(
        partition=p.partition, account=p.account, qos=p.qos, time=p.time, ntasks_per_node=1,
        cpus_per_task=p.cpus_per_task, gpus=min(1, p.gpus_per_task), gpu_type=p.gpu_type,
        mem=p.mem, constraint=p.constraint, extra=p.extra_sbatch,
    )


def shard_mounts(*, data: str, run: str, pred: str) -> list[str]:
    """The folders a shard must see inside the container: the data's, the run's models and
    PRED's (where it writes its part)."""
    return [os.path.dirname(data), run, os.path.dirname(pred)]


def predict_scripts(*, run: str, data: str, pred: str, n_shards: int, stage: str | None,
                    batch_size: int, n_boot: int, profile: SlurmProfile) -> Scripts:
    """predict.sbatch, merge.sbatch and the submit.sh that chains them (paths absolute:
    the jobs may start in another directory)."""
    mounts = shard_mounts(data=data, run=run, pred=pred)
    shard_py = python_prefix(profile, mounts, gpus=profile.gpus_per_task > 0)
    merge_py = python_prefix(profile, [os.path.dirname(pred)], gpus=False)
    shards = render_shard_script(ShardArrayJob(
        run=run, data=data, pred=pred, n_shards=n_shards, python=shard_py, stage=stage,
        batch_size=batch_size, resources=shard_resources(profile), setup=profile.setup,
        array_parallelism=profile.array_parallelism, signal_delay_s=profile.signal_delay_s,
        max_requeues=profile.max_requeues))
    merge = render_merge_script(MergeJob(
        pred=pred, n_shards=n_shards, python=merge_py, n_boot=n_boot,
        resources=report_resources(profile), setup=profile.setup))
    submit = sbatch.render_submit_script(sbatch.SubmitScript(parts_dir(pred), (
        sbatch.SubmitStep("predict", SHARD_SCRIPT),
        sbatch.SubmitStep("merge", MERGE_SCRIPT, "predict", "afterany"),
    )))
    return Scripts(((SHARD_SCRIPT, shards), (MERGE_SCRIPT, merge), (SUBMIT_SCRIPT, submit)))

