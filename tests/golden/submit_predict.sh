#!/bin/bash
# Submit the experiment: predict -> merge (afterany).
# Prints one line per job: its step name and Slurm job id. If an sbatch fails, the
# jobs already submitted are cancelled. Written by `lens generate`.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p /runs/exp1/predict/survey.parts/logs

submitted=()
cancel_submitted() {
    if ((${#submitted[@]})); then scancel "${submitted[@]}" || true; fi
}
trap cancel_submitted ERR

predict=$(sbatch --parsable "$here"/predict.sbatch)
predict=${predict%%;*}  # --parsable prints JOBID[;CLUSTER]
submitted+=("$predict")
echo "predict $predict"
merge=$(sbatch --parsable --dependency=afterany:"$predict" --kill-on-invalid-dep=yes "$here"/merge.sbatch)
merge=${merge%%;*}  # --parsable prints JOBID[;CLUSTER]
submitted+=("$merge")
echo "merge $merge"
