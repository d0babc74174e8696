"""Training throughput of `lens train` against two references, on the same images.

    python bench/train_bench.py                      # ResNet-18, 1x150x150, this machine
    python bench/train_bench.py --size 64 --n 1024   # quicker
    python bench/train_bench.py --device cuda --n 8192 --batch 256

Three loops, each timed after a warm-up, all with the same model (lens.models resnet18):

  lens      lens.train.task.run_task on a packed file (the real task: in-memory images,
            on-device dihedral augmentation, autocast, channels_last, fused AdamW); images/s
            of each epoch from metrics.jsonl (training steps only), epochs 2..E
  bare      forward + backward + optimizer step on one random batch already on the device,
            same precision and memory format: the ceiling for any input pipeline
  pipeline  lens's input pipeline alone (gather, dihedral augmentation, layout), ms/batch:
            the part of a lens step that a bare step does not have
  notebook  the original notebooks' loop: PNG files in an ImageFolder tree, torchvision
            transforms (RandomHorizontalFlip, RandomRotation(10), ToTensor, Normalize(0.5,
            0.5)), DataLoader without workers, fp32, Adam

Each loop reports the median and the best of its per-epoch (bare: per window of one lens
epoch's steps) throughputs, and the ratios lens/bare and lens/notebook of both. Bare and
lens run ``--rounds`` times in alternating order: on a shared machine the first loop of a
process was seen to run faster than the second. Prints one JSON object. No lenstronomy or
submitit import: it runs on GPU images without them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lens.data.h5file import write_packed  # noqa: E402
from lens.models import build_classifier  # noqa: E402

CLASSES = ("no", "sphere", "vort")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_images(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Min-max normalised random images in [0, 1] (the pixels do not matter for speed)."""
    rng = np.random.default_rng(seed)
    images = rng.random((n, 1, size, size), dtype=np.float32)
    return images, rng.integers(0, len(CLASSES), n)


def bench_lens(tmp: Path, images: np.ndarray, labels: np.ndarray, args: argparse.Namespace
               ) -> dict:
    from lens.train.task import TaskSpec, run_task

    n = images.shape[0]
    fold = np.zeros(n, np.int16)
    fold[: max(args.batch, n // 16)] = 1  # a small held-out fold: the epochs are mostly training
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "bench.h5"
    write_packed(path, images, labels, CLASSES, fold=fold, n_folds=2)
    spec = TaskSpec("classify", path, fold=1, out=tmp / "run", overrides=(
        f"epochs={args.epochs}", f"batch_size={args.batch}", f"device={args.device}",
        f"precision={args.precision}", "n_boot=0", f"eval_every_epochs={args.epochs}",
        "optim.warmup_epochs=0"))
    start = time.perf_counter()
    run_task(spec)
    total = time.perf_counter() - start
    lines = [json.loads(x) for x in (tmp / "run/classify/fold_1/metrics.jsonl").open()]
    return summarise([line["images_per_s"] for line in lines][1:]) | {"task_wall_s": total}


def bench_pipeline(tmp: Path, images: np.ndarray, labels: np.ndarray, device: torch.device,
                   args: argparse.Namespace) -> dict:
    """The input pipeline of a lens step alone (batch gather from the in-memory tensor,
    default augmentation, memory layout), per batch: what lens adds to a bare step."""
    from lens import augment
    from lens.data.h5file import read_info
    from lens.train import data

    path = tmp / "pipeline.h5"
    write_packed(path, images, labels, CLASSES)
    info = read_info(path)
    subset = data.Subset("train", np.arange(info.n), labels)
    source = data.MemorySource(info, subset, device, device)
    plan = data.shard(data.epoch_order(info.n, 0, 0, 0), args.batch, 1, 0)
    cfg, generator = augment.AugmentConfig(), torch.Generator(device=device)
    seconds = []
    for _ in range(3):
        sync(device)
        start = time.perf_counter()
        for x, _ in source.batches(plan):
            x = augment.apply(x, cfg, generator).contiguous(memory_format=torch.channels_last)
        sync(device)
        seconds.append((time.perf_counter() - start) / len(plan))
    return {"ms_per_batch": 1000 * float(np.median(seconds)), "batches": len(plan)}


def bench_bare(images: np.ndarray, labels: np.ndarray, device: torch.device,
               amp: torch.dtype | None, args: argparse.Namespace, compile: bool = False) -> dict:
    """The ceiling; with ``compile`` the model runs under torch.compile (compile time is
    part of the warm-up and reported apart)."""
    torch.manual_seed(0)
    model = build_classifier("resnet18", 1, args.size, len(CLASSES)).to(
        device, memory_format=torch.channels_last)
    forward = torch.compile(model) if compile else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    x = torch.from_numpy(images[: args.batch]).to(device).contiguous(
        memory_format=torch.channels_last)
    y = torch.from_numpy(labels[: args.batch]).to(device)

    def step() -> None:
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            loss = F.cross_entropy(forward(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    start = time.perf_counter()
    for _ in range(args.warmup):
        step()
    sync(device)
    warmup_s = time.perf_counter() - start
    samples = []
    window = max(1, (args.n - args.n // 16) // args.batch)  # steps of one lens epoch
    for _ in range(args.epochs - 1):
        sync(device)
        start = time.perf_counter()
        for _ in range(window):
            step()
        sync(device)
        samples.append(window * args.batch / (time.perf_counter() - start))
    return {**summarise(samples), "warmup_s": warmup_s}


def bench_notebook(tmp: Path, images: np.ndarray, labels: np.ndarray, device: torch.device,
                   args: argparse.Namespace) -> dict:
    from PIL import Image
    from torchvision import datasets, transforms

    root = tmp / "png"
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = root / CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image[0] * 255).astype(np.uint8), mode="L").save(folder / f"{i}.png")
    tf = transforms.Compose([
        transforms.Grayscale(num_output_channels=1),
        transforms.RandomHorizontalFlip(),
        transforms.RandomRotation(10),
        transforms.ToTensor(),
        transforms.Normalize((0.5,), (0.5,)),
    ])
    loader = torch.utils.data.DataLoader(datasets.ImageFolder(str(root), transform=tf),
                                         batch_size=args.batch, shuffle=True, num_workers=0,
                                         drop_last=True)
    torch.manual_seed(0)
    model = build_classifier("resnet18", 1, args.size, len(CLASSES)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    samples = []
    for _ in range(args.notebook_epochs + 1):  # the first epoch warms up
        sync(device)
        start = time.perf_counter()
        count = 0
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            count += x.shape[0]
        sync(device)
        samples.append(count / (time.perf_counter() - start))
    return summarise(samples[1:])


def summarise(samples: list[float]) -> dict:
    """Median and best of per-epoch throughputs: on a shared machine the best epoch is the
    one least disturbed by other processes, the median the typical one."""
    return {"images_per_s": float(np.median(samples)), "best_images_per_s": float(max(samples)),
            "samples": [round(x, 1) for x in samples]}


def machine(device: torch.device) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "cpu_threads": torch.get_num_threads(), "cpus": os.cpu_count()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=150, help="image side in pixels")
    p.add_argument("--n", type=int, default=512, help="images in the training set")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--epochs", type=int, default=4,
                   help="lens epochs (the first is warm-up); bare: as many timed windows")
    p.add_argument("--notebook-epochs", type=int, default=2, help="after one warm-up epoch")
    p.add_argument("--rounds", type=int, default=2,
                   help="bare and lens measured this many times, in alternating order")
    p.add_argument("--warmup", type=int, default=3, help="bare: untimed steps")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    p.add_argument("--skip-notebook", action="store_true")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from lens.train.context import determinism, resolve_device, resolve_precision

    device = resolve_device(args.device)
    amp = resolve_precision(args.precision, device)
    images, labels = make_images(args.n, args.size)
    # determinism(False): the bare and notebook loops get the settings of a default task
    with determinism(False), tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        out = {"machine": machine(device), "device": str(device),
               "precision": str(amp or torch.float32).replace("torch.", ""),
               "size": args.size, "n": args.n, "batch": args.batch}
        runs: dict[str, list[dict]] = {"bare": [], "lens": []}
        for r in range(args.rounds):  # alternate the order: whichever runs first may differ
            for name in (("bare", "lens") if r % 2 == 0 else ("lens", "bare")):
                runs[name].append(bench_bare(images, labels, device, amp, args)
                                  if name == "bare" else
                                  bench_lens(tmp / f"round{r}", images, labels, args))
        for name, results in runs.items():
            out[name] = summarise([x for res in results for x in res["samples"]])
        out["pipeline"] = bench_pipeline(tmp, images, labels, device, args)
        bare_step_ms = 1000 * args.batch / out["bare"]["images_per_s"]
        out["pipeline"]["share_of_bare_step"] = out["pipeline"]["ms_per_batch"] / bare_step_ms
        if not args.skip_notebook:
            out["notebook"] = bench_notebook(tmp, images, labels, device, args)
    for ref in ("bare", "notebook"):
        if ref in out:
            for key in ("images_per_s", "best_images_per_s"):
                out[f"lens_over_{ref}" + ("_best" if key.startswith("best") else "")] = (
                    out["lens"][key] / out[ref][key])
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
