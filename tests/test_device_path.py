"""The training task on every device this machine has: CPU always, CUDA when present.

On a GPU machine these run the CUDA path for real (bf16 autocast, channels_last, the
fold's images held on the GPU, an NCCL process group); on CPU the same tests run with
fp32 and gloo, so nothing here is skipped on a CPU-only machine — it just has one device.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from lens.data.h5file import write_packed
from lens.train.task import TaskSpec, run_task

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _packed(path: Path, n: int = 96, size: int = 32) -> Path:
    """Two classes that differ in a bright centre blob: learnable in a couple of epochs."""
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 2
    images = rng.random((n, 1, size, size), dtype=np.float32) * 0.3
    c = size // 2
    images[labels == 1, :, c - 4 : c + 4, c - 4 : c + 4] += 0.7
    fold = (np.arange(n) // 2) % 2
    write_packed(path, images, labels, ["lens", "nonlens"], fold=fold, n_folds=2,
                 split=np.zeros(n, np.int8))
    return path


def _sets(device: str) -> tuple[str, ...]:
    precision = "bf16" if device == "cuda" else "fp32"
    return ("epochs=2", "batch_size=16", f"device={device}", f"precision={precision}",
            "n_boot=0", "model.name=resnet18", "optim.warmup_epochs=0")


@pytest.mark.parametrize("device", DEVICES)
def test_classify_task_on_device(tmp_path: Path, device: str):
    torch.set_num_threads(2)
    data = _packed(tmp_path / "d.h5")
    result = run_task(TaskSpec("classify", data, fold=0, out=tmp_path / "run",
                               overrides=_sets(device)))
    assert result["status"] == "completed"
    assert result["device"].startswith(device)
    val = result["metrics"]["val"]
    assert val["n"] == 48
    assert val["macro_auc"] > 0.9  # the blob is easy: the device path really trains
    preds = np.load(tmp_path / "run" / "classify" / "fold_0" / "predictions.npz")
    assert np.allclose(preds["val_prob"].sum(1), 1.0, atol=1e-4)  # float32 softmax output
    assert preds["val_prob"].dtype == np.float32


@pytest.mark.parametrize("device", DEVICES)
def test_task_inside_a_one_rank_process_group(tmp_path: Path, device: str, monkeypatch):
    """NCCL on CUDA, gloo on CPU: a process group of one rank runs the task unchanged."""
    torch.set_num_threads(2)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(key, value)
    backend = "nccl" if device == "cuda" else "gloo"
    dist.init_process_group(backend, init_method="env://", rank=0, world_size=1)
    try:
        t = torch.ones(4, device=device)
        dist.all_reduce(t)
        assert dist.get_backend() == backend and t.sum().item() == 4
        result = run_task(TaskSpec("classify", _packed(tmp_path / "d.h5"), fold=1,
                                   out=tmp_path / "run", overrides=_sets(device)))
    finally:
        dist.destroy_process_group()
    assert result["status"] == "completed" and result["world_size"] == 1


@pytest.mark.parametrize("device", DEVICES)
def test_resume_on_device_restores_the_checkpoint(tmp_path: Path, device: str):
    """A task re-run after its checkpoint was written continues from it (RNG states
    of the device included) instead of starting over."""
    torch.set_num_threads(2)
    data = _packed(tmp_path / "d.h5")
    spec = TaskSpec("classify", data, fold=0, out=tmp_path / "run", overrides=_sets(device))
    run_task(spec)
    task = tmp_path / "run" / "classify" / "fold_0"
    assert (task / "checkpoint.pt").exists()
    ckpt = torch.load(task / "checkpoint.pt", weights_only=True, map_location="cpu")
    assert isinstance(ckpt, dict) and "model" in ckpt
    (task / "result.json").unlink()  # as if killed after the last checkpoint
    again = run_task(spec)
    assert again["status"] == "completed"
    assert again["restarts"] >= 1
    lines = [json.loads(x) for x in (task / "metrics.jsonl").read_text().splitlines()]
    assert max(line["epoch"] for line in lines) <= 2


if os.environ.get("LENS_REQUIRE_CUDA"):  # set by bench/gpu.sh: a GPU run must use the GPU

    def test_cuda_is_present():
        assert torch.cuda.is_available(), "LENS_REQUIRE_CUDA is set but CUDA is not available"
