"""torch.distributed from the environment, and helpers that fall back to one process.

Ranks come from RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT (as exported by
submitit's ``TorchDistributedEnvironment().export()`` or torchrun), or, when RANK is absent,
from srun's SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID. Without either, or with a world
size of 1, everything runs in one process and the helpers return single-process values.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from lens.errors import LensError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_info(environ: dict[str, str] | None = None) -> DistInfo:
    """Rank, world size and local rank from the environment (pure: no side effects)."""
    env = os.environ if environ is None else environ
    if "RANK" in env:
        keys = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
    elif "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        keys = ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID")
    else:
        return DistInfo()
    try:
        rank, world = int(env[keys[0]]), int(env.get(keys[1], "1"))
        local = int(env.get(keys[2], str(rank)))
    except ValueError:
        msg = f"bad distributed environment: {', '.join(keys)} must be integers"
        raise LensError(msg) from None
    if not 0 <= rank < world:
        raise LensError(f"bad distributed environment: {keys[0]}={rank} with {keys[1]}={world}")
    return DistInfo(rank, world, local)


def init(device_type: str) -> DistInfo:
    """Join the process group when the environment asks for more than one rank.

    NCCL on CUDA, gloo on CPU. With srun variables only, RANK etc. are exported from them
    so that torch's env:// rendezvous finds them (MASTER_ADDR/PORT must still be set).
    """
    info = env_info()
    if info.world_size == 1 or (dist.is_available() and dist.is_initialized()):
        return current() if info.world_size > 1 else info
    for key in ("MASTER_ADDR", "MASTER_PORT"):
        if key not in os.environ:
            raise LensError(f"distributed run ({info.world_size} ranks) needs {key} to be set")
    os.environ.setdefault("RANK", str(info.rank))
    os.environ.setdefault("WORLD_SIZE", str(info.world_size))
    os.environ.setdefault("LOCAL_RANK", str(info.local_rank))
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
    dist.init_process_group(backend=backend, init_method="env://")
    return info


def current() -> DistInfo:
    if not is_distributed():
        return DistInfo()
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def shutdown() -> None:
    if is_distributed():
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main_process() -> bool:
    return not is_distributed() or dist.get_rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_max(flag: bool, device: torch.device) -> bool:
    """True on every rank if it is True on any rank (e.g. a stop request)."""
    if not is_distributed():
        return flag
    t = torch.tensor([1 if flag else 0], device=device, dtype=torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    if not is_distributed():
        return value
    value = value.clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / dist.get_world_size()


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` in one process."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
