"""The GPU path measured in one run: lens's classify step against the bare-model ceiling
(torch.compile off and on) and the original notebooks' loop, on the same GPU.

    python bench/gpu_bench.py --n 30000 --n-notebook 4096 --out gpu_bench.json

Reuses bench/train_bench.py's three loops. Prints and writes one JSON object with images/s,
the ratios, peak GPU memory of lens's task, and the wall time of a 5-fold x 5-epoch
experiment on a Common Test I-size set (30,000 training images) estimated from the
measured rate. Free of lenstronomy and submitit: GPU images often lack them.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import train_bench as tb  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=150)
    p.add_argument("--n", type=int, default=30000, help="images for lens's task")
    p.add_argument("--n-notebook", type=int, default=4096, help="images for the notebook loop")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--notebook-epochs", type=int, default=1, help="timed notebook epochs")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--out", type=Path)
    args = p.parse_args()

    from lens.train.context import determinism, resolve_device, resolve_precision

    device = resolve_device(args.device)
    amp = resolve_precision(args.precision, device)
    torch.backends.cudnn.benchmark = True
    images, labels = tb.make_images(args.n, args.size)
    out: dict = {"machine": tb.machine(device), "device": str(device),
                 "precision": str(amp or torch.float32).replace("torch.", ""),
                 "size": args.size, "n": args.n, "batch": args.batch}
    with determinism(False), tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        out["bare"] = tb.bench_bare(images, labels, device, amp, args)
        if not args.no_compile:
            try:
                out["bare_compiled"] = tb.bench_bare(images, labels, device, amp, args,
                                                     compile=True)
            except Exception as exc:  # a missing compiler toolchain must not cost the run
                out["bare_compiled"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        out["lens"] = tb.bench_lens(tmp, images, labels, args)
        if device.type == "cuda":
            out["lens"]["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        nb_args = argparse.Namespace(**{**vars(args), "batch": 64})  # the notebooks' batch
        out["notebook"] = tb.bench_notebook(tmp, images[: args.n_notebook],
                                            labels[: args.n_notebook], device, nb_args)
    lens_ips = out["lens"]["images_per_s"]
    out["lens_over_bare"] = lens_ips / out["bare"]["images_per_s"]
    if "images_per_s" in out.get("bare_compiled", {}):
        out["lens_over_bare_compiled"] = lens_ips / out["bare_compiled"]["images_per_s"]
    out["lens_over_notebook"] = lens_ips / out["notebook"]["images_per_s"]
    # 5 folds x 5 epochs, each fold training on 4/5 of 30,000 images and scoring 1/5 + 7,500
    train_images = 5 * 5 * 24000
    out["estimate_5fold_5epoch_common_test_i_s"] = train_images / lens_ips
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
