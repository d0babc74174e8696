"""Speed and memory of `lens pack` against reading the same files raw.

    python bench/pack_bench.py                                    # N = 4,000 and 16,000
    python bench/pack_bench.py --n 37500 --workers 1 2 --reps 1   # Common Test I size: memory

For each N, generates N DeepLense-format files (float64 (1, 150, 150) .npy, values on a
lattice of 700 levels, class folders no/sphere/vort) in a temporary folder, reads them all
once and flushes them to disk (so every timing starts from the page cache with no
write-back in flight), then repeats --reps times, interleaved:

  raw    np.load of every file, in sorted order, in this process (the baseline)
  pack   `python -m lens pack SRC OUT --workers W` in a child process, for each W and each
         destination of OUT: `disk` (next to the sources; lens fsyncs the file before
         renaming it, so disk write bandwidth bounds this) and `tmpfs` (/dev/shm: no disk,
         so this measures the packer itself against the raw reads). Wall time of the whole
         command (interpreter start included), CPU seconds of the process tree, and peak
         memory, sampled every 20 ms from /proc: the sum of RSS over the tree (counts
         shared memory once per process, an upper bound) and the sum of PSS (shared pages
         split between processes)

  stages CPU time per image of each step of packing, in this process, best of 3 passes
         over up to 4,000 of the files: np.load (the baseline's work), lens's header check
         and read, the transform (cast and NaN check) and the content hash; then writing
         all N stored images once to a new file on /dev/shm (the writer's kernel work)

With --drop-caches (root), the page cache is dropped after generating each N, so that
the kernel has free pages for the output (keep the sources on tmpfs with --dir /dev/shm).

Reports medians over the repetitions; throughput in images/s and MB/s of source files.
Prints one JSON object and Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]  # lens is imported from this checkout
CLASSES = ("no", "sphere", "vort")
SHAPE = (1, 150, 150)
BLOCK_IMAGES = 93  # images per 8 MB block of float32 (1, 150, 150), as lens packs them
FILE_BYTES = 128 + 8 * 150 * 150  # what np.save writes for this shape and dtype


def generate(root: Path, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for cls in CLASSES:
        (root / cls).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image = rng.integers(0, 701, size=SHAPE) / 700.0  # float64 in [0, 1], 700 levels
        np.save(root / CLASSES[i % 3] / f"{i}.npy", image)


def files_of(root: Path) -> list[str]:
    return sorted(str(p) for p in root.glob("*/*.npy"))


def raw_read(files: list[str]) -> float:
    start = time.perf_counter()
    for f in files:
        np.load(f, allow_pickle=False)
    return time.perf_counter() - start


def stage_costs(files: list[str]) -> dict[str, float]:
    """CPU µs per image of each packing step (best of 3), on up to 4,000 files, then of
    writing all N stored images once."""
    n_all = len(files)
    sys.path.insert(0, str(REPO))
    from lens.data.h5file import image_hash
    from lens.data.readers import read_header, read_image
    from lens.data.transforms import Transform, apply

    files = files[:4000]
    out = np.empty(SHAPE, np.float32)
    image = read_image(files[0])
    steps = {
        "np.load": lambda f: np.load(f, allow_pickle=False),
        "header check": read_header,
        "read": read_image,
        "cast + NaN check": lambda f: apply(image, Transform(), out),
        "content hash (XXH3)": lambda f: image_hash(out),
    }
    costs = {}
    for name, step in steps.items():
        best = float("inf")
        for _ in range(3):
            start = time.process_time()
            for f in files:
                step(f)
            best = min(best, time.process_time() - start)
        costs[name] = round(best / len(files) * 1e6, 1)
    costs["write all N to tmpfs"] = round(write_cost(n_all) * 1e6, 1)
    return costs


def write_cost(n: int) -> float:
    """CPU seconds per image of writing n stored images (float32 (1, 150, 150)) to a new
    file on /dev/shm in 8 MB blocks, as lens's writer does: the kernel allocates every page,
    and how much that costs depends on the machine's free memory at this N."""
    block = np.zeros((BLOCK_IMAGES, *SHAPE), np.float32)
    path = Path("/dev/shm") / f"pack_bench_write_{os.getpid()}"
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    try:
        start = time.process_time()
        for first in range(0, n, BLOCK_IMAGES):
            count = min(BLOCK_IMAGES, n - first)
            os.pwrite(fd, memoryview(block[:count].reshape(-1).view(np.uint8)),
                      first * block[0].nbytes)
        return (time.process_time() - start) / n
    finally:
        os.close(fd)
        path.unlink()


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            tree.setdefault(ppid, []).append(int(entry))
    return tree


def _tree_memory(root: int) -> tuple[int, int]:
    """(sum of RSS, sum of PSS) in bytes over ``root`` and its descendants."""
    tree = _children()
    pids, rss, pss = [root], 0, 0
    while pids:
        pid = pids.pop()
        pids += tree.get(pid, [])
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1]) * 1024
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1]) * 1024
        except OSError:
            pass
    return rss, pss


def _become_subreaper() -> None:
    """Adopt orphaned descendants (lens's fork server outlives the command by a moment), so
    that reaping them counts their CPU time in RUSAGE_CHILDREN."""
    import ctypes

    PR_SET_CHILD_SUBREAPER = 36
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise SystemExit(f"prctl(PR_SET_CHILD_SUBREAPER) failed: errno {ctypes.get_errno()}")


def _reap_all() -> None:
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def run_pack(src: Path, out: Path, workers: int) -> dict[str, float]:
    if out.exists():
        out.unlink()
    cmd = [sys.executable, "-m", "lens", "pack", str(src), str(out), "--workers", str(workers)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    peak = [0, 0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            rss, pss = _tree_memory(proc.pid)
            peak[0], peak[1] = max(peak[0], rss), max(peak[1], pss)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    _reap_all()  # adopted orphans: their CPU time counts too
    if proc.returncode != 0:
        raise SystemExit(f"lens pack failed ({proc.returncode}):\n{stderr}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    inner = re.search(r" in ([\d.]+) s \(", stdout)
    return {
        "wall_s": wall,
        "pack_s": float(inner.group(1)) if inner else float("nan"),
        "cpu_s": cpu,
        "peak_rss_mib": peak[0] / 2**20,
        "peak_pss_mib": peak[1] / 2**20,
    }


def machine() -> dict[str, object]:
    model = platform.processor()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next(
            line.split(":", 1)[1].strip()
            for line in out.splitlines()
            if line.startswith("Model name")
        )
    except (OSError, StopIteration):
        pass
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 2**20, 1),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


def bench_n(
    base: Path, n: int, workers: list[int], dests: dict[str, Path], reps: int,
    drop_caches: bool = False,
) -> dict[str, object]:
    src = base / f"n{n}"
    t = time.perf_counter()
    generate(src, n)
    generated = time.perf_counter() - t
    files = files_of(src)
    os.sync()  # no write-back of the sources while timing
    if drop_caches:
        # Free the page cache, so that the kernel has free pages for the output instead of
        # reclaiming cache for every page (what costs most on a VM short of free memory).
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        subprocess.run([sys.executable, "-m", "lens", "pack", "--help"], cwd=REPO,
                       capture_output=True, check=True)  # lens's own files cached again
    raw_read(files)  # warm the page cache; not timed
    stages = stage_costs(files)
    raws: list[float] = []
    runs: dict[tuple[int, str], list[dict[str, float]]] = {
        (w, d): [] for w in workers for d in dests
    }
    for _ in range(reps):  # interleaved, so every method sees the same machine load
        raws.append(raw_read(files))
        for (w, d), results in runs.items():
            out = dests[d] / f"pack_bench_n{n}.h5"
            results.append(run_pack(src, out, w))
            out.unlink()
            os.sync()
    raw_s = statistics.median(raws)
    mb = n * FILE_BYTES / 1e6
    result: dict[str, object] = {
        "n": n,
        "generate_s": round(generated, 1),
        "stage_cpu_us_per_image": stages,
        "raw": {
            "s": round(raw_s, 3),
            "images_per_s": round(n / raw_s),
            "mb_per_s": round(mb / raw_s),
        },
    }
    for (w, d), rs in runs.items():
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        result[f"pack_w{w}_{d}"] = {
            "wall_s": round(med["wall_s"], 2),
            "pack_s": round(med["pack_s"], 2),
            "images_per_s": round(n / med["wall_s"]),
            "mb_per_s": round(mb / med["wall_s"]),
            "ratio_to_raw": round(raw_s / med["wall_s"], 3),
            "cpu_us_per_image": round(med["cpu_s"] / n * 1e6),
            "peak_rss_mib": round(max(r["peak_rss_mib"] for r in rs)),
            "peak_pss_mib": round(max(r["peak_pss_mib"] for r in rs)),
        }
    shutil.rmtree(src)
    return result


def markdown(results: list[dict[str, object]]) -> str:
    lines = [
        "| N | method | OUT on | images/s | MB/s | pack/raw | CPU µs/image | "
        "peak RSS (tree) | peak PSS (tree) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        raw = r["raw"]
        lines.append(
            f"| {r['n']:,} | raw `np.load` loop | | {raw['images_per_s']:,} | "
            f"{raw['mb_per_s']:,} | 1 | | | |"
        )
        for key, p in r.items():
            if not key.startswith("pack_w"):
                continue
            w, dest = key[len("pack_w") :].split("_")
            lines.append(
                f"| {r['n']:,} | `lens pack --workers {w}` | {dest} | {p['images_per_s']:,} | "
                f"{p['mb_per_s']:,} | {p['ratio_to_raw']:.2f} | {p['cpu_us_per_image']} | "
                f"{p['peak_rss_mib']} MiB | {p['peak_pss_mib']} MiB |"
            )
    names = list(results[0]["stage_cpu_us_per_image"])
    lines += ["", "| N | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for r in results:
        costs = r["stage_cpu_us_per_image"]
        lines.append(f"| {r['n']:,} | " + " | ".join(f"{costs[k]} µs" for k in names) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[4000, 16000])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--dest", nargs="+", choices=["disk", "tmpfs"], default=["disk", "tmpfs"])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="where to generate the files")
    parser.add_argument("--drop-caches", action="store_true",
                        help="drop the page cache after generating each N (root; sources "
                        "should then be on tmpfs: --dir /dev/shm)")
    args = parser.parse_args()
    _become_subreaper()
    base = Path(tempfile.mkdtemp(prefix="pack_bench_", dir=args.dir))
    dests = {"disk": base, "tmpfs": Path("/dev/shm")}
    dests = {d: dests[d] for d in args.dest}
    load_before = os.getloadavg()
    try:
        results = [
            bench_n(base, n, args.workers, dests, args.reps, args.drop_caches) for n in args.n
        ]
    finally:
        shutil.rmtree(base, ignore_errors=True)
    report = {
        "machine": machine(),
        "command": " ".join(["python", *sys.argv]),
        "reps": args.reps,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "results": results,
    }
    print(json.dumps(report, indent=2))
    print(markdown(results))


if __name__ == "__main__":
    main()
