"""Exact resume: a task stopped by a real SIGUSR2 mid-run, then run again, ends with exactly
the metrics and predictions of a task never interrupted (deterministic CPU settings)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train_data import make_packed

from lens.train import loop
from lens.train.signals import TaskInterrupted
from lens.train.task import TaskSpec, run_task

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ("epochs=4", "batch_size=16", "n_boot=50", "deterministic=true", "device=cpu",
            "augment.max_shift=2", "augment.noise_sigma=0.05", "checkpoint_every_steps=4")


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    return make_packed(tmp_path_factory.mktemp("d") / "d.h5", n=200, n_test=30)


def train_cmd(data: Path, out: Path, *extra: str) -> list[str]:
    sets = [x for s in SETTINGS + extra for x in ("--set", s)]
    return [sys.executable, "-m", "lens", "train", "--stage", "classify", "--data", str(data),
            "--fold", "0", "--out", str(out), *sets]


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def outputs(run: Path) -> tuple[dict, dict]:
    task = run / "classify" / "fold_0"
    result = json.loads((task / "result.json").read_text())
    pred = dict(np.load(task / "predictions.npz"))
    return result, pred


def assert_same_outcome(a: tuple[dict, dict], b: tuple[dict, dict]) -> None:
    (ra, pa), (rb, pb) = a, b
    assert ra["metrics"] == rb["metrics"]  # every number, bit for bit
    assert ra["steps"] == rb["steps"] and ra["epochs"] == rb["epochs"]
    assert pa.keys() == pb.keys()
    for key in pa:
        np.testing.assert_array_equal(pa[key], pb[key], err_msg=key)


@pytest.mark.slow
def test_sigusr2_mid_run_then_resume_matches_an_uninterrupted_run(data_file, tmp_path):
    clean = subprocess.run(train_cmd(data_file, tmp_path / "clean"), env=env(),
                           capture_output=True, text=True, timeout=300)
    assert clean.returncode == 0, clean.stderr

    run = tmp_path / "stopped"
    task = run / "classify" / "fold_0"
    proc = subprocess.Popen(train_cmd(data_file, run), env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not (task / "metrics.jsonl").exists():  # training has begun: handlers installed
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.05)
    time.sleep(0.3)  # land inside the next epoch
    proc.send_signal(signal.SIGUSR2)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err
    assert "stopped by SIGUSR2" in err and "run the same command again" in err
    assert not (task / "result.json").exists()
    ckpt = torch.load(task / "checkpoint.pt", weights_only=True)
    stopped_at = ckpt["progress"]["global_step"]
    assert 0 < stopped_at < clean_steps(tmp_path / "clean")

    again = subprocess.run(train_cmd(data_file, run), env=env(), capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr
    resumed = outputs(run)
    assert resumed[0]["restarts"] == 1
    assert_same_outcome(resumed, outputs(tmp_path / "clean"))
    lines = (task / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3, 4]  # no epoch twice


def clean_steps(run: Path) -> int:
    return outputs(run)[0]["steps"]


def test_stop_exactly_mid_epoch_resumes_exactly(data_file, tmp_path, monkeypatch):
    """The same in-process, with the stop forced at step 5 of 9 of the first epoch (the
    signal's timing above is up to the scheduler), and the other checkpoint triggers off."""
    torch.set_num_threads(1)
    sets = SETTINGS[:-1] + ("epochs=2", "checkpoint_every_steps=0")
    spec = TaskSpec("classify", data_file, 0, tmp_path / "clean", overrides=sets)
    clean = run_task(spec)

    real = loop._should_stop
    monkeypatch.setattr(loop, "_should_stop", lambda ctx, step: step == 5 or real(ctx, step))
    stopped = TaskSpec("classify", data_file, 0, tmp_path / "stopped", overrides=sets)
    with pytest.raises(TaskInterrupted, match="epoch 1, step 5"):
        run_task(stopped)
    ckpt = torch.load(tmp_path / "stopped/classify/fold_0/checkpoint.pt", weights_only=True)
    assert ckpt["progress"]["step_in_epoch"] == 5 and ckpt["progress"]["epoch"] == 0
    monkeypatch.setattr(loop, "_should_stop", real)
    resumed = run_task(stopped)
    assert resumed["restarts"] == 1 and clean["restarts"] == 0
    assert_same_outcome(outputs(tmp_path / "stopped"), outputs(tmp_path / "clean"))


def test_existing_checkpoint_with_another_config_is_refused(data_file, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    sets = ("epochs=1", "batch_size=32", "n_boot=0")
    monkeypatch.setattr(loop, "_should_stop", lambda ctx, step: step == 2)
    with pytest.raises(TaskInterrupted):
        run_task(TaskSpec("classify", data_file, 0, tmp_path, overrides=sets))
    from lens.errors import LensError

    with pytest.raises(LensError, match=r"checkpoint.pt was made with a different config "
                                        r"\(optim.lr: 0.001 -> 0.01\)"):
        run_task(TaskSpec("classify", data_file, 0, tmp_path, overrides=sets + ("optim.lr=0.01",)))
    other = make_packed(tmp_path / "other.h5", n=200, seed=5)
    with pytest.raises(LensError, match="different data file"):
        run_task(TaskSpec("classify", other, 0, tmp_path, overrides=sets))


@pytest.mark.parametrize("sig", [signal.SIGUSR2, signal.SIGTERM])
def test_signal_handler_only_sets_a_flag_and_is_restored(sig):
    from lens.train.signals import stop_on_signals

    before = signal.getsignal(sig)
    with stop_on_signals() as flag:
        assert not flag
        os.kill(os.getpid(), sig)
        time.sleep(0.01)  # the handler runs between bytecodes of the main thread
        assert flag and flag.signal_name == sig.name
    assert signal.getsignal(sig) is before
