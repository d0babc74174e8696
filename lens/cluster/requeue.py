"""Requeue from the host: the shell pieces that turn lens's exit code 75 into ``scontrol requeue``.

A task that is told to stop (SIGUSR2 before the time limit, or preemption) checkpoints and
exits 75 ("run me again"). ``scontrol`` is usually missing inside a container image, so the
requeue happens outside it, in a host shell that started the task and waited for it:

- the generated sbatch scripts (lens.cluster.sbatch): the batch shell gets ``B:USR2``,
  forwards it to the srun step, and requeues the array task when the step exits 75;
- `lens submit` (lens.cluster.launch): a per-rank host wrapper, RUN/logs/requeue.sh, in
  front of submitit's python command; it requeues after SIGUSR2 only, never after a
  SIGTERM from scancel.

A requeued job runs again from the top with ``SLURM_RESTART_COUNT`` + 1 (after Slurm's
requeue delay) and resumes from its checkpoint. ``max_requeues`` bounds the loop.
"""

from __future__ import annotations

from lens.errors import LensError

EX_TEMPFAIL = 75  # lens's "checkpointed, run me again" (see docs/ARCHITECTURE.md)


def wait_block(pid_var: str) -> str:
    """Wait for the background process ``$pid_var``; leave its exit code in ``status``.

    A trapped signal ends ``wait`` early (status > 128) while the process still runs, so
    wait again until it is gone; one more ``wait`` covers a signal that arrived just as the
    process ended (bash keeps the status until it is read; 127 means already read).
    """
    return f"""\
while :; do
    wait "${pid_var}" && status=0 || status=$?
    kill -0 "${pid_var}" 2>/dev/null || break
done
if ((status > 128)); then  # a signal that came as the process ended: ask once more
    wait "${pid_var}" 2>/dev/null && status=0 || {{ code=$?; ((code == 127)) || status=$code; }}
fi
"""


def requeue_block(max_requeues: int, indent: str = "") -> str:
    """On ``status`` 75: requeue this job (or array task) and exit 0; else exit ``status``."""
    if max_requeues < 0:
        raise LensError(f"max_requeues = {max_requeues} must be non-negative")
    text = f"""\
if [[ $status -eq {EX_TEMPFAIL} ]]; then
    task="${{SLURM_ARRAY_JOB_ID:-$SLURM_JOB_ID}}${{SLURM_ARRAY_TASK_ID:+_$SLURM_ARRAY_TASK_ID}}"
    restarts=${{SLURM_RESTART_COUNT:-0}}
    if ((restarts >= {max_requeues})); then
        echo "lens: task $task asked to run again after $restarts restarts; giving up" >&2
        exit {EX_TEMPFAIL}
    fi
    echo "lens: task $task checkpointed; requeueing it (restart $((restarts + 1)))" >&2
    scontrol requeue "$task"
    exit 0
fi
exit "$status"
"""
    return "".join(indent + line if line.strip() else line for line in text.splitlines(True))
