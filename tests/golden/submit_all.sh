#!/bin/bash
# Submit the experiment: pretrain -> finetune (aftercorr) -> report (afterany).
# Prints one line per job: its step name and Slurm job id. If an sbatch fails, the
# jobs already submitted are cancelled. Written by `lens generate`.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p /runs/ssl/logs

submitted=()
cancel_submitted() {
    if ((${#submitted[@]})); then scancel "${submitted[@]}" || true; fi
}
trap cancel_submitted ERR

pretrain=$(sbatch --parsable "$here"/pretrain.sbatch)
pretrain=${pretrain%%;*}  # --parsable prints JOBID[;CLUSTER]
submitted+=("$pretrain")
echo "pretrain $pretrain"
finetune=$(sbatch --parsable --dependency=aftercorr:"$pretrain" --kill-on-invalid-dep=yes "$here"/finetune.sbatch)
finetune=${finetune%%;*}  # --parsable prints JOBID[;CLUSTER]
submitted+=("$finetune")
echo "finetune $finetune"
report=$(sbatch --parsable --dependency=afterany:"$finetune" --kill-on-invalid-dep=yes "$here"/report.sbatch)
report=${report%%;*}  # --parsable prints JOBID[;CLUSTER]
submitted+=("$report")
echo "report $report"
