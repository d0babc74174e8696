#!/usr/bin/env bash
# Reproduce the figures of docs/RELIABILITY.md: every fault and bad-input test, on the local
# Slurm cluster, printing what each fault test injected and what it found.
#
#   bash bench/faults.sh          # about 11 minutes on 2 cores; needs root for the cluster
#
# The lines that matter: "N passed" and the per-fault lines (SIGKILLs, requeues, reads).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash slurm/dev/start.sh
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB"
start=$SECONDS
.venv/bin/python -m pytest tests/test_faults_atomic.py tests/test_faults_signals.py \
    tests/test_faults_cluster.py tests/test_bad_input.py tests/test_security.py \
    -q -s -p no:cacheprovider
echo "wall time: $((SECONDS - start)) s"
