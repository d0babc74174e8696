#!/usr/bin/env bash
# The GPU path, unattended, in a few minutes: CUDA variants of the tests, then the throughput
# benchmark. Needs only Python with torch, torchvision, numpy, h5py, scikit-learn, typer,
# rich, matplotlib, pillow, xxhash and pytest (no network, no lenstronomy, no submitit).
#
#   bash bench/gpu.sh [OUT_DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-gpu-out}}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 LENS_REQUIRE_CUDA=1
py=${PYTHON:-python3}
# Packed files need the xxhash package; a machine without network gets it from wheels
# downloaded beforehand (see docs/BENCHMARKS.md) into bench/wheels/.
if ! $py -c 'import xxhash' 2>/dev/null; then
  deps=$(mktemp -d)
  $py -m pip install --quiet --no-index --no-deps --target "$deps" bench/wheels/xxhash-*.whl \
    || { echo "xxhash is missing and bench/wheels/ has no wheel for this Python" >&2; exit 2; }
  export PYTHONPATH=$PYTHONPATH:$deps
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $py -c 'import torch, sys; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)'
  lscpu | grep -E 'Model name|^CPU\(s\)'; } 2>&1 | tee "$out/machine.txt"

# Tests with a CUDA variant: device path (bf16, channels_last, data on device, NCCL one rank),
# augmentations, models and SSL methods.
timeout 240 $py -m pytest -q -p no:cacheprovider -o addopts="" \
  tests/test_device_path.py tests/test_augment.py tests/test_models.py tests/test_ssl.py \
  2>&1 | tee "$out/tests.log"
tests_rc=${PIPESTATUS[0]}

timeout 300 $py bench/gpu_bench.py --n "${N:-30000}" --n-notebook "${N_NOTEBOOK:-4096}" \
  --out "$out/gpu_bench.json" 2>&1 | tail -n 60 | tee "$out/bench.log"
bench_rc=${PIPESTATUS[0]}
echo "tests rc=$tests_rc bench rc=$bench_rc"
exit $(( tests_rc || bench_rc ))
