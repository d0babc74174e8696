"""DistributedDataParallel wrapping (identity in one process)."""

from __future__ import annotations

from torch import nn
from torch.nn.parallel import DistributedDataParallel

from lens.train import distributed as dist
from lens.train.context import TaskContext


def wrap(model: nn.Module, ctx: TaskContext) -> nn.Module:
    """The module to call in training steps: ``model`` itself, or a DDP wrapper around it.

    BatchNorm becomes SyncBatchNorm on GPUs (cfg.sync_batchnorm), so batch statistics are
    those of the global batch, as in a one-process run. PyTorch's SyncBatchNorm has no CPU
    kernel: CPU ranks keep per-rank statistics. Parameters are shared with ``model``, so
    ``model`` stays what checkpoints save and evaluation calls.
    """
    if not dist.is_distributed():
        return model
    if ctx.device.type == "cuda" and ctx.cfg.sync_batchnorm:
        converted = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        assert converted is model, "a bare BatchNorm root module cannot be converted in place"
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)
