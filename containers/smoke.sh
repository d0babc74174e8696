#!/usr/bin/env bash
# Smoke test of an installed lens, on CPU, in ~30 s: the CLI answers, a tiny packed file is
# written, and one epoch of `lens train` on it writes a complete result.json.
# The image's %test runs it (containers/lens.def); it runs the same way in any environment:
#   bash containers/smoke.sh [PYTHON]
set -euo pipefail
PY=${1:-python}
work=$(mktemp -d "${TMPDIR:-/tmp}/lens-smoke.XXXXXX")
trap 'rm -rf "$work"' EXIT

"$PY" -m lens --help >/dev/null
"$PY" -m lens --version

"$PY" - "$work/tiny.h5" <<'EOF'
import sys

import numpy as np

from lens.data.h5file import write_packed

rng = np.random.default_rng(0)
n = 48
labels = np.arange(n) % 2
images = rng.normal(size=(n, 1, 32, 32)).astype(np.float32)
images[labels == 1, :, 12:20, 12:20] += 3.0  # a bright core: learnable in one epoch
fold = (np.arange(n) // 2) % 2  # both classes in each fold
write_packed(sys.argv[1], images, labels, ["no", "sub"], fold=fold, n_folds=2)
EOF

OMP_NUM_THREADS=2 "$PY" -m lens train --stage classify --data "$work/tiny.h5" --fold 0 \
    --out "$work/run" --set epochs=1 --set batch_size=8 --set num_workers=0 \
    --set device=cpu --set n_boot=10
"$PY" - "$work/run/classify/fold_0/result.json" <<'EOF'
import json
import sys

result = json.load(open(sys.argv[1]))
assert result["stage"] == "classify" and result["fold"] == 0, result
auc = result["metrics"]["val"]["macro_auc"]
assert isinstance(auc, float) and 0.0 <= auc <= 1.0, result["metrics"]
print(f"smoke test passed: classify fold 0, 1 epoch on CPU, val macro AUC {auc:.3f}")
EOF
