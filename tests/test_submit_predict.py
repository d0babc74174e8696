"""`lens submit --stage predict` and `lens generate --stage predict`: checks before anything
is submitted, shard ids as array task ids on resubmission (against stand-in sbatch/sacct/
scancel), the shard and merge tasks, the debug and local executors, and (marked slurm) the
real local cluster: the merged output equals an unsharded `lens predict` of the same data.

One tiny 2-fold classify run (16 px, the small CNN, one epoch, made by `lens submit
--executor debug`, so it has a run.json) and its unsharded prediction are shared by every
test of this module.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from test_submit import TINY, cancel_driver, lens, sbatch_option, sbatch_scripts
from test_submit import fake_slurm as fake_slurm  # noqa: F401 (the fixture)
from test_train_data import make_packed
from typer.testing import CliRunner

from lens.cli import app
from lens.cluster import predict_submit, slurmcli
from lens.cluster.predict_submit import RECORD, PredictRequest, submit_predict
from lens.cluster.predict_tasks import MergeRunner, ShardRunner
from lens.cluster.profiles import load_profile
from lens.errors import LensError
from lens.predict.shards import predict_shard

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "slurm" / "profiles" / "local.toml"
DATASETS = ("index", "source", "split", "label", "prob", "fold_prob")
COMMON = ("--batch-size", "16", "--n-boot", "20")  # shard edges fall inside batches


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def standins(fake_slurm: Path) -> Path:
    """test_submit's sbatch/srun/sacct/scancel stand-ins; their record folder."""
    return fake_slurm


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(data file, run folder, unsharded prediction stem)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("predict-jobs")
    data = make_packed(root / "lenses.h5", n=160, n_test=40, n_folds=2, size=16)
    run = root / "run"
    sets = [x for item in TINY for x in ("--set", item)]
    assert lens("submit", "--stage", "classify", "--data", str(data), "--run", str(run),
                "--executor", "debug", *sets) == 0
    full = root / "full"
    assert lens("predict", str(run), str(data), "--out", str(full), *COMMON) == 0
    return data, run, full


def read_h5(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    with h5py.File(path, "r") as f:
        return {k: f[k][:] for k in DATASETS}, dict(f.attrs)


def assert_same_prediction(pred: Path, full: Path) -> None:
    """Arrays bitwise equal (same rows in the same order, same sources), same attributes,
    the same CSV and metrics files."""
    merged, merged_attrs = read_h5(pred.with_name(pred.name + ".h5"))
    ref, ref_attrs = read_h5(full.with_name(full.name + ".h5"))
    for name in DATASETS:
        np.testing.assert_array_equal(merged[name], ref[name], err_msg=name)
    assert merged_attrs == ref_attrs
    for suffix in (".csv", ".metrics.json"):
        assert pred.with_name(pred.name + suffix).read_bytes() == \
            full.with_name(full.name + suffix).read_bytes(), suffix


def submit_args(run: Path, data: Path, *args: str) -> list[str]:
    return ["submit", "--stage", "predict", "--run", str(run), "--data", str(data), *COMMON,
            *args]


def record(pred: Path) -> dict:
    return json.loads((pred.with_name(pred.name + ".parts") / RECORD).read_text())


# ---- checks before anything is submitted -----------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["--shards", "0"], "--shards 0: must be at least 1"),
    (["--shards", "161"], "holds 160 images; use at most 160 shards"),
    (["--shards", "2", "--batch-size", "0"], "--batch-size 0: must be at least 1"),
    (["--shards", "2", "--models", "pretrain"], "predictions come from classify or finetune"),
    (["--shards", "2", "--models", "finetune"], "no trained fold model"),
    (["--shards", "2", "--data", "{tmp}"], "is a folder; pack it once with `lens pack"),
    (["--shards", "2", "--data", "{tmp}/small.h5"], "the images are 8x8 pixels but the models "
                                                    "were trained on 16x16"),
    (["--shards", "2", "--run", "{tmp}/empty"], "no trained classify or finetune model"),
    (["--shards", "2", "--set", "epochs=1"], "--set: is for training stages"),
    (["--shards", "2", "--folds", "2"], "--folds: is for training stages"),
    ([], "--stage predict needs --shards N"),
])
def test_bad_input_is_refused_before_submission(trained, standins, tmp_path, capsys, args,
                                                message):
    data, run, _ = trained
    make_packed(tmp_path / "small.h5", n=20, n_test=0, n_folds=0, size=8)
    (tmp_path / "empty").mkdir()
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    base = submit_args(run, data, "--pred", str(tmp_path / "p"), "--executor", "slurm")
    for flag in ("--data", "--run", "--batch-size"):  # a later value wins: drop the default
        if flag in args and flag in base:
            i = base.index(flag)
            del base[i:i + 2]
    assert lens(*base, *args) != 0
    assert message in capsys.readouterr().err
    assert not sbatch_scripts(standins)  # nothing was submitted
    assert not list(tmp_path.glob("p*")) and not (run / "predict").exists()


def test_training_stages_refuse_prediction_options(trained, capsys):
    data, run, _ = trained
    assert lens("submit", "--stage", "classify", "--data", str(data), "--shards", "3") != 0
    assert "--shards: goes with --stage predict" in capsys.readouterr().err
    assert lens("submit", "--stage", "predict", "--data", str(data), "--shards", "3") != 0
    assert "needs --run RUN" in capsys.readouterr().err


def test_help_has_examples():
    for command in ("submit", "generate"):
        result = CliRunner().invoke(app, [command, "--help"])
        assert result.exit_code == 0 and "Examples:" in result.output
        assert f"lens {command} --stage predict --run runs/exp1 --data survey.h5" in \
            result.output


# ---- Slurm submissions against stand-in commands ----------------------------------------------


def _sacct(record_dir: Path, lines: list[str]) -> None:
    (record_dir / "sacct.txt").write_text(
        "".join(f"{line}|0:0|00:00:01|2024-01-01T00:00:00|Unknown\n" for line in lines))


def _pickled_shards(logs: Path, array: int) -> dict[int, int]:
    out = {}
    for path in logs.glob(f"{array}_*_submitted.pkl"):
        with open(path, "rb") as f:
            out[int(path.name.split("_")[1])] = pickle.load(f).function.shard
    return out


def test_resubmission_runs_only_missing_shards_as_their_own_array_ids(trained, standins,
                                                                     tmp_path, capsys):
    data, run, _ = trained
    pred = tmp_path / "preds" / "survey"
    parts = pred.with_name("survey.parts")
    args = submit_args(run, data, "--shards", "3", "--pred", str(pred), "--executor", "slurm",
                       "--profile", str(PROFILE))
    assert lens(*args) == 0
    out = capsys.readouterr().out
    assert "shards: array job 100, shards 0-2" in out and "merge: job 101 after" in out
    scripts = sbatch_scripts(standins)
    assert sbatch_option(scripts[100], "array") == "0-2%2"
    assert sbatch_option(scripts[100], "ntasks-per-node") == "1"
    assert sbatch_option(scripts[101], "dependency") == "afterany:100"
    assert "lens-predict-merge" in scripts[101]
    assert _pickled_shards(parts / "logs" / "predict", 100) == {0: 0, 1: 1, 2: 2}
    with open(parts / "logs" / "merge" / "101_submitted.pkl", "rb") as f:
        assert pickle.load(f).function == MergeRunner(str(pred), 3, 20)
    entry = record(pred)["submissions"][0]
    assert entry["array"]["job_id"] == "100" and entry["array"]["shards"] == [0, 1, 2]
    assert entry["merge"]["job_id"] == "101"

    # Shards 0 and 2 wrote their parts; shard 1 failed and the merge job failed.
    for shard in (0, 2):
        predict_shard(run, data, shard, 3, parts, stage="classify", batch_size=16)
    _sacct(standins, ["100_0|COMPLETED", "100_1|FAILED", "100_2|COMPLETED", "101|FAILED"])
    assert lens(*args) == 0
    out = capsys.readouterr().out
    assert "skipped shard(s) 0,2: complete" in out and "shards: array job 102, shards 1" in out
    scripts = sbatch_scripts(standins)
    assert sbatch_option(scripts[102], "array") == "1%2"  # array task id = shard id
    assert _pickled_shards(parts / "logs" / "predict", 102) == {1: 1}
    assert sbatch_option(scripts[103], "dependency") == "afterany:102"
    assert record(pred)["submissions"][1]["array"]["shards"] == [1]

    # Shard 1 still running, its merge queued: nothing new to submit.
    _sacct(standins, ["100_0|COMPLETED", "100_1|FAILED", "100_2|COMPLETED", "101|FAILED",
                        "102_1|RUNNING", "103|PENDING"])
    assert lens(*args) == 0
    out = capsys.readouterr().out
    assert "skipped shard 1: queued or running (job 102_1)" in out
    assert "nothing to submit" in out and "merge job 103 will merge them" in out
    assert len(sbatch_scripts(standins)) == 4

    # It failed after all: shard 1 again, and a new merge supersedes the queued one.
    _sacct(standins, ["100_0|COMPLETED", "100_1|FAILED", "100_2|COMPLETED", "101|FAILED",
                        "102_1|FAILED", "103|PENDING"])
    assert lens(*args) == 0
    assert "cancelled the earlier merge job(s) 103: superseded" in capsys.readouterr().out
    assert sbatch_option(sbatch_scripts(standins)[104], "array") == "1%2"
    assert (standins / "scancel.txt").read_text().split() == ["103"]


def test_every_part_there_submits_only_the_merge(trained, standins, tmp_path, capsys):
    data, run, _ = trained
    pred = tmp_path / "p"
    parts = tmp_path / "p.parts"
    for shard in (0, 1):
        predict_shard(run, data, shard, 2, parts, stage="classify", batch_size=16)
    args = submit_args(run, data, "--shards", "2", "--pred", str(pred), "--executor", "slurm",
                       "--profile", str(PROFILE))
    assert lens(*args) == 0
    out = capsys.readouterr().out
    assert "skipped shard(s) 0-1: complete" in out and "merge: job 100\n" in out
    assert list(sbatch_scripts(standins)) == [100]
    assert sbatch_option(sbatch_scripts(standins)[100], "dependency") is None


def test_parts_of_another_prediction_are_refused(trained, standins, tmp_path, capsys):
    data, run, _ = trained
    parts = tmp_path / "p.parts"
    predict_shard(run, data, 0, 4, parts, stage="classify", batch_size=16)
    args = submit_args(run, data, "--pred", str(tmp_path / "p"), "--executor", "slurm")
    assert lens(*args, "--shards", "3") != 0
    assert "holds the parts of another prediction (part_0.h5 has n_shards 4, now 3)" in \
        capsys.readouterr().err
    (tmp_path / "q.h5").write_bytes(b"")
    args = submit_args(run, data, "--pred", str(tmp_path / "q"), "--executor", "slurm")
    assert lens(*args, "--shards", "3") != 0
    assert "q.h5: already exists" in capsys.readouterr().err
    assert not sbatch_scripts(standins)


# ---- the tasks -----------------------------------------------------------------------------


def test_the_merge_job_fails_naming_the_missing_parts(trained, tmp_path, monkeypatch, capsys):
    data, run, _ = trained
    parts = tmp_path / "p.parts"
    for shard in (0, 2):
        predict_shard(run, data, shard, 3, parts, stage="classify", batch_size=16)
    with pytest.raises(LensError, match="missing 1 of 3 parts: part_1.h5"):
        MergeRunner(str(tmp_path / "p"), 3, 20)()  # in-process: the error itself
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    with pytest.raises(SystemExit) as exc:
        MergeRunner(str(tmp_path / "p"), 3, 20)()
    assert exc.value.code == 1
    assert "lens: merge failed:" in capsys.readouterr().err
    assert not (tmp_path / "p.h5").exists() and not (tmp_path / "p.csv").exists()


STOPPED_SHARD = """
import sys, time, types
from pathlib import Path
from lens.atomic import atomic_path
from lens.cluster.predict_tasks import ShardRunner

def slow(run, data, shard, n_shards, out_dir, **kwargs):  # a shard half-way through
    part = Path(out_dir) / f"part_{shard}.h5"
    with atomic_path(part) as tmp:
        tmp.write_text("half a part")
        print("writing", flush=True)
        time.sleep(60)
    return part

shards = types.ModuleType("lens.predict.shards")  # (without importing torch: faster)
shards.predict_shard = slow
sys.modules[shards.__name__] = shards
ShardRunner("run", "data.h5", sys.argv[1], 0, 2, "classify")()
"""


def _signal_when_writing(cmd: list[str], sig: int, env: dict | None = None) -> tuple[int, str]:
    """Run ``cmd``; once it prints "writing" (a part half-way through), send ``sig``; return
    (exit code, stderr)."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err


@pytest.mark.parametrize("sig", [signal.SIGUSR2, signal.SIGTERM])
def test_a_stopped_shard_drops_its_part_and_exits_75(tmp_path, sig):
    """SIGUSR2 (time limit): exit 75, so the host-side wrapper requeues the task; SIGTERM
    (scancel) the same exit, which the wrapper does not requeue. No half part is left."""
    parts = tmp_path / "parts"
    parts.mkdir()
    env = {**os.environ, "SUBMITIT_EXECUTOR": "slurm"}
    code, err = _signal_when_writing([sys.executable, "-c", STOPPED_SHARD, str(parts)], sig, env)
    assert code == 75, err
    assert f"stopped by {sig.name}; its part was not written" in err
    assert list(parts.iterdir()) == []


STOPPED_CLI_SHARD = """
import sys, time
from pathlib import Path
import lens.predict.shards as shards
from lens.atomic import atomic_path
from lens.cli import main

def slow(run, data, shard, n_shards, out_dir, **kwargs):  # a shard half-way through
    part = Path(out_dir) / f"part_{shard}.h5"
    part.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(part) as tmp:
        tmp.write_text("half a part")
        print("writing", flush=True)
        time.sleep(60)
    return part

shards.predict_shard = slow
main(["predict", "run", "data.h5", "--out", sys.argv[1], "--shard", "1/2"])
"""


@pytest.mark.parametrize("sig", [signal.SIGUSR2, signal.SIGTERM])
def test_lens_predict_shard_stops_cleanly_on_slurm_signals(tmp_path, sig):
    """What a generated predict.sbatch runs: on the SIGUSR2 its shell forwards (time limit)
    or on scancel's SIGTERM, exit 75 (the shell requeues the task) and leave no half part."""
    pred = tmp_path / "preds" / "survey"
    code, err = _signal_when_writing([sys.executable, "-c", STOPPED_CLI_SHARD, str(pred)], sig)
    assert code == 75, err
    assert f"shard 1/2: stopped by {sig.name}; its part was not written" in err
    assert list((tmp_path / "preds" / "survey.parts").iterdir()) == []


# ---- here: debug and local executors ---------------------------------------------------------


def test_debug_then_local_executor_equal_the_unsharded_prediction(trained, tmp_path, capsys):
    data, run, full = trained
    pred = tmp_path / "p"
    args = submit_args(run, data, "--shards", "3", "--pred", str(pred))
    assert lens(*args, "--executor", "debug") == 0
    out = capsys.readouterr().out
    assert "running shard(s) 0-2 here, then the merge" in out and "wrote " in out
    assert_same_prediction(pred, full)
    assert record(pred)["submissions"][0]["array"]["states"] == {
        "0": "COMPLETED", "1": "COMPLETED", "2": "COMPLETED"}

    (tmp_path / "p.parts" / "part_1.h5").unlink()
    assert lens(*args, "--executor", "local") == 0  # a subprocess for shard 1 only
    out = capsys.readouterr().out
    assert "skipped shard(s) 0,2: complete" in out and "running shard(s) 1 here" in out
    assert_same_prediction(pred, full)
    assert sorted(p.name for p in (tmp_path / "p.parts").glob("part_*")) == [
        "part_0.h5", "part_1.h5", "part_2.h5"]
    assert lens(*args, "--executor", "local") == 0
    assert "nothing to submit: every part is complete and merged" in capsys.readouterr().out


def test_a_failed_shard_is_reported_and_not_merged(trained, tmp_path, monkeypatch):
    data, run, _ = trained

    def broken(self):
        if self.shard == 1:
            raise RuntimeError("shard 1 broke")
        return original(self)

    original = ShardRunner.__call__
    monkeypatch.setattr(ShardRunner, "__call__", broken)
    monkeypatch.setattr("pdb.post_mortem", lambda *a: None)  # submitit's debug executor
    req = PredictRequest(run=run, data=data, n_shards=3, pred=tmp_path / "p",
                         profile=load_profile(PROFILE), batch_size=16, n_boot=20,
                         executor="debug")
    outcome = submit_predict(req)
    assert list(outcome.failed) == [1] and "shard 1 broke" in outcome.failed[1]
    assert not (tmp_path / "p.h5").exists() and not outcome.written
    assert record(tmp_path / "p")["submissions"][0]["merge"]["state"] == "NOT RUN"


def _processes_with(text: str) -> list[int]:
    """Live processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text in (entry / "cmdline").read_bytes().decode():
                found.append(int(entry.name))
        except OSError:
            pass
    return found


@pytest.mark.slow
def test_cancel_stops_a_local_prediction_and_its_running_shard(trained, tmp_path):
    """`lens cancel PRED` while `lens submit --stage predict --executor local` runs a shard:
    the shard is stopped (no orphan keeps predicting), the next never starts, no part is
    left, the driver exits 130 and the record says CANCELLED."""
    _, run, _ = trained
    big = make_packed(tmp_path / "big.h5", n=200_000, n_test=0, n_folds=0, size=16)
    pred = tmp_path / "p"
    driver = subprocess.Popen(
        [sys.executable, "-m", "lens", *submit_args(run, big, "--shards", "2", "--pred",
                                                    str(pred)),
         "--executor", "local", "--array-parallelism", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        states: dict = {}
        while states.get("0") != "RUNNING" and time.monotonic() < deadline:
            time.sleep(0.2)
            if (pred.parent / "p.parts" / RECORD).is_file():
                states = record(pred)["submissions"][-1]["array"]["states"]
        assert states.get("0") == "RUNNING", driver.stderr.read() if driver.poll() else ""
        assert _processes_with(str(pred.parent / "p.parts" / "logs"))  # the shard runs
        err = cancel_driver(driver, pred)
        assert "cancelled; submit the same command again to run the missing shards" in err
    finally:
        driver.kill()
    assert not _processes_with(str(pred.parent / "p.parts" / "logs"))
    sub = record(pred)["submissions"][-1]
    assert sub["array"]["states"] == {"0": "CANCELLED", "1": "CANCELLED"}
    assert sub["merge"]["state"] == "NOT RUN"
    assert not list((pred.parent / "p.parts").glob("part_*")) and not (tmp_path / "p.h5").exists()


def test_generate_writes_the_scripts_into_the_parts_folder(trained, tmp_path):
    data, run, _ = trained
    result = CliRunner().invoke(app, ["generate", "--stage", "predict", "--run", str(run),
                                      "--data", str(data), "--shards", "4",
                                      "--python", "/opt/py", "--array-parallelism", "2"])
    assert result.exit_code == 0, result.output
    slurm = run / "predict" / "lenses.parts" / "slurm"
    assert sorted(p.name for p in slurm.iterdir()) == ["merge.sbatch", "predict.sbatch",
                                                       "submit.sh"]
    text = (slurm / "predict.sbatch").read_text()
    assert "#SBATCH --array=0-3%2" in text
    assert (f"srun /opt/py -m lens predict {run} {data} --out {run}/predict/lenses "
            f"--stage classify --batch-size 256 --shard \"$SLURM_ARRAY_TASK_ID\"/4") in text
    result = CliRunner().invoke(app, ["generate", "--stage", "predict", "--run", str(run),
                                      "--data", str(data), "--shards", "4", "--set", "x=1"])
    assert result.exit_code != 0 and "--set: is for training stages" in str(result.exception)


# ---- on the local Slurm cluster ---------------------------------------------------------------


def _logs(parts: Path) -> str:
    out = [f"== {p.relative_to(parts)}\n{p.read_text(errors='replace')[-1500:]}"
           for p in sorted((parts / "logs").rglob("*.out"))] if parts.is_dir() else []
    return "\n".join(out) or "no logs"


def _submit_generated_scripts(run: Path, data: Path, tmp_path: Path, profile: Path
                              ) -> tuple[Path, dict[str, str]]:
    """`lens generate --stage predict` and its submit.sh: (PRED, {step: job id})."""
    one_thread = tmp_path / "one-thread.toml"
    one_thread.write_text(profile.read_text() + 'setup = ["export OMP_NUM_THREADS=1"]\n')
    pred = tmp_path / "gen"
    result = CliRunner().invoke(app, ["generate", "--stage", "predict", "--run", str(run),
                                      "--data", str(data), "--shards", "3", "--pred", str(pred),
                                      "--profile", str(one_thread), *COMMON])
    assert result.exit_code == 0, result.output
    done = subprocess.run(["bash", str(tmp_path / "gen.parts" / "slurm" / "submit.sh")],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return pred, dict(line.split() for line in done.stdout.splitlines())


@pytest.mark.slurm
@pytest.mark.slow
def test_sharded_prediction_on_the_cluster_equals_unsharded(slurm_cluster, trained, tmp_path,
                                                            monkeypatch, capsys):
    """`lens submit --stage predict --wait`, a resubmission after a lost part, and the
    scripts of `lens generate` submitted with sbatch (first: they run alongside)."""
    data, run, full = trained
    monkeypatch.setattr(predict_submit, "POLL_S", 1.0)
    gen_pred, ids = _submit_generated_scripts(run, data, tmp_path, slurm_cluster.profile)

    pred = tmp_path / "survey"
    parts = tmp_path / "survey.parts"
    args = submit_args(run, data, "--shards", "3", "--pred", str(pred), "--executor", "slurm",
                       "--profile", str(slurm_cluster.profile), "--wait")
    assert lens(*args) == 0, _logs(parts)
    out = capsys.readouterr().out
    assert "parts 3/3; merge job" in out and "COMPLETED" in out
    assert_same_prediction(pred, full)
    first = record(pred)["submissions"][0]
    states = slurmcli.job_states([first["array"]["job_id"], first["merge"]["job_id"]])
    assert sorted(s.state for s in states.values()) == ["COMPLETED"] * 4

    # A lost part: resubmitting runs an array of that shard only, then merges again.
    (parts / "part_1.h5").unlink()
    before = (parts / "part_0.h5").stat().st_mtime_ns
    assert lens(*args) == 0, _logs(parts)
    second = record(pred)["submissions"][1]
    assert second["array"]["shards"] == [1] and second["complete"] == 2
    script = (parts / "logs" / "predict" / f"{second['array']['job_id']}_submission.sh")
    assert "#SBATCH --array=1%2" in script.read_text()
    assert (parts / "part_0.h5").stat().st_mtime_ns == before
    assert_same_prediction(pred, full)

    # The training run's own status is untouched by its prediction jobs.
    capsys.readouterr()
    assert lens("status", str(run), "--json") == 0
    assert json.loads(capsys.readouterr().out)["summary"] == {
        "classify": {"COMPLETED": 2}, "report": {"COMPLETED": 1}}
    # ... and the prediction has its own: every shard and the second merge, from sacct.
    assert lens("status", str(pred), "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["summary"] == {"predict": {"COMPLETED": 3}, "merge": {"COMPLETED": 1}}
    assert shown["tasks"][1]["job_id"] == f"{second['array']['job_id']}_1"
    assert shown["tasks"][-1]["job_id"] == second["merge"]["job_id"]

    # The generated scripts: the merge ran after every shard, and merged the same files.
    states = slurmcli.wait_finished([ids["predict"], ids["merge"]], expected=4, timeout=240,
                                    poll=1)
    gen_parts = tmp_path / "gen.parts"
    assert all(s.state == "COMPLETED" for s in states.values()), (states, _logs(gen_parts))
    assert states[ids["merge"]].start >= max(states[f"{ids['predict']}_{i}"].end
                                             for i in range(3))
    assert_same_prediction(gen_pred, full)
    assert "merged 3 parts" in _logs(gen_parts)
