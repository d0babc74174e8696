"""From an experiment and a profile to the job descriptions that sbatch.py renders.

:func:`experiment_scripts` is pure given its inputs (the only file-system checks are that
bind sources exist): it returns the file names and texts that ``lens generate`` writes.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from lens.cluster import sbatch
from lens.cluster.container import container_argv
from lens.cluster.options import StageInput
from lens.cluster.plan import REPORT, plan_steps
from lens.cluster.profiles import SlurmProfile
from lens.errors import LensError

SUBMIT_SCRIPT = "submit.sh"


@contextmanager
def new_folders(*paths: Path) -> Iterator[None]:
    """Create ``paths`` (each inside the one before) for the block; if the block raises, remove
    those this made, so a refused `lens generate` leaves nothing behind."""
    made = [p for p in paths if not p.exists()]
    paths[-1].mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        for path in reversed(made):
            path.rmdir()
        raise


def write_scripts(out_dir: Path, files: Iterable[tuple[str, str]]) -> None:
    """Write rendered scripts into ``out_dir``, each atomically; submit.sh executable."""
    from lens import atomic

    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in files:
        atomic.write_text(out_dir / name, text)
        os.chmod(out_dir / name, 0o755 if name == SUBMIT_SCRIPT else 0o644)


def array_resources(p: SlurmProfile) -> sbatch.Resources:
    """One fold: ``gpus_per_task`` GPUs, one rank per GPU (or ``ntasks_per_node`` ranks)."""
    return sbatch.Resources(
        partition=p.partition, account=p.account, qos=p.qos, time=p.time,
        ntasks_per_node=p.ntasks_per_node or max(1, p.gpus_per_task),
        cpus_per_task=p.cpus_per_task, gpus=p.gpus_per_task, gpu_type=p.gpu_type,
        mem=p.mem, constraint=p.constraint, extra=p.extra_sbatch,
    )


def report_resources(p: SlurmProfile) -> sbatch.Resources:
    """The report: one CPU, no GPU, on ``report_partition`` when the profile names one."""
    return sbatch.Resources(
        partition=p.report_partition or p.partition, account=p.account, qos=p.qos,
        time=p.report_time, mem=p.report_mem, extra=p.extra_sbatch,
    )


def python_prefix(p: SlurmProfile, mounts: list[str], *, gpus: bool) -> tuple[str, ...]:
    """The argv that runs lens's Python: the image's ``python`` or an interpreter here.

    ``mounts`` are the folders the task must see inside the container (data, run, configs);
    the profile's own binds are added after them.
    """
    if p.container:
        image = os.path.abspath(p.container)
        if not os.path.isfile(image):
            raise LensError(f"container image {image} does not exist")
        return tuple(container_argv(image, [*mounts, *p.binds], gpus=gpus,
                                    python=p.python or "python"))
    if p.python:
        words = shlex.split(p.python)
        if not words:
            raise LensError("--python is empty")
        return tuple(words)
    return (sys.executable,)


@dataclass(frozen=True)
class Scripts:
    """The generated files, in submission order, then submit.sh."""

    files: tuple[tuple[str, str], ...]

    def names(self) -> list[str]:
        return [name for name, _ in self.files]


def experiment_scripts(
    experiment: str,
    *,
    data: str,
    run_dir: str,
    folds: tuple[int, ...],
    inputs: Mapping[str, StageInput],
    profile: SlurmProfile,
) -> Scripts:
    """Every sbatch script of the experiment and the submit.sh that chains them.

    Paths should be absolute: the jobs may start in another directory.
    """
    configs = [i.config for i in inputs.values() if i.config]
    mounts = [os.path.dirname(data), run_dir, *(os.path.dirname(c) for c in configs)]
    train_python = python_prefix(profile, mounts, gpus=profile.gpus_per_task > 0)
    files: list[tuple[str, str]] = []
    steps: list[sbatch.SubmitStep] = []
    for step in plan_steps(experiment):
        script = f"{step.name}.sbatch"
        if step.is_array:
            stage_input = inputs.get(step.name, StageInput())
            job = sbatch.ArrayJob(
                stage=step.name, data=data, run_dir=run_dir, folds=folds,
                python=train_python, resources=array_resources(profile),
                config=stage_input.config, sets=stage_input.sets, setup=profile.setup,
                array_parallelism=profile.array_parallelism,
                signal_delay_s=profile.signal_delay_s, max_requeues=profile.max_requeues,
            )
            text = sbatch.render_array_script(job)
        else:
            assert step.name == REPORT
            job_py = python_prefix(profile, [run_dir], gpus=False)
            text = sbatch.render_aggregate_script(sbatch.AggregateJob(
                run_dir=run_dir, python=job_py, resources=report_resources(profile),
                setup=profile.setup,
            ))
        files.append((script, text))
        steps.append(sbatch.SubmitStep(step.name, script, step.after, step.dependency))
    submit = sbatch.render_submit_script(sbatch.SubmitScript(run_dir, tuple(steps)))
    return Scripts((*files, (SUBMIT_SCRIPT, submit)))
