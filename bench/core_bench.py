"""Speed of the training building blocks: augmentations, backbones, SSL steps, metrics.

    python bench/core_bench.py                                   # this machine, small
    python bench/core_bench.py --device cuda --batch 256 --size 150
    python bench/core_bench.py --only metrics

Sections (each a median over --reps timed repetitions after warm-up):

  augment   random_dihedral on one batch (one gather) against a Python loop over images
            (torch.rot90/flip per image, the obvious implementation), and the whole
            SimCLR view augmentation (dihedral, shift, brightness/contrast, noise)
  models    one training step (forward, backward, AdamW) of each backbone + linear head;
            CUDA: bf16 autocast and channels_last, as lens trains
  ssl       one step of each SSL method on resnet18
  metrics   classification_metrics with a 1000-resample bootstrap on 7,500 images of 3
            classes (the Common Test I test set) against a loop of sklearn roc_auc_score

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lens import augment  # noqa: E402
from lens.models import MODELS, build_backbone, build_classifier  # noqa: E402
from lens.ssl import METHODS, build_method  # noqa: E402
from lens.ssl.simclr import SimCLRParams, view_augment  # noqa: E402
from lens.train.metrics import classification_metrics  # noqa: E402


def timed(fn: Callable[[], object], device: torch.device, reps: int, warmup: int = 3) -> float:
    """Median seconds of fn() over reps runs, synchronising the GPU around each."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def dihedral_loop(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The per-image baseline: same D4 element numbering as lens.augment."""
    out = []
    for img, ti in zip(x, t.tolist(), strict=True):
        g = torch.flip(img, dims=(-1,)) if ti >= 4 else img
        out.append(torch.rot90(g, ti % 4, dims=(-2, -1)))
    return torch.stack(out)


def bench_augment(device, batch, size, reps) -> dict:
    x = torch.rand(batch, 1, size, size, device=device)
    g = torch.Generator(device=device).manual_seed(0)
    t = torch.randint(0, 8, (batch,), device=device)
    assert torch.equal(augment.dihedral_batch(x, t), dihedral_loop(x, t))
    cfg = view_augment(SimCLRParams())
    s_gather = timed(lambda: augment.random_dihedral(x, g), device, reps)
    s_loop = timed(lambda: dihedral_loop(x, torch.randint(0, 8, (batch,), device=device)),
                   device, reps)
    s_views = timed(lambda: augment.apply(x, cfg, g), device, reps)
    return {
        "dihedral_gather_ms": 1e3 * s_gather,
        "dihedral_loop_ms": 1e3 * s_loop,
        "dihedral_speedup": s_loop / s_gather,
        "simclr_view_ms": 1e3 * s_views,
        "simclr_view_images_per_s": batch / s_views,
    }


def _amp(device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def bench_models(device, batch, size, reps) -> dict:
    out = {}
    x = torch.rand(batch, 1, size, size, device=device).to(memory_format=torch.channels_last)
    y = torch.randint(0, 3, (batch,), device=device)
    for name in MODELS:
        torch.manual_seed(0)
        model = build_classifier(name, 1, size, 3).to(device, memory_format=torch.channels_last)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step(model=model, opt=opt):
            with _amp(device):
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        out[name] = {"train_images_per_s": batch / timed(step, device, reps)}
    return out


def bench_ssl(device, batch, size, reps) -> dict:
    out = {}
    x = torch.rand(batch, 1, size, size, device=device).to(memory_format=torch.channels_last)
    g = torch.Generator(device=device).manual_seed(0)
    for name in METHODS:
        torch.manual_seed(0)
        backbone = build_backbone("resnet18", 1, size)
        method = build_method(name, backbone, backbone.feature_dim)
        method = method.to(device, memory_format=torch.channels_last)
        opt = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=1e-4)

        def step(method=method, opt=opt):
            with _amp(device):
                loss = method(x, g)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            method.after_step()

        out[name] = {"images_per_s": batch / timed(step, device, reps)}
    return out


def bench_metrics(n_boot: int) -> dict:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 7500)
    logits = rng.normal(size=(7500, 3)) + 2 * np.eye(3)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    start = time.perf_counter()
    m = classification_metrics(labels, probs, ["no", "sphere", "vort"], n_boot=n_boot)
    s_lens = time.perf_counter() - start
    start = time.perf_counter()
    values = []
    for idx in np.random.default_rng(0).integers(0, 7500, size=(n_boot, 7500)):
        values.append(roc_auc_score(labels[idx], probs[idx], multi_class="ovr"))
    s_loop = time.perf_counter() - start
    return {"n": 7500, "n_boot": n_boot, "lens_s": s_lens, "sklearn_loop_s": s_loop,
            "speedup": s_loop / s_lens, "macro_auc": m["macro_auc"],
            "macro_auc_ci": m["macro_auc_ci"],
            "sklearn_loop_ci": np.percentile(values, [2.5, 97.5]).tolist()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", choices=["augment", "models", "ssl", "metrics"], action="append")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    sections = args.only or ["augment", "models", "ssl", "metrics"]
    result: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "torch": torch.__version__, "batch": args.batch, "size": args.size,
        "threads": args.threads, "precision": "bf16" if device.type == "cuda" else "fp32",
    }
    if "augment" in sections:
        result["augment"] = bench_augment(device, args.batch, args.size, args.reps)
    if "models" in sections:
        result["models"] = bench_models(device, args.batch, args.size, args.reps)
    if "ssl" in sections:
        result["ssl"] = bench_ssl(device, args.batch, args.size, args.reps)
    if "metrics" in sections:
        result["metrics"] = bench_metrics(args.n_boot)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
