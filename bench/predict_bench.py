"""Throughput of `lens predict` against the bare forward pass of the same fold models.

    python bench/predict_bench.py                    # CPU: 2 fold models, 2048 images 1x64x64
    python bench/predict_bench.py --device cuda --n 65536 --size 150 --batch 512

Trains a small classify run with `lens train` (1 epoch per fold: the weights do not
change the speed), packs N random images of the same shape, then alternates, --reps
times: (a) the bare forward pass of every fold model over batches of an in-memory tensor
(channels_last, eval, inference_mode; bf16 autocast on CUDA), and (b) `lens predict`'s
``predict()`` on the packed file (read in blocks, every fold model, the ensemble, PRED.h5
and PRED.csv written). Reports the median images/s of each and their ratio, for the
whole ``predict()`` call and for its inference loop alone (what Summary.seconds times:
without loading the models), in wall time and in CPU time of the process (steadier on a
shared machine). One image counts once, whatever the number of fold models.

    python bench/predict_bench.py --memory 5000 40000

Peak memory instead: for each N, a fresh process runs the inference loop and the writing
of PRED.h5 and PRED.csv (lens.predict.run.infer, lens.predict.output.writing) over N
random 1x64x64 images with 3 trivial fold models (the mean pixel as logits), so that
reading, batching and writing dominate; prints the process's peak RSS.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lens.cli import main as lens_main  # noqa: E402
from lens.data.h5file import write_packed  # noqa: E402
from lens.predict.models import load_ensemble  # noqa: E402
from lens.predict.run import predict, resolve_device  # noqa: E402


def train_run(root: Path, size: int, channels: int, folds: int) -> Path:
    rng = np.random.default_rng(0)
    n = 64 * (folds + 1)
    images = rng.normal(size=(n, channels, size, size)).astype(np.float32)
    labels = (np.arange(n) // folds) % 2  # both classes in every fold
    fold = np.arange(n) % folds
    split = np.zeros(n, np.int8)
    split[-32:] = 1
    fold[-32:] = -1
    write_packed(root / "train.h5", images, labels, ["lens", "nonlens"], split=split,
                 fold=fold, n_folds=folds)
    for k in range(folds):
        with contextlib.suppress(SystemExit):
            lens_main(["train", "--stage", "classify", "--data", str(root / "train.h5"),
                       "--fold", str(k), "--out", str(root / "run"), "--set", "epochs=1",
                       "--set", "batch_size=32", "--set", "n_boot=0", "--set", "device=cpu"])
    return root / "run"


def bare(models: list[torch.nn.Module], x: torch.Tensor, batch: int,
         device: torch.device) -> tuple[float, float]:
    """(wall, CPU) seconds for every model over every batch of x (already on the device)."""
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else contextlib.nullcontext())
    if device.type == "cuda":
        torch.cuda.synchronize()
    start, cpu = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        for model in models:
            for a in range(0, x.shape[0], batch):
                with autocast:
                    model(x[a:a + batch]).float().softmax(dim=1)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, time.process_time() - cpu


class _MeanPixel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean(dim=(1, 2, 3))[:, None] * self.scale
        return torch.cat([-m, m], dim=1)


def _memory_child(path: str, out: str, queue) -> None:
    import resource

    from lens.data.h5file import read_info
    from lens.predict.models import Ensemble, FoldModel, TrainedOn
    from lens.predict.output import writing
    from lens.predict.run import infer

    info = read_info(path)
    trained = TrainedOn(1, info.height, info.width, ("a", "b"), "none", "error", 0, 0,
                        "float32", "", "")
    ens = Ensemble(Path("run"), "classify",
                   [FoldModel(k, _MeanPixel(), Path("m"), trained, {}) for k in range(3)])
    attrs = {"format": "lens-predictions-1", "class_names": json.dumps(["a", "b"]),
             "folds": json.dumps([0, 1, 2])}
    start = time.perf_counter()
    with writing(Path(out + ".h5"), Path(out + ".csv"), info.n, attrs) as write:
        for block in infer(ens, info, 0, info.n, batch_size=256):
            write(block)
    queue.put((time.perf_counter() - start,
               resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def memory(sizes: list[int]) -> None:
    import multiprocessing as mp

    import h5py

    from lens.atomic import atomic_path
    from lens.data.h5file import create_datasets, write_attrs, write_hashes

    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="predict_bench_") as tmp:
        for n in sizes:
            path = Path(tmp) / f"{n}.h5"
            with atomic_path(path) as t, h5py.File(t, "w") as f:
                ds = create_datasets(f, (n, 1, 64, 64), "float32", np.full(n, -1),
                                     np.zeros(n), np.full(n, -1), [f"{i}.npy" for i in range(n)])
                for s in range(0, n, 4096):
                    ds[s:s + 4096] = np.random.default_rng(s).normal(
                        size=(min(4096, n - s), 1, 64, 64)).astype(np.float32)
                write_hashes(f, ["0" * 32] * n)
                write_attrs(f, [], n_folds=0, fold_seed=-1, normalize="none",
                            nan_policy="error", command="")
            queue = ctx.Queue()
            child = ctx.Process(target=_memory_child, args=(str(path), f"{tmp}/pred{n}", queue))
            child.start()
            seconds, peak = queue.get()
            child.join()
            print(json.dumps({"n": n, "pixels_mib": round(n * 64 * 64 * 4 / 2**20),
                              "seconds": round(seconds, 2), "peak_rss_mib": round(peak)}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2048, help="images to predict")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--folds", type=int, default=2)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    p.add_argument("--memory", type=int, nargs="+", metavar="N",
                   help="measure peak memory for these numbers of images instead")
    args = p.parse_args()
    if args.memory:
        memory(args.memory)
        return
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)

    with tempfile.TemporaryDirectory(prefix="predict_bench_") as tmp:
        root = Path(tmp)
        run = train_run(root, args.size, args.channels, args.folds)
        images = np.random.default_rng(1).normal(
            size=(args.n, args.channels, args.size, args.size)).astype(np.float32)
        write_packed(root / "survey.h5", images, np.full(args.n, -1), [])

        models = [m.to(device, memory_format=torch.channels_last).eval()
                  for m in load_ensemble(run, "classify").models]
        x = torch.from_numpy(images).to(device).contiguous(memory_format=torch.channels_last)
        bare(models, x[:args.batch], args.batch, device)  # warm-up (allocator, kernels)
        predict(run, root / "survey.h5", root / "warm", batch_size=args.batch,
                device=device.type, force=True)
        t_bare, t_call, t_loop, cpu_bare, cpu_call = [], [], [], [], []
        for _ in range(args.reps):  # alternated: drifting load hits both alike
            wall, cpu = bare(models, x, args.batch, device)
            t_bare.append(wall)
            cpu_bare.append(cpu)
            start, cpu = time.perf_counter(), time.process_time()
            summary = predict(run, root / "survey.h5", root / "pred", batch_size=args.batch,
                              device=device.type, force=True)
            t_call.append(time.perf_counter() - start)
            cpu_call.append(time.process_time() - cpu)
            t_loop.append(summary.seconds)

    rate = {name: args.n / statistics.median(ts)
            for name, ts in (("bare", t_bare), ("predict_call", t_call), ("predict_loop", t_loop))}
    # CPU seconds of this process (all threads): on a shared machine, steadier than wall time
    cpu_rate = {name: args.n / statistics.median(ts)
                for name, ts in (("bare", cpu_bare), ("predict_call", cpu_call))}
    report = {
        "device": summary.device, "torch": torch.__version__, "n": args.n,
        "shape": [args.channels, args.size, args.size], "fold_models": args.folds,
        "batch": args.batch, "reps": args.reps,
        "seconds": {"bare": t_bare, "predict_call": t_call, "predict_loop": t_loop},
        "cpu_seconds": {"bare": cpu_bare, "predict_call": cpu_call},
        "images_per_s": {k: round(v, 1) for k, v in rate.items()},
        "ratio_call": round(rate["predict_call"] / rate["bare"], 3),
        "ratio_loop": round(rate["predict_loop"] / rate["bare"], 3),
        "images_per_cpu_s": {k: round(v, 1) for k, v in cpu_rate.items()},
        "ratio_cpu": round(cpu_rate["predict_call"] / cpu_rate["bare"], 3),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
