"""Throughput of `lens simulate`: images per second by dataset, size and worker count.

Run:  .venv/bin/python bench/bench_simulate.py --per-class 100 --workers 1 2
Prints one line per setting: rendering alone, atomic writing alone, then whole runs.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from lens.simulate.physics import Renderer
from lens.simulate.presets import PRESETS
from lens.simulate.run import SimulationSpec, plan, render_image, run, write_npy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--size", type=int, default=150)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--dataset", default="substructure")
    parser.add_argument("--preset", default="model-i")
    args = parser.parse_args()
    params = PRESETS[args.preset]

    with tempfile.TemporaryDirectory() as tmp:
        spec = SimulationSpec(Path(tmp) / "r", args.dataset, args.preset, params,
                              args.per_class, args.size)  # fmt: skip
        renderer = Renderer(params, args.size)
        tasks = plan(spec)
        render_image(spec, renderer, *tasks[0])  # warm-up: lenstronomy's lazy set-up
        start = time.perf_counter()
        for task in tasks:
            render_image(spec, renderer, *task)
        render_s = time.perf_counter() - start
        print(f"render only, 1 process: {len(tasks) / render_s:7.1f} images/s "
              f"({1000 * render_s / len(tasks):.1f} ms/image, {len(tasks)} images)")  # fmt: skip
        image = render_image(spec, renderer, *tasks[0])
        (Path(tmp) / "writes").mkdir()
        start = time.perf_counter()
        for i in range(len(tasks)):
            write_npy(Path(tmp) / "writes" / f"{i}.npy", image)
        write_s = time.perf_counter() - start
        print(f"atomic write only (fsync, rename): {1000 * write_s / len(tasks):.1f} ms/image")
        for workers in args.workers:
            spec_w = SimulationSpec(Path(tmp) / f"w{workers}", args.dataset, args.preset,
                                    params, args.per_class, args.size)  # fmt: skip
            start = time.perf_counter()
            n = run(spec_w, workers=workers)
            elapsed = time.perf_counter() - start
            print(f"lens simulate, {workers} worker(s): {n / elapsed:7.1f} images/s "
                  f"({n} images in {elapsed:.1f} s, start-up and writes included)")  # fmt: skip


if __name__ == "__main__":
    main()
