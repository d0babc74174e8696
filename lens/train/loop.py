"""The training loop shared by every stage: epochs of steps, checkpoints, stop requests.

A stage hands ``fit`` a ``Trainable`` (what to optimise and how to get a loss from a batch)
and a batch source. ``fit`` owns what must be identical whatever the stage: the epoch order,
per-step augmentation seeds, mixed precision, checkpoints every epoch (and every N steps,
and on a stop request), exact resume, and metrics.jsonl.

Why resume is exact: the data order of an epoch depends only on (seed, fold, epoch), the
augmentation generator is re-seeded every step from (seed, fold, step, rank), and the
checkpoint holds model, optimizer, scheduler, scaler, the running loss of the epoch and
every rank's global RNG states (for dropout and the like).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from lens import atomic, augment
from lens.train import checkpoint, data
from lens.train import distributed as dist
from lens.train.context import TaskContext
from lens.train.signals import TaskInterrupted

# Under DDP every rank must stop at the same step: the flag is agreed by an all-reduce,
# done every this many steps (a host-device sync; signals come minutes before the limit).
STOP_CHECK_EVERY_DISTRIBUTED = 10


@dataclass
class Trainable:
    model: nn.Module  # unwrapped: what the checkpoint saves
    loss: Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    train_mode: Callable[[], None]  # model.train(), or partly eval (frozen backbones)
    after_step: Callable[[], None] | None = None  # e.g. BYOL's target update
    evaluate: Callable[[], dict[str, Any]] | None = None  # held-out metrics at epoch end
    sample_weights: np.ndarray | None = None  # balanced sampling: per-image probabilities


@dataclass
class Progress:
    """Where the task stands; saved in every checkpoint."""

    epoch: int = 0  # completed epochs
    step_in_epoch: int = 0  # completed steps of the current epoch
    global_step: int = 0
    epoch_images: int = 0  # images trained on in the current epoch (all ranks)
    epoch_time: float = 0.0  # training seconds spent in the current epoch
    wall_time: float = 0.0  # seconds of all earlier runs of this task
    restarts: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


def step_seed(seed: int, fold: int, step: int, rank: int) -> int:
    """The augmentation seed of one step on one rank (a function of these alone)."""
    state = np.random.SeedSequence([seed, fold + 1, step, rank, 1]).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))


def _plain(obj: Any) -> Any:
    """JSON round trip: numpy scalars -> Python numbers, so torch.load(weights_only) reads it."""
    return json.loads(json.dumps(obj, default=atomic._json_default))


def _checkpoint(ctx: TaskContext, t: Trainable, prog: Progress, loss_sum: torch.Tensor,
                run_start: float) -> None:
    """Every rank takes part (RNG states and running losses are gathered); rank 0 writes."""
    per_rank = dist.all_gather_objects({"rng": checkpoint.rng_state(),
                                        "loss_sum": float(loss_sum.item())})
    if ctx.dist.is_main:
        state = asdict(prog)
        state["wall_time"] = prog.wall_time + time.perf_counter() - run_start
        state["history"] = _plain(prog.history)
        checkpoint.save(ctx.path("checkpoint.pt"), {
            "stage": ctx.stage, "fold": ctx.fold, "config": ctx.cfg_dict,
            "data": ctx.data_identity, "model": t.model.state_dict(),
            "optimizer": t.optimizer.state_dict(), "scheduler": t.scheduler.state_dict(),
            "scaler": t.scaler.state_dict(), "progress": state, "per_rank": per_rank,
        })
    dist.barrier()


def _restore(ctx: TaskContext, t: Trainable) -> tuple[Progress, float]:
    """Load the checkpoint into the trainable; returns the progress and this rank's loss sum."""
    ckpt = ctx.resume
    assert ckpt is not None
    t.model.load_state_dict(ckpt["model"])
    t.optimizer.load_state_dict(ckpt["optimizer"])
    t.scheduler.load_state_dict(ckpt["scheduler"])
    t.scaler.load_state_dict(ckpt["scaler"])
    prog = Progress(**ckpt["progress"])
    prog.restarts += 1
    mine = ckpt["per_rank"][min(ctx.dist.rank, len(ckpt["per_rank"]) - 1)]
    checkpoint.set_rng_state(mine["rng"])
    return prog, mine["loss_sum"] if len(ckpt["per_rank"]) == ctx.dist.world_size else 0.0


def _write_metrics(ctx: TaskContext, history: list[dict[str, Any]]) -> None:
    if ctx.dist.is_main:  # rewritten whole: a line can never appear twice after a resume
        text = "".join(json.dumps(line, default=atomic._json_default) + "\n" for line in history)
        atomic.write_text(ctx.path("metrics.jsonl"), text)


def _should_stop(ctx: TaskContext, step: int) -> bool:
    if ctx.dist.world_size == 1:
        return bool(ctx.stop)
    if step % STOP_CHECK_EVERY_DISTRIBUTED:
        return False
    return dist.all_reduce_max(bool(ctx.stop), ctx.device)


def _interrupt(ctx: TaskContext, prog: Progress) -> TaskInterrupted:
    why = ctx.stop.signal_name or "stop request"
    return TaskInterrupted(
        f"stopped by {why} at epoch {prog.epoch + 1}, step {prog.step_in_epoch} "
        f"(global step {prog.global_step}); checkpoint written to {ctx.path('checkpoint.pt')}; "
        f"run the same command again to resume"
    )


def fit(ctx: TaskContext, t: Trainable, source: data.MemorySource | data.StreamSource
        ) -> Progress:
    """Train for cfg.epochs epochs (continuing from ctx.resume); returns the final progress."""
    cfg, device, world, rank = ctx.cfg, ctx.device, ctx.dist.world_size, ctx.dist.rank
    run_start = time.perf_counter()
    if ctx.dist.is_main:  # only now: bad input fails before anything is written
        ctx.out_dir.mkdir(parents=True, exist_ok=True)
        atomic.write_json(ctx.path("config.json"), {"stage": ctx.stage, "fold": ctx.fold,
                                                    "config": ctx.cfg_dict})
    prog, first_loss = _restore(ctx, t) if ctx.resume is not None else (Progress(), 0.0)
    loss_sum = torch.tensor(first_loss, device=device, dtype=torch.float64)
    generator = torch.Generator(device=device)
    block = data.STREAM_BLOCK_BATCHES * cfg.batch_size if isinstance(source,
                                                                    data.StreamSource) else 0
    use_augment = any(v for v in asdict(cfg.augment).values())

    while prog.epoch < cfg.epochs:
        order = data.epoch_order(source.n, cfg.seed, ctx.fold, prog.epoch,
                                 weights=t.sample_weights, block=block)
        plan = data.shard(order, cfg.batch_size, world, rank)[prog.step_in_epoch:]
        t.train_mode()
        start = time.perf_counter()
        for x, y in source.batches(plan):
            generator.manual_seed(step_seed(cfg.seed, ctx.fold, prog.global_step, rank))
            if use_augment:
                x = augment.apply(x, cfg.augment, generator)
            x = x.contiguous(memory_format=ctx.memory_format)
            with ctx.autocast():
                loss = t.loss(x, y, generator)
            t.optimizer.zero_grad(set_to_none=True)
            t.scaler.scale(loss).backward()
            if cfg.optim.grad_clip:
                t.scaler.unscale_(t.optimizer)
                nn.utils.clip_grad_norm_(t.model.parameters(), cfg.optim.grad_clip)
            t.scaler.step(t.optimizer)
            t.scaler.update()
            t.scheduler.step()
            if t.after_step is not None:
                t.after_step()
            loss_sum += loss.detach()
            prog.step_in_epoch += 1
            prog.global_step += 1
            prog.epoch_images += cfg.batch_size
            stop = _should_stop(ctx, prog.global_step)
            every = cfg.checkpoint_every_steps
            if stop or (every and prog.global_step % every == 0):
                prog.epoch_time += time.perf_counter() - start
                start = time.perf_counter()
                _checkpoint(ctx, t, prog, loss_sum, run_start)
            if stop:
                raise _interrupt(ctx, prog)

        train_loss = float(dist.all_reduce_mean(loss_sum).item()) / max(1, prog.step_in_epoch)
        prog.epoch_time += time.perf_counter() - start
        line: dict[str, Any] = {
            "epoch": prog.epoch + 1,
            "step": prog.global_step,
            "train_loss": train_loss,
            "lr": t.scheduler.get_last_lr()[0],
            "images_per_s": prog.epoch_images / max(prog.epoch_time, 1e-9),
        }
        last = prog.epoch + 1 == cfg.epochs
        if t.evaluate is not None and ((prog.epoch + 1) % cfg.eval_every_epochs == 0 or last):
            line["val"] = t.evaluate()
        line["elapsed_s"] = prog.wall_time + time.perf_counter() - run_start
        prog.history.append(line)
        prog.epoch += 1
        prog.step_in_epoch = prog.epoch_images = 0
        prog.epoch_time = 0.0
        loss_sum.zero_()
        _write_metrics(ctx, prog.history)
        _checkpoint(ctx, t, prog, loss_sum, run_start)
        if dist.all_reduce_max(bool(ctx.stop), device):
            raise _interrupt(ctx, prog)

    prog.wall_time += time.perf_counter() - run_start
    return prog
