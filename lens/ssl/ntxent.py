"""NT-Xent, the normalised-temperature cross-entropy of SimCLR (Chen et al. 2020,
"A Simple Framework for Contrastive Learning of Visual Representations").

Shared by every contrastive method. Under torch.distributed the negatives come from all
ranks (an autograd-aware all_gather), so the loss is the one of the global batch; without
an initialised process group it is the plain single-process loss.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from lens.errors import LensError


def _world() -> tuple[int, int]:
    """(rank, world_size), or (0, 1) when torch.distributed is not in use."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums the gathered gradient over ranks and keeps the local
    rows: each rank's rows then receive the gradient of every rank's loss. Written with
    the stable dist.all_gather/all_reduce, which every supported torch version has."""

    @staticmethod
    def forward(ctx, z: Tensor) -> Tensor:
        parts = [torch.empty_like(z) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, z.contiguous())
        ctx.rows = z.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        start = dist.get_rank() * ctx.rows
        return grad[start : start + ctx.rows]


def _gather(z: Tensor, world_size: int) -> Tensor:
    """Concatenate z from every rank along dim 0, keeping gradients to the local part."""
    if world_size == 1:
        return z
    return _GatherWithGrad.apply(z)


def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.5) -> Tensor:
    """NT-Xent loss of two views.

    Args:
        z1, z2: (N, D) embeddings; row i of z1 and row i of z2 are two views of image i
            (the positive pair). Every other row of both views, on every rank, is a
            negative: 2M - 2 negatives per anchor for a global batch of M images.
            Under DDP every rank must pass the same N.
        temperature: softmax temperature tau > 0.

    Returns:
        Scalar: mean over the 2N local anchors of
        -log( exp(sim(a, p) / tau) / sum_{k != a} exp(sim(a, k) / tau) ), sim = cosine.
        Averaged over ranks (as DDP averages gradients) it equals the global-batch loss.
    """
    if temperature <= 0:
        raise LensError(f"NT-Xent temperature must be > 0, got {temperature}")
    if z1.dim() != 2 or z1.shape != z2.shape:
        raise LensError(f"NT-Xent needs two (N, D) tensors of one shape, got "
                        f"{tuple(z1.shape)} and {tuple(z2.shape)}")
    rank, world_size = _world()
    # float32 similarities: bf16 logits divided by a small temperature lose too much
    with torch.autocast(device_type=z1.device.type, enabled=False):
        z1 = F.normalize(z1.float(), dim=1)
        z2 = F.normalize(z2.float(), dim=1)
        n = z1.shape[0]
        k1, k2 = _gather(z1, world_size), _gather(z2, world_size)
        m = k1.shape[0]
        logits = torch.cat([z1, z2]) @ torch.cat([k1, k2]).T / temperature  # (2N, 2M)
        local = torch.arange(n, device=z1.device) + rank * n
        own = torch.cat([local, local + m])  # each anchor's own column
        positive = torch.cat([local + m, local])
        self_mask = torch.zeros_like(logits, dtype=torch.bool)
        self_mask[torch.arange(2 * n, device=z1.device), own] = True
        logits = logits.masked_fill(self_mask, float("-inf"))
        return F.cross_entropy(logits, positive)
