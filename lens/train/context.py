"""What every stage receives: the resolved config, where to write, the device, the ranks."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lens.data.h5file import PackedInfo
from lens.errors import LensError
from lens.train.distributed import DistInfo
from lens.train.signals import StopFlag


@dataclass
class TaskContext:
    stage: str
    fold: int
    cfg: Any  # the stage's config dataclass
    cfg_dict: dict[str, Any]
    out_dir: Path
    info: PackedInfo
    device: torch.device
    dist: DistInfo
    amp_dtype: torch.dtype | None
    stop: StopFlag
    resume: dict[str, Any] | None = None  # the checkpoint to continue from
    pretrained: Path | None = None
    data_identity: dict[str, Any] = field(default_factory=dict)

    def path(self, name: str) -> Path:
        return self.out_dir / name

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.cfg.channels_last else torch.contiguous_format

    @property
    def image_size(self) -> int:
        if self.info.height != self.info.width:
            raise LensError(
                f"{self.info.path}: images are {self.info.height}x{self.info.width}; "
                f"the models need square images (crop or resize them when packing)"
            )
        return self.info.height


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise LensError("device = 'cuda' but no CUDA GPU is visible")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype, or None for fp32. auto = bf16 on GPUs that have it, fp16 on older
    GPUs (with a grad scaler), fp32 on the CPU (CPU bf16 is slower than fp32 on most CPUs)."""
    if name == "fp32":
        return None
    if name == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if name == "fp16" and device.type != "cuda":
        raise LensError("precision = 'fp16' needs a CUDA device; use 'bf16' or 'fp32' on CPU")
    return torch.bfloat16 if name == "bf16" else torch.float16


@contextlib.contextmanager
def determinism(deterministic: bool) -> Iterator[None]:
    """Deterministic kernels (bitwise-repeatable runs) or cuDNN autotuning and TF32 (speed),
    for the duration of a task; the previous global settings are restored afterwards, so a
    caller running tasks in-process (tests, notebooks) keeps its own.

    Denormal floats are flushed to zero on the CPU either way: weights and gradients near
    convergence otherwise fall into the denormal range, where x86 arithmetic is many
    times slower.
    """
    before = (torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32,
              torch.backends.cudnn.allow_tf32)
    torch.set_flush_denormal(True)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32,
         torch.backends.cudnn.allow_tf32) = before[2:]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
