"""Two gloo ranks on the CPU against one process with the same global batch (device=cpu
even where a GPU is present: two ranks cannot share one GPU under NCCL).

Tolerance: with vit_tiny (LayerNorm, no dropout, no BatchNorm) and augmentation off, a
2-rank run computes the same global-batch gradient as one process, up to the order of
float additions in the gradient all-reduce; its predictions must match to 1e-4.
Augmentation is off because each rank draws its own images' augmentations (the seeds
differ from a one-process run by design). BatchNorm models (ResNet-18) are not compared
number for number: SyncBatchNorm has no CPU kernel in PyTorch, so CPU ranks normalise with
per-rank statistics; on GPUs lens converts to SyncBatchNorm. For ResNet-18 the test checks
what the gather must guarantee: every held-out image predicted exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_train_data import make_packed

from lens.train.distributed import DistInfo, env_info

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(data: Path, out: Path, world: int, *sets: str) -> None:
    """``world`` ranks of `python -m lens train`, as srun + TorchDistributedEnvironment."""
    for p in start(data, out, world, *sets):
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err


def start(data: Path, out: Path, world: int, *sets: str) -> list[subprocess.Popen]:
    port = free_port()
    cmd = [sys.executable, "-m", "lens", "train", "--stage", "classify", "--data", str(data),
           "--fold", "0", "--out", str(out)]
    for s in sets:
        cmd += ["--set", s]
    procs = []
    for rank in range(world):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        if world > 1:
            env.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                       MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    return procs


def outputs(out: Path) -> tuple[dict, dict]:
    task = out / "classify" / "fold_0"
    return (json.loads((task / "result.json").read_text()),
            dict(np.load(task / "predictions.npz")))


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    return make_packed(tmp_path_factory.mktemp("d") / "d.h5", n=150, n_test=30)


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process(data_file, tmp_path):
    sets = ("model.name=vit_tiny", "epochs=2", "batch_size=16", "n_boot=0", "device=cpu",
            "deterministic=true", "augment.dihedral=false")
    launch(data_file, tmp_path / "one", 1, *sets)
    launch(data_file, tmp_path / "two", 2, *sets)
    (r1, p1), (r2, p2) = outputs(tmp_path / "one"), outputs(tmp_path / "two")
    assert (r1["world_size"], r2["world_size"]) == (1, 2)
    assert r1["steps"] == r2["steps"] and r1["n_val"] == r2["n_val"]
    for key in ("val_index", "val_label", "test_index", "test_label"):
        np.testing.assert_array_equal(p1[key], p2[key])
    np.testing.assert_allclose(p2["val_prob"], p1["val_prob"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(p2["test_prob"], p1["test_prob"], atol=1e-4, rtol=0)
    assert r2["metrics"]["val"]["macro_auc"] == pytest.approx(r1["metrics"]["val"]["macro_auc"],
                                                             abs=1e-3)


@pytest.mark.slow
def test_two_ranks_with_batchnorm_predict_every_held_out_image_once(data_file, tmp_path):
    launch(data_file, tmp_path, 2, "epochs=1", "batch_size=16", "n_boot=0", "device=cpu")
    result, pred = outputs(tmp_path)
    assert result["world_size"] == 2 and result["metrics"]["val"]["n"] == result["n_val"]
    assert np.unique(pred["val_index"]).size == pred["val_index"].size == result["n_val"]
    assert pred["val_prob"].shape == (result["n_val"], 2)
    assert pred["test_prob"].shape == (result["n_test"], 2)


@pytest.mark.slow
def test_two_ranks_stop_together_on_sigusr2_and_resume_exactly(data_file, tmp_path):
    """Slurm signals every rank; the ranks agree on the step (an all-reduce of the flag),
    rank 0 checkpoints, all exit 75, and the resumed pair ends as an uninterrupted pair."""
    sets = ("model.name=vit_tiny", "epochs=3", "batch_size=16", "n_boot=0", "device=cpu",
            "deterministic=true", "augment.dihedral=false")
    launch(data_file, tmp_path / "clean", 2, *sets)
    procs = start(data_file, tmp_path / "stopped", 2, *sets)
    metrics = tmp_path / "stopped" / "classify" / "fold_0" / "metrics.jsonl"
    deadline = time.time() + 300
    while not metrics.exists():
        assert all(p.poll() is None for p in procs) and time.time() < deadline
        time.sleep(0.05)
    for p in procs:
        p.send_signal(signal.SIGUSR2)
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 75, err
    launch(data_file, tmp_path / "stopped", 2, *sets)
    (r1, p1), (r2, p2) = outputs(tmp_path / "clean"), outputs(tmp_path / "stopped")
    assert r2["restarts"] == 1 and r1["restarts"] == 0
    assert r1["metrics"] == r2["metrics"]
    for key in p1:
        np.testing.assert_array_equal(p1[key], p2[key], err_msg=key)


def test_env_info_from_torch_or_srun_variables():
    assert env_info({}) == DistInfo(0, 1, 0)
    assert env_info({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == DistInfo(1, 4, 1)
    srun = {"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1"}
    assert env_info(srun) == DistInfo(3, 4, 1)
    assert env_info({**srun, "RANK": "0", "WORLD_SIZE": "2"}) == DistInfo(0, 2, 0)  # RANK wins
    from lens.errors import LensError

    with pytest.raises(LensError, match="RANK=4 with WORLD_SIZE=4"):
        env_info({"RANK": "4", "WORLD_SIZE": "4"})
