"""The local one-node Slurm cluster does what lens relies on: batch jobs, throttled arrays,
array-to-array dependencies, accounting, and submitit (arrays and two-rank gloo DDP)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from pathlib import Path

import pytest

from lens.cluster import slurmcli

pytestmark = pytest.mark.slurm
TESTS = Path(__file__).resolve().parent


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/bash\nset -euo pipefail\n" + body + "\n")
    return path


def _when(stamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(stamp)


def test_sbatch_wait_and_sacct(slurm_cluster, tmp_path):
    script = _script(tmp_path / "hello.sh", f'echo "hello from $SLURM_JOB_ID" > {tmp_path}/out')
    done = subprocess.run(["sbatch", "--wait", "--parsable", "-o", str(tmp_path / "log"),
                           str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip().split(";")[0]
    assert (tmp_path / "out").read_text() == f"hello from {job_id}\n"
    states = slurmcli.wait_finished([job_id], timeout=30)
    assert states[job_id].state == "COMPLETED" and states[job_id].exit_code == 0


def test_array_throttle_runs_at_most_two_at_once(slurm_cluster, tmp_path):
    script = _script(tmp_path / "task.sh", "sleep 3")
    job = slurmcli.sbatch(["--array=0-2%2", "-o", str(tmp_path / "%A_%a.log")], script=script)
    states = slurmcli.wait_finished([job], expected=3, timeout=120)
    tasks = [states[f"{job}_{i}"] for i in range(3)]
    assert [t.state for t in tasks] == ["COMPLETED"] * 3
    spans = [(_when(t.start), _when(t.end)) for t in tasks]
    for start, _ in spans:  # at no task's start were more than 2 tasks running
        assert sum(s <= start < e for s, e in spans) <= 2
    first_end = min(e for _, e in spans)
    assert max(s for s, _ in spans) >= first_end  # the third waited for a slot


def test_aftercorr_arrays_then_afterany(slurm_cluster, tmp_path):
    out = tmp_path / "marks"
    out.mkdir()
    first = _script(tmp_path / "first.sh", f'sleep $((SLURM_ARRAY_TASK_ID)); '
                    f'touch {out}/first_$SLURM_ARRAY_TASK_ID')
    # Task i of the second array needs task i of the first (and only that one) to be done.
    second = _script(tmp_path / "second.sh", f'test -e {out}/first_$SLURM_ARRAY_TASK_ID; '
                     f'touch {out}/second_$SLURM_ARRAY_TASK_ID')
    last = _script(tmp_path / "last.sh", f'ls {out} > {tmp_path}/seen')
    log = ["-o", str(tmp_path / "%j.log")]
    a = slurmcli.sbatch(["--array=0-2", *log], script=first)
    b = slurmcli.sbatch(["--array=0-2", f"--dependency=aftercorr:{a}",
                         "--kill-on-invalid-dep=yes", *log], script=second)
    c = slurmcli.sbatch([f"--dependency=afterany:{b}", *log], script=last)
    states = slurmcli.wait_finished([a, b, c], expected=7, timeout=180)
    assert {k: v.state for k, v in states.items()} == dict.fromkeys(
        [f"{a}_0", f"{a}_1", f"{a}_2", f"{b}_0", f"{b}_1", f"{b}_2", c], "COMPLETED")
    assert (tmp_path / "seen").read_text().split() == sorted(
        [f"first_{i}" for i in range(3)] + [f"second_{i}" for i in range(3)])
    for i in range(3):  # per index, never before its own predecessor ended
        assert _when(states[f"{b}_{i}"].start) >= _when(states[f"{a}_{i}"].end)
    assert _when(states[c].start) >= max(_when(states[f"{b}_{i}"].end) for i in range(3))


def _executor(cluster, folder: Path, **params):
    import submitit

    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    executor.update_parameters(slurm_partition=cluster.partition, timeout_min=5,
                               cpus_per_task=1, mem_gb=1, **params)
    return executor


def test_submitit_map_array(slurm_cluster, tmp_path):
    import math

    executor = _executor(slurm_cluster, tmp_path / "submitit", slurm_array_parallelism=3)
    jobs = executor.map_array(math.factorial, [3, 4, 5])
    assert [job.result() for job in jobs] == [6, 24, 120]
    assert len({job.job_id.split("_")[0] for job in jobs}) == 1  # one sbatch, one array


def gloo_all_reduce() -> tuple[int, int, float]:
    """Run by each of two srun ranks: rendezvous from submitit, sum the ranks with gloo."""
    import submitit
    import torch
    import torch.distributed as dist

    env = submitit.helpers.TorchDistributedEnvironment().export()
    dist.init_process_group("gloo", timeout=dt.timedelta(seconds=60))
    try:
        value = torch.tensor([float(env.rank + 1)])
        dist.all_reduce(value)
        return env.rank, env.world_size, float(value.item())
    finally:
        dist.destroy_process_group()


def test_submitit_two_ranks_gloo_all_reduce(slurm_cluster, tmp_path, monkeypatch):
    # The job unpickles this test module's function by name: make it importable there.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    executor = _executor(slurm_cluster, tmp_path / "submitit", nodes=1, tasks_per_node=2)
    job = executor.submit(gloo_all_reduce)
    results = sorted(job.results())
    assert results == [(0, 2, 3.0), (1, 2, 3.0)], job.stderr()
