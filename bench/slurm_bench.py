"""Local Slurm test cluster: start-up times and job latencies (docs/BENCHMARKS.md).

    .venv/bin/python bench/slurm_bench.py            # no-op start, job latencies
    .venv/bin/python bench/slurm_bench.py --restart  # also stop.sh + start.sh (kills jobs!)

Latency = from `sbatch` returning to sacct reporting the job COMPLETED (1 s polling floor
removed by polling every 0.1 s).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from lens.cluster import slurmcli

REPO = Path(__file__).resolve().parents[1]


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - start


def job_latency(args: list[str], expected: int, tmp: Path) -> float:
    start = time.perf_counter()
    job = slurmcli.sbatch([*args, "-o", str(tmp / "%j.log")], wrap="true")
    slurmcli.wait_finished([job], expected=expected, timeout=300, poll=0.1)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--restart", action="store_true", help="also time stop.sh + start.sh")
    parser.add_argument("--repeat", type=int, default=5)
    opts = parser.parse_args()
    start_sh = ["bash", str(REPO / "slurm" / "dev" / "start.sh")]
    if opts.restart:
        subprocess.run(["bash", str(REPO / "slurm" / "dev" / "stop.sh")], check=True,
                       capture_output=True)
        print(f"start.sh after stop.sh (installed): {timed(start_sh):.1f} s")
    print(f"start.sh when up (no-op): {timed(start_sh):.2f} s")
    with tempfile.TemporaryDirectory() as tmp:
        for name, args, n in (("one job", [], 1), ("3-task array %2", ["--array=0-2%2"], 3)):
            runs = [job_latency(args, n, Path(tmp)) for _ in range(opts.repeat)]
            print(f"{name}: submit -> COMPLETED median {statistics.median(runs):.1f} s "
                  f"(min {min(runs):.1f}, max {max(runs):.1f}, n={len(runs)})")


if __name__ == "__main__":
    main()
