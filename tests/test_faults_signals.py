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
