"""Cluster profiles: TOML loading, validation with clear messages, command-line overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from lens.cluster.options import cluster_profile, stage_inputs
from lens.cluster.profiles import VALID_KEYS, SlurmProfile, load_profile, with_overrides
from lens.errors import LensError

PROFILES = Path(__file__).resolve().parents[1] / "slurm" / "profiles"


def _write(tmp_path: Path, text: str, name: str = "site.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_shipped_profiles_load():
    local = load_profile(PROFILES / "local.toml")
    assert (local.name, local.partition, local.account) == ("local", "debug", "lens")
    assert local.gpus_per_task == 0 and local.container is None
    gpu = load_profile(PROFILES / "gpu-cluster.example.toml")
    assert gpu.gpus_per_task == 4 and gpu.gpu_type == "a100" and gpu.cpus_per_task == 8
    assert gpu.setup[0] == "module load apptainer"
    assert gpu.binds == ("/scratch/my-project", "/datasets/deeplense:/data:ro")
    assert gpu.extra_sbatch == ("--mail-type=END,FAIL", "--exclusive")


def test_unknown_key_lists_valid_keys(tmp_path):
    path = _write(tmp_path, 'partition = "gpu"\npartiton = "cpu"\n')
    with pytest.raises(LensError) as err:
        load_profile(path)
    msg = str(err.value)
    assert str(path) in msg and "partiton" in msg
    assert all(key in msg for key in VALID_KEYS)


@pytest.mark.parametrize("text, words", [
    ('gpus_per_task = "4"', ["gpus_per_task", "int"]),
    ("gpus_per_task = true", ["gpus_per_task"]),
    ('time = "four hours"', ["time", "Slurm time"]),
    ('mem = "16 GB"', ["mem", "Slurm size"]),
    ("cpus_per_task = 0", ["cpus_per_task", "at least 1"]),
    ("array_parallelism = 0", ["array_parallelism", "at least 1"]),
    ('extra_sbatch = ["--mail-user=$USER"]', ["extra_sbatch", "no shell variables"]),
    ('extra_sbatch = ["mail-type=END"]', ["extra_sbatch"]),
    ('partition = "gpu debug"', ["partition", "non-empty word"]),
    ("setup = [1]", ["setup", "list of strings"]),
    ('[container]\nimage = "x.sif"', ["container", "not a [table]"]),
    ('time = "1:00:00\\n#SBATCH --x"', ["time"]),
    ("this is not toml", ["not valid TOML"]),
])
def test_bad_values_are_named(tmp_path, text, words):
    path = _write(tmp_path, text + "\n")
    with pytest.raises(LensError) as err:
        load_profile(path)
    assert all(w in str(err.value) for w in words), str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(LensError, match="no such profile file"):
        load_profile(tmp_path / "nope.toml")


@pytest.mark.parametrize("time", ["30", "30:00", "04:00:00", "1-12", "1-12:30", "2-00:00:00"])
def test_slurm_time_formats(time):
    assert SlurmProfile(time=time).time == time


def test_overrides_replace_values_and_extend_lists(tmp_path):
    base = load_profile(_write(tmp_path, 'partition = "gpu"\ntime = "08:00:00"\n'
                               'binds = ["/scratch"]\naccount = "proj"\n'))
    merged = with_overrides(base, partition="debug", time=None, gpus_per_task=2,
                            binds=["/data"], account=None)
    assert merged.partition == "debug"  # given: replaces
    assert merged.time == "08:00:00" and merged.account == "proj"  # None: kept
    assert merged.gpus_per_task == 2
    assert merged.binds == ("/scratch", "/data")  # lists: appended
    assert base.partition == "gpu"  # frozen: the original is untouched


def test_overrides_are_validated_and_unknown_names_rejected():
    with pytest.raises(LensError, match="time"):
        with_overrides(SlurmProfile(), time="soon")
    with pytest.raises(LensError, match="unknown profile setting"):
        with_overrides(SlurmProfile(), partitions="x")


def test_cluster_profile_from_options(tmp_path):
    path = _write(tmp_path, 'partition = "gpu"\ncpus_per_task = 8\n', "gpu.toml")
    prof = cluster_profile(path, partition="short", mem="8G", container=Path("img.sif"),
                           binds=["/a"], python=None)
    assert (prof.name, prof.partition, prof.cpus_per_task, prof.mem) == ("gpu", "short", 8, "8G")
    assert prof.container == "img.sif" and prof.binds == ("/a",)
    assert cluster_profile() == SlurmProfile()


def test_stage_inputs_split_per_stage():
    inputs = stage_inputs(
        ("pretrain", "finetune"),
        ["pretrain=jobs/p.toml", "finetune=jobs/f.toml"],
        ["seed=3", "pretrain:epochs=50", "finetune:optim.lr=0.01", "finetune:note=a:b=c"],
    )
    assert inputs["pretrain"].config == "jobs/p.toml"
    assert inputs["pretrain"].sets == ("seed=3", "epochs=50")
    assert inputs["finetune"].sets == ("seed=3", "optim.lr=0.01", "note=a:b=c")
    shared = stage_inputs(("classify",), ["my=odd.toml"], None)
    assert shared["classify"].config == "my=odd.toml"  # not a stage name: a path
    with pytest.raises(LensError, match="not part of this experiment"):
        stage_inputs(("classify",), None, ["finetune:epochs=1"])
    with pytest.raises(LensError, match="KEY=VALUE"):
        stage_inputs(("classify",), None, ["epochs"])
    with pytest.raises(LensError, match="twice"):
        stage_inputs(("classify",), ["a.toml", "classify=b.toml"], None)
