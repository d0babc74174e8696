"""Fault: a stop request (SIGUSR2, what Slurm sends before a time limit) that reaches a
`lens train` process while it is not in its training loop: still starting (importing torch,
reading its checkpoint), or already done and writing or returning its result.

Without care, SIGUSR2's default action ends the process (exit 140): the batch shell sees
neither 0 nor 75, the array task FAILS instead of being requeued, and a task whose result
is already written is reported as failed. The request must instead be honoured at the first
training step (checkpoint, exit 75), or ignored when there is nothing left to train.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_train_data import make_packed

ROOT = Path(__file__).resolve().parents[1]
SETS = ("epochs=3", "batch_size=16", "n_boot=0", "device=cpu", "num_workers=0",
        "deterministic=true", "model.name=cnn_attention")


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    return make_packed(tmp_path_factory.mktemp("d") / "d.h5", n=96, n_test=16, n_folds=2)


def train(data: Path, out: Path, usr2_after: float | None = None
          ) -> subprocess.CompletedProcess:
    """`lens train` as a Slurm task runs it; SIGUSR2 ``usr2_after`` seconds after exec."""
    cmd = [sys.executable, "-m", "lens", "train", "--stage", "classify", "--data", str(data),
           "--fold", "0", "--out", str(out), *[x for s in SETS for x in ("--set", s)]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    if usr2_after is not None:
        time.sleep(usr2_after)
        proc.send_signal(signal.SIGUSR2)
    out_text, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(cmd, proc.returncode, out_text, err)


def result(out: Path) -> dict:
    return json.loads((out / "classify" / "fold_0" / "result.json").read_text())


@pytest.mark.slow
def test_usr2_while_starting_is_honoured_at_the_first_step(data_file, tmp_path):
    clean = train(data_file, tmp_path / "clean")
    assert clean.returncode == 0, clean.stderr

    run = tmp_path / "signalled"
    stopped = train(data_file, run, usr2_after=1.0)  # lens is still importing torch
    assert stopped.returncode == 75, (stopped.returncode, stopped.stderr)
    assert "stopped by SIGUSR2 at epoch 1, step 1" in stopped.stderr
    assert (run / "classify" / "fold_0" / "checkpoint.pt").is_file()

    again = train(data_file, run)
    assert again.returncode == 0, again.stderr
    assert result(run)["restarts"] == 1
    assert result(run)["metrics"] == result(tmp_path / "clean")["metrics"]


@pytest.mark.slow
def test_usr2_when_nothing_is_left_to_train_is_ignored(data_file, tmp_path):
    """A requeued task whose result is complete returns it; a late SIGUSR2 must not turn
    that into a failure."""
    run = tmp_path / "run"
    first = train(data_file, run)
    assert first.returncode == 0, first.stderr
    before = (run / "classify" / "fold_0" / "result.json").stat().st_mtime_ns
    late = train(data_file, run, usr2_after=1.0)
    assert late.returncode == 0, (late.returncode, late.stderr)
    assert (run / "classify" / "fold_0" / "result.json").stat().st_mtime_ns == before


# ---- a SIGUSR2 while the process ends -------------------------------------------------------

# Slurm's notice comes 0.5 s after the work is over, while the interpreter shuts down (here
# it takes 1.5 s, as it may after torch). Python then resets its own handlers to the default.
LATE_NOTICE = """
import atexit, os, subprocess, sys, time

class SlowExit:
    def __del__(self, sleep=time.sleep):  # no global lookups: module dicts are being wiped
        sleep(1.5)

slow_exit = SlowExit()
atexit.register(lambda: subprocess.Popen(["sh", "-c", f"sleep 0.5; kill -USR2 {os.getpid()}"]))
FAKE = {"stage": "classify", "fold": 0, "epochs": 1, "wall_time_s": 0.1, "metrics": {}}
"""

# A Python handler does not protect the end of the process: the harness can fail.
CONTROL = "import signal\nsignal.signal(signal.SIGUSR2, lambda *a: None)\n"

# What a generated sbatch script runs: `lens train` (the work itself is faked).
TRAIN_CLI = """
import runpy
import lens.train.task as task
task.run_task = lambda spec: FAKE
sys.argv = ["lens", "train", "--stage", "classify", "--data", sys.argv[1], "--fold", "0",
            "--out", sys.argv[2]]
runpy.run_module("lens", run_name="__main__")  # python -m lens train ...
"""

# What `lens submit` runs under submitit: a training task, a prediction shard.
TASK = """
import lens.train.task as task
from lens.cluster.launch import TaskRunner
task.run_task = lambda spec: FAKE
TaskRunner("classify", sys.argv[1], 0, sys.argv[2])()
"""

SHARD = """
import lens.predict.output as output
import lens.predict.shards as shards
from lens.cluster.predict_tasks import ShardRunner
shards.predict_shard = lambda *args, **kwargs: sys.argv[2] + "/part_0.h5"
output.read_attrs = lambda part: {"start": 0, "stop": 8, "data_n": 8}
ShardRunner(sys.argv[2], sys.argv[1], sys.argv[2], 0, 1, "classify")()
"""

SUBMITIT_LOCAL = {"SUBMITIT_EXECUTOR": "local", "SUBMITIT_LOCAL_JOB_ID": "1",
                  "SUBMITIT_LOCAL_NTASKS": "1", "SUBMITIT_LOCAL_GLOBALID": "0",
                  "SUBMITIT_LOCAL_LOCALID": "0", "SUBMITIT_LOCAL_NODEID": "0",
                  "SUBMITIT_LOCAL_JOB_NUM_NODES": "1"}


def ends_with_a_late_notice(script: str, data: Path, out: Path, env: dict | None = None
                            ) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-c", LATE_NOTICE + script, str(data), str(out)],
                          env=env, capture_output=True, text=True, timeout=120)


def test_the_harness_delivers_the_notice_while_python_shuts_down(tmp_path):
    proc = ends_with_a_late_notice(CONTROL, tmp_path / "d.h5", tmp_path)
    assert proc.returncode == -signal.SIGUSR2, (proc.returncode, proc.stderr)


@pytest.mark.parametrize(("script", "env", "said"), [
    (TRAIN_CLI, None, "classify fold 0: done (1 epoch, 0.1 s)"),
    (TASK, SUBMITIT_LOCAL, "lens: classify fold 0: done (1 epoch, 0.1 s)"),
    (SHARD, SUBMITIT_LOCAL, "lens: shard 0/1: rows 0..7 of 8"),
], ids=["lens-train", "submitit-task", "submitit-shard"])
def test_a_finished_task_is_not_killed_by_a_late_notice(data_file, tmp_path, script, env, said):
    """Exit 140 here would make Slurm report a task whose result is written as FAILED."""
    proc = ends_with_a_late_notice(script, data_file, tmp_path, env)
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    assert said in proc.stdout
