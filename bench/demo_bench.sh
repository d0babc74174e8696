#!/bin/bash
# Time `make demo` in a fresh clone of this repository (docs/BENCHMARKS.md, "The demo").
#
#   bash bench/demo_bench.sh [VENV]        # VENV: an environment with lens's dependencies
#
# The clone's own code runs (PYTHONPATH points at it); the environment is reused, so the
# time is the demo's, not pip's: on a new machine the first `make demo` also creates .venv
# and installs the dependencies. Prints the machine, the load before and after, each step's
# output and the wall time; leaves the clone (with demo/) in a temporary folder it names.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=$(cd "${1:-$repo/.venv}" && pwd)
work=$(mktemp -d -t lens-demo-XXXXXX)
git clone --quiet "$repo" "$work/lens"
cd "$work/lens"
echo "commit: $(git rev-parse --short HEAD)"
echo "machine: $(lscpu | sed -n 's/^Model name:[[:space:]]*//p'), $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
start=$(date +%s.%N)
# -o: the environment counts as up to date (no pip install); VENV: use it.
PYTHONPATH="$work/lens" make demo VENV="$venv" -o "$venv/bin/lens"
end=$(date +%s.%N)
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "make demo: $(python3 -c "print(f'{$end - $start:.0f} s')") (clone in $work/lens)"
