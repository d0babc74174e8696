"""The sbatch scripts of a sharded prediction (`lens generate --stage predict`): golden files,
resources, quoting and rejected values. Pure rendering, no cluster.

Regenerate the golden files after an intended change:
    LENS_UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_generate_predict.py

The command on a trained run and the scripts on the local Slurm cluster:
tests/test_submit_predict.py.
"""

from __future__ import annotations

import shlex

import pytest
from test_generate import CONTAINER, HOSTILE, check_golden

from lens.cluster.predict_scripts import (
    MergeJob,
    ShardArrayJob,
    predict_scripts,
    render_merge_script,
    render_shard_script,
    shard_resources,
)
from lens.cluster.profiles import SlurmProfile
from lens.cluster.sbatch import Resources
from lens.errors import LensError

PY = ("/opt/env/bin/python",)
CPU = Resources(partition="debug", account="lens", time="00:30:00", mem="2G")


def shard_job(**changes) -> ShardArrayJob:
    fields = dict(run="/runs/exp1", data="/data/survey.h5", pred="/runs/exp1/predict/survey",
                  n_shards=8, python=PY, stage="classify", batch_size=256, resources=CPU,
                  array_parallelism=4)
    fields.update(changes)
    return ShardArrayJob(**fields)


def test_golden_predict_array():
    check_golden("predict.sbatch", render_shard_script(shard_job()))


def test_golden_predict_gpu_container():
    profile = SlurmProfile(partition="gpu", account="proj", time="02:00:00", gpus_per_task=4,
                           gpu_type="a100", cpus_per_task=8, mem="64G",
                           setup=("module load apptainer",), extra_sbatch=("--exclusive",))
    job = shard_job(python=CONTAINER, stage="finetune", batch_size=1024, n_shards=64,
                    resources=shard_resources(profile), setup=profile.setup,
                    array_parallelism=16, pred="/scratch/me/preds/survey")
    check_golden("predict_gpu_container.sbatch", render_shard_script(job))


def test_golden_merge():
    job = MergeJob(pred="/runs/exp1/predict/survey", n_shards=8, python=PY, n_boot=1000,
                   resources=Resources(partition="debug", account="lens", time="00:10:00",
                                       mem="1G"))
    check_golden("predict_merge.sbatch", render_merge_script(job))


def test_golden_submit_predict(tmp_path):
    scripts = predict_scripts(run="/runs/exp1", data="/data/survey.h5",
                              pred="/runs/exp1/predict/survey", n_shards=8, stage="classify",
                              batch_size=256, n_boot=1000,
                              profile=SlurmProfile(python="/opt/env/bin/python"))
    assert scripts.names() == ["predict.sbatch", "merge.sbatch", "submit.sh"]
    files = dict(scripts.files)
    check_golden("submit_predict.sh", files["submit.sh"])
    assert "#SBATCH --array=0-7\n" in files["predict.sbatch"]  # no throttle in the profile
    assert "--dependency=afterany:\"$predict\"" in files["submit.sh"]


def test_a_shard_takes_one_process_and_at_most_one_gpu():
    gpu = shard_resources(SlurmProfile(gpus_per_task=4, gpu_type="a100", ntasks_per_node=4))
    assert (gpu.ntasks_per_node, gpu.gpus, gpu.gpu_type) == (1, 1, "a100")
    cpu = shard_resources(SlurmProfile(cpus_per_task=3, ntasks_per_node=2))
    assert (cpu.ntasks_per_node, cpu.gpus, cpu.cpus_per_task) == (1, 0, 3)
    text = render_shard_script(shard_job(resources=gpu))
    assert "#SBATCH --gres=gpu:a100:1" in text and "#SBATCH --ntasks-per-node=1" in text


def test_resubmitted_shards_are_the_array_task_ids():
    text = render_shard_script(shard_job(shards=(1, 4, 5), array_parallelism=None))
    assert "#SBATCH --array=1,4-5\n" in text


def test_hostile_paths_reach_lens_predict_verbatim():
    pred = f"/tmp/{HOSTILE}/p"
    text = render_shard_script(shard_job(run=f"/tmp/{HOSTILE}", data=f"/d/{HOSTILE}.h5",
                                         pred=pred))
    line = next(ln for ln in text.splitlines() if ln.startswith("srun "))
    words = shlex.split(line.replace('"$SLURM_ARRAY_TASK_ID"', "7"))
    assert words[-1] == "&"  # run in the background, so the shell can forward SIGUSR2
    assert words[1:-1] == ["/opt/env/bin/python", "-m", "lens", "predict", f"/tmp/{HOSTILE}",
                         f"/d/{HOSTILE}.h5", "--out", pred, "--stage", "classify",
                         "--batch-size", "256", "--shard", "7/8"]
    merge = render_merge_script(MergeJob(pred=pred, n_shards=8, python=PY))
    line = next(ln for ln in merge.splitlines() if ln.startswith("srun "))
    assert shlex.split(line)[4:7] == ["predict", "--merge", pred]
    assert "100%%" in merge  # a literal % in the log path is escaped for Slurm


@pytest.mark.parametrize("changes, message", [
    (dict(n_shards=0), "--shards 0: must be at least 1"),
    (dict(shards=(2, 8)), r"shard\(s\) \[8\]: shards are 0..7"),
    (dict(pred="/runs/a\\b/p"), "backslash"),
    (dict(stage="classify\nrm -rf /"), "must be one line"),
])
def test_bad_values_are_refused(changes, message):
    with pytest.raises(LensError, match=message):
        render_shard_script(shard_job(**changes))
