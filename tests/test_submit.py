"""`lens submit` without a cluster: submitit parameters from profiles, configs frozen into the
tasks, fold-indexed arrays and their chaining (against stand-in sbatch/sacct/scancel
commands), the host-side requeue wrapper, input checks, and a whole run in-process
(--executor debug).

The same commands against the real local Slurm cluster: tests/test_submit_slurm.py.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lens.cli import app, main
from lens.cluster import launch, manifest
from lens.cluster.options import StageInput
from lens.cluster.profiles import SlurmProfile, load_profile, with_overrides
from lens.cluster.status import process_alive
from lens.cluster.submit import Request, plan, prepare, submit
from lens.errors import LensError
from lens.train.config import load_config, to_dict

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
sys.path.insert(0, str(TESTS))
from test_train_data import make_packed  # noqa: E402

# Tiny, fast and deterministic training: what every end-to-end test of submit runs.
TINY = ("epochs=1", "batch_size=32", "n_boot=10", "num_workers=0", "deterministic=true",
        "model.name=cnn_attention", "device=cpu")


def tiny_inputs(stages: tuple[str, ...], *extra: str) -> dict[str, StageInput]:
    return {s: StageInput(None, (*TINY, *extra)) for s in stages}


def lens(*args: str) -> int:
    """The console entry point in-process (LensError -> exit code): its exit code."""
    try:
        main(list(args))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


@pytest.fixture(scope="module")
def data5(tmp_path_factory) -> Path:
    return make_packed(tmp_path_factory.mktemp("data") / "tiny.h5", n=120, size=16,
                       n_folds=5, n_test=20)


# ---- stand-ins for the Slurm commands ---------------------------------------------------------

FAKE_SBATCH = """#!/bin/bash
# Records each submission script and prints the next job id the way sbatch does.
dir="$FAKE_SLURM"
n=$(( $(cat "$dir/next" 2>/dev/null || echo 100) ))
echo $((n + 1)) > "$dir/next"
if [[ -e "$dir/fail_at" && "$(cat "$dir/fail_at")" == "$n" ]]; then
    echo "sbatch: error: Batch job submission failed: Invalid account" >&2; exit 1
fi
cp "${@: -1}" "$dir/sbatch_$n.sh"
echo "Submitted batch job $n"
"""
FAKE_SACCT = """#!/bin/bash
# Prints $FAKE_SLURM/sacct.txt (lines of JobID|State|ExitCode|Elapsed|Start|End).
cat "$FAKE_SLURM/sacct.txt" 2>/dev/null || true
"""
FAKE_SCANCEL = """#!/bin/bash
echo "$@" >> "$FAKE_SLURM/scancel.txt"
"""


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch) -> Path:
    """sbatch, srun, sacct and scancel stand-ins first on PATH; returns their record folder."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("sacct", FAKE_SACCT), ("scancel", FAKE_SCANCEL),
                       ("srun", "#!/bin/bash\nexit 0\n")):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    record = tmp_path / "fake-record"
    record.mkdir()
    monkeypatch.setenv("FAKE_SLURM", str(record))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return record


def sbatch_scripts(record: Path) -> dict[int, str]:
    return {int(p.stem.split("_")[1]): p.read_text() for p in record.glob("sbatch_*.sh")}


def sbatch_option(script: str, name: str) -> str | None:
    match = re.search(rf"^#SBATCH --{name}=(.*)$", script, re.M)
    return match.group(1) if match else None


# ---- profile -> submitit parameters ---------------------------------------------------------


@pytest.mark.parametrize("text, minutes", [
    ("30", 30), ("1:30", 2), ("00:30:00", 30), ("04:00:00", 240), ("1-12", 2160),
    ("1-12:30", 2190), ("1-00:00:01", 1441), ("0:10", 1),
])
def test_time_minutes(text, minutes):
    assert launch.time_minutes(text) == minutes


def test_time_minutes_rejects_junk():
    with pytest.raises(LensError, match="not a Slurm time"):
        launch.time_minutes("soon")


def test_array_parameters_from_a_gpu_profile():
    profile = load_profile(REPO / "slurm" / "profiles" / "gpu-cluster.example.toml")
    params = launch.array_parameters(profile, "finetune")
    assert params["ntasks_per_node"] == 4 and params["gres"] == "gpu:a100:4"
    assert params["time"] == 480 and params["cpus_per_task"] == 8 and params["mem"] == "128G"
    assert params["signal_delay_s"] == 300 and params["job_name"] == "lens-finetune"
    assert params["additional_parameters"] == {"requeue": True, "mail-type": "END,FAIL",
                                               "exclusive": True}
    report = launch.report_parameters(profile)
    assert report["partition"] == "cpu" and report["ntasks_per_node"] == 1
    assert "gres" not in report and report["mem"] == "8G" and report["time"] == 30


def test_cpu_ranks_come_from_ntasks_per_node():
    assert launch.ranks_per_task(SlurmProfile()) == 1
    assert launch.ranks_per_task(SlurmProfile(ntasks_per_node=2)) == 2
    assert launch.ranks_per_task(SlurmProfile(gpus_per_task=4)) == 4


# ---- the resolved config travels with the task ------------------------------------------------


@pytest.mark.parametrize("stage, sets", [
    ("classify", ("epochs=3", "optim.lr=3e-05", "model.name=vit_tiny", "augment.max_shift=2")),
    ("pretrain", ("method.name=byol", "method.params.tau=0.99", "data_on_device=true")),
    ("finetune", ("finetune.mode=full", "precision=bf16", "memory_limit_gb=0.5")),
])
def test_config_overrides_rebuild_the_config_exactly(stage, sets):
    cfg = to_dict(load_config(stage, None, sets))
    items = launch.config_overrides(cfg)
    assert to_dict(load_config(stage, None, items)) == cfg
    assert any(i.startswith("optim.lr=") for i in items)


# ---- fold-indexed arrays ---------------------------------------------------------------------


def test_submit_folds_uses_fold_ids_as_array_task_ids(fake_slurm, tmp_path):
    params = launch.array_parameters(SlurmProfile(partition="debug"), "classify")
    executor = launch.make_slurm_executor(tmp_path / "logs", "/opt/py", params, 3)
    runners = {f: launch.TaskRunner("classify", "/d.h5", f, "/run") for f in (3, 1)}
    jobs = executor.submit_folds(runners, parallelism=2)
    assert {f: j.job_id for f, j in jobs.items()} == {1: "100_1", 3: "100_3"}
    script = sbatch_scripts(fake_slurm)[100]
    assert sbatch_option(script, "array") == "1,3%2"
    assert "#SBATCH --requeue" in script and sbatch_option(script, "signal") == "USR2@120"
    assert "srun --unbuffered --output" in script
    assert "/opt/py -u -m submitit.core._submit" in script
    for fold in (1, 3):  # array task K unpickles the runner of fold K
        with open(tmp_path / "logs" / f"100_{fold}_submitted.pkl", "rb") as f:
            assert pickle.load(f).function.fold == fold
    assert sorted(p.name for p in (tmp_path / "logs").glob("*.pkl")) == [
        "100_1_submitted.pkl", "100_3_submitted.pkl"]


def test_a_refused_sbatch_is_a_lens_error(fake_slurm, tmp_path):
    (fake_slurm / "fail_at").write_text("100")
    executor = launch.make_slurm_executor(tmp_path / "logs", "/opt/py", {"partition": "x"}, 1)
    with pytest.raises(LensError, match="Invalid account"):
        executor.submit_folds({0: launch.TaskRunner("classify", "/d.h5", 0, "/run")})
    assert not list((tmp_path / "logs").glob("*.pkl"))


def _request(data: Path, run: Path, experiment: str, **changes) -> Request:
    from lens.cluster.plan import array_stages

    fields = dict(experiment=experiment, data=data, run=run, executor="slurm",
                  inputs=tiny_inputs(array_stages(experiment)),
                  profile=load_profile(REPO / "slurm" / "profiles" / "local.toml"),
                  command=("lens", "submit", "--stage", experiment))
    fields.update(changes)
    return Request(**fields)


def test_stage_all_chains_pretrain_finetune_report(fake_slurm, data5, tmp_path):
    run = tmp_path / "run"
    outcome = submit(_request(data5, run, "all"))
    scripts = sbatch_scripts(fake_slurm)
    assert [(a.stage, a.job_id, a.folds, a.dependency) for a in outcome.arrays] == [
        ("pretrain", "100", (0, 1, 2, 3, 4), None),
        ("finetune", "101", (0, 1, 2, 3, 4), "aftercorr:100")]
    assert outcome.report_job == "102"
    assert sbatch_option(scripts[100], "array") == "0-4%2"
    assert sbatch_option(scripts[100], "dependency") is None
    assert sbatch_option(scripts[101], "dependency") == "aftercorr:100"
    assert sbatch_option(scripts[101], "kill-on-invalid-dep") == "yes"
    assert sbatch_option(scripts[102], "dependency") == "afterany:100:101"
    assert sbatch_option(scripts[102], "array") is None
    assert "requeue.sh" in scripts[100] and "requeue.sh" not in scripts[102]
    # The manifest: inputs, resolved configs, job ids per stage and fold, logs.
    data = json.loads((run / "run.json").read_text())
    assert data["data"]["sha256"] == manifest.sha256(data5) and data["data"]["n_folds"] == 5
    assert data["stages"]["pretrain"]["folds"] == 5
    assert data["stages"]["finetune"]["config"]["model"]["name"] == "cnn_attention"
    assert data["jobs"]["finetune"]["3"]["job_id"] == "101_3"
    assert data["jobs"]["finetune"]["3"]["log"] == str(run / "logs/finetune/101_3_0_log.out")
    assert data["reports"][-1]["job_id"] == "102"
    assert data["submissions"][-1]["experiment"] == "all"
    assert data["submissions"][-1]["command"] == ["lens", "submit", "--stage", "all"]
    assert data["lens_version"] and "git_revision" in data
    wrapper = run / "logs" / "requeue.sh"
    assert wrapper.is_file() and "((restarts >= 5))" in wrapper.read_text()


def _complete(run: Path, stage: str, fold: int, encoder: bool = False) -> None:
    d = run / stage / f"fold_{fold}"
    d.mkdir(parents=True, exist_ok=True)
    (d / "result.json").write_text(json.dumps({"status": "completed", "stage": stage,
                                               "fold": fold, "restarts": 0}))
    if encoder:
        (d / "encoder.pt").write_bytes(b"")


def test_resubmission_runs_only_missing_folds_and_chains_onto_live_pretraining(
        fake_slurm, data5, tmp_path):
    run = tmp_path / "run"
    submit(_request(data5, run, "all"))  # 100 pretrain, 101 finetune, 102 report
    for fold in (0, 2, 3):
        _complete(run, "pretrain", fold, encoder=True)
    _complete(run, "finetune", 0)
    _complete(run, "finetune", 3)
    # sacct: pretrain 1 still running, 4 failed; finetune 4 was cancelled (invalid dep)
    (fake_slurm / "sacct.txt").write_text("\n".join([
        "100_0|COMPLETED|0:0|00:00:10|x|x", "100_1|RUNNING|0:0|00:00:10|x|x",
        "100_2|COMPLETED|0:0|00:00:10|x|x", "100_3|COMPLETED|0:0|00:00:10|x|x",
        "100_4|FAILED|1:0|00:00:03|x|x", "101_[1-2,4]|PENDING|0:0|00:00:00|x|x",
        "101_0|COMPLETED|0:0|00:00:01|x|x", "101_3|COMPLETED|0:0|00:00:01|x|x",
        "102|PENDING|0:0|00:00:00|x|x"]) + "\n")
    prep = prepare(_request(data5, run, "all"))
    p = plan(prep)
    assert p.folds == {"pretrain": [4], "finetune": []}  # 101_1, 101_2, 101_4 still pending
    # Now finetune 1, 2, 4 are gone from the queue (cancelled): run them again.
    text = (fake_slurm / "sacct.txt").read_text().replace("101_[1-2,4]|PENDING",
                                                         "101_[1-2,4]|CANCELLED")
    (fake_slurm / "sacct.txt").write_text(text)
    outcome = submit(_request(data5, run, "all"))
    assert [(a.stage, a.folds, a.dependency) for a in outcome.arrays] == [
        ("pretrain", (4,), None),
        ("finetune", (2,), None),  # its encoder exists: it can start at once
        ("finetune", (1,), "aftercorr:100"),  # waits for pretrain 1, still running in 100
        ("finetune", (4,), "aftercorr:103")]  # waits for the new pretrain array
    scripts = sbatch_scripts(fake_slurm)
    assert sbatch_option(scripts[103], "array") == "4%2"
    # the report waits for every array of the run still at work, and replaces report 102
    assert sbatch_option(scripts[107], "dependency") == "afterany:100:103:104:105:106"
    assert (fake_slurm / "scancel.txt").read_text().split() == ["102"]
    data = json.loads((run / "run.json").read_text())
    assert data["jobs"]["finetune"]["0"]["job_id"] == "101_0"  # untouched
    assert data["jobs"]["finetune"]["4"]["job_id"] == "106_4"
    assert data["jobs"]["pretrain"]["4"]["job_id"] == "103_4"
    assert len(data["submissions"]) == 2 and len(data["reports"]) == 2


def test_finetune_alone_needs_an_encoder_or_a_live_pretraining(fake_slurm, data5, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(LensError, match=r"finetune fold\(s\) 0, 1, 2, 3, 4: no pretrained"):
        submit(_request(data5, run, "finetune"))
    assert not run.exists()  # nothing left behind
    submit(_request(data5, run, "pretrain"))  # 100 pretrain, 101 report
    (fake_slurm / "sacct.txt").write_text("100_[0-4%2]|PENDING|0:0|00:00:00|x|x\n"
                                          "101|PENDING|0:0|00:00:00|x|x\n")
    outcome = submit(_request(data5, run, "finetune"))
    assert [(a.stage, a.job_id, a.dependency) for a in outcome.arrays] == [
        ("finetune", "102", "aftercorr:100")]
    assert outcome.report_job == "103"
    assert sbatch_option(sbatch_scripts(fake_slurm)[103], "dependency") == "afterany:100:102"
    assert (fake_slurm / "scancel.txt").read_text().split() == ["101"]  # superseded
    assert manifest.read(run)["reports"][0]["superseded_by"] == "103"


def test_a_failed_sbatch_cancels_what_was_submitted(fake_slurm, data5, tmp_path):
    (fake_slurm / "fail_at").write_text("101")
    run = tmp_path / "run"
    with pytest.raises(LensError, match="Invalid account"):
        submit(_request(data5, run, "all"))
    assert (fake_slurm / "scancel.txt").read_text().split() == ["100"]
    assert not run.exists()


def test_everything_complete_submits_nothing(fake_slurm, data5, tmp_path):
    run = tmp_path / "run"
    submit(_request(data5, run, "classify"))
    for fold in range(5):
        _complete(run, "classify", fold)
    outcome = submit(_request(data5, run, "classify"))
    assert outcome.plan.empty and not outcome.arrays and outcome.report_job is None
    assert len(sbatch_scripts(fake_slurm)) == 2


# ---- input checks ----------------------------------------------------------------------------


def test_folds_must_match_the_packed_file(data5, tmp_path):
    with pytest.raises(LensError, match="packed with 5 folds; use --folds 5"):
        prepare(_request(data5, tmp_path / "r", "classify", folds=3, executor="local"))


def test_a_file_without_folds_is_refused(tmp_path):
    data = make_packed(tmp_path / "nofolds.h5", n=40, size=16, n_folds=0, n_test=0)
    with pytest.raises(LensError, match="has no cross-validation folds"):
        prepare(_request(data, tmp_path / "r", "classify", executor="local"))


def test_a_run_refuses_other_data_and_other_configs(data5, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    data = manifest.new(run)
    data["data"] = manifest.file_identity(data5)
    data["stages"]["classify"] = {"folds": 5, "config": to_dict(load_config(
        "classify", None, (*TINY, "epochs=2")))}
    manifest.write(run, data)
    with pytest.raises(LensError, match=r"ran with another config \(epochs: 2 -> 1\)"):
        prepare(_request(data5, run, "classify", executor="local"))
    other = make_packed(tmp_path / "other.h5", n=60, size=16, n_folds=5, n_test=0, seed=1)
    with pytest.raises(LensError, match="was made from .*tiny.h5"):
        prepare(_request(other, run, "classify", executor="local"))


FAKE_APPTAINER = """#!/bin/bash
# apptainer exec [--nv] [--bind B] IMAGE python ARGS...: run ARGS with this machine's Python
# (or, for the version probe, print $FAKE_IMAGE_PYTHON).
shift
while [[ "$1" == --* ]]; do [[ "$1" == --bind ]] && shift; shift; done
shift 2
if [[ -n "${FAKE_IMAGE_PYTHON:-}" && "$*" == *version_info* ]]; then
    echo "$FAKE_IMAGE_PYTHON"; exit 0
fi
exec "$FAKE_PYTHON" "$@"
"""


@pytest.fixture
def fake_apptainer(tmp_path, monkeypatch) -> Path:
    bin_dir = tmp_path / "apptainer-bin"
    bin_dir.mkdir()
    (bin_dir / "apptainer").write_text(FAKE_APPTAINER)
    (bin_dir / "apptainer").chmod(0o755)
    monkeypatch.setenv("FAKE_PYTHON", sys.executable)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    image = tmp_path / "lens.sif"
    image.write_bytes(b"not really an image")
    return image


def test_container_python_must_match(fake_apptainer, data5, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_IMAGE_PYTHON", "(3, 9)")
    profile = with_overrides(SlurmProfile(), container=str(fake_apptainer))
    with pytest.raises(LensError, match="has Python 3.9 but lens runs here on Python 3.11"):
        prepare(_request(data5, tmp_path / "r", "classify", executor="local", profile=profile))


def test_container_binds_must_exist(fake_apptainer, data5, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_IMAGE_PYTHON", str(tuple(sys.version_info[:2])))
    profile = with_overrides(SlurmProfile(), container=str(fake_apptainer),
                             binds=[str(tmp_path / "nowhere")])
    with pytest.raises(LensError, match="bind source .*nowhere does not exist"):
        submit(_request(data5, tmp_path / "r", "classify", executor="local", profile=profile))
    missing = with_overrides(SlurmProfile(), container=str(tmp_path / "none.sif"))
    with pytest.raises(LensError, match="none.sif does not exist"):
        prepare(_request(data5, tmp_path / "r", "classify", executor="local", profile=missing))


def test_submit_errors_exit_non_zero_with_the_message(data5, tmp_path, capsys):
    code = lens("submit", "--stage", "classify", "--data", str(data5), "--folds", "4",
                "--run", str(tmp_path / "r"), "--executor", "local")
    assert code == 1 and "packed with 5 folds" in capsys.readouterr().err
    code = lens("submit", "--stage", "classify", "--data", str(tmp_path / "none.h5"),
                "--executor", "local")
    assert code == 1 and "no such data file" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("command", ["submit", "status", "cancel", "demo"])
def test_help_has_examples(command):
    result = CliRunner().invoke(app, [command, "--help"])
    assert result.exit_code == 0 and "Examples:" in result.output


# ---- the host-side requeue wrapper ----------------------------------------------------------


CHILD = """#!/bin/bash
# Waits for SIGUSR2 or SIGTERM (or not), then exits with $CHILD_CODE.
trap 'echo usr2 >> "$REC/child"; exit $CHILD_CODE' USR2
trap 'echo term >> "$REC/child"; exit $CHILD_CODE' TERM
touch "$REC/started"
if [[ "${CHILD_WAIT:-0}" == 1 ]]; then for i in $(seq 300); do sleep 0.1; done; fi
exit "$CHILD_CODE"
"""


def _wrapper_run(tmp_path: Path, *, procid: str, code: int, send: str | None) -> tuple[int, str]:
    rec = tmp_path / "rec"
    rec.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/bash\necho "$@" >> {rec}/scontrol\n')
    (bin_dir / "scontrol").chmod(0o755)
    child = tmp_path / "child.sh"
    child.write_text(CHILD)
    wrapper = tmp_path / "requeue.sh"
    wrapper.write_text(launch.render_wrapper(max_requeues=3))
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "REC": str(rec),
           "CHILD_CODE": str(code), "CHILD_WAIT": "1" if send else "0", "SLURM_PROCID": procid,
           "SLURM_ARRAY_JOB_ID": "7", "SLURM_ARRAY_TASK_ID": "3", "SLURM_RESTART_COUNT": "1"}
    proc = subprocess.Popen(["bash", str(wrapper), "bash", str(child)], env=env,
                            stderr=subprocess.PIPE, text=True)
    if send:
        deadline = time.monotonic() + 10
        while not (rec / "started").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(getattr(signal, send))
    _, err = proc.communicate(timeout=30)
    requeued = (rec / "scontrol").read_text() if (rec / "scontrol").exists() else ""
    return proc.returncode, requeued


@pytest.mark.parametrize("procid, code, send, exit_code, requeued", [
    ("0", 75, "SIGUSR2", 0, "requeue 7_3\n"),  # time limit: checkpoint, requeue from here
    ("1", 75, "SIGUSR2", 75, ""),  # only rank 0 requeues
    ("0", 75, "SIGTERM", 75, ""),  # scancel: checkpointed, but stays cancelled
    ("0", 0, None, 0, ""),
    ("0", 3, None, 3, ""),
])
def test_wrapper_requeues_after_usr2_only(tmp_path, procid, code, send, exit_code, requeued):
    assert _wrapper_run(tmp_path, procid=procid, code=code, send=send) == (exit_code, requeued)


# ---- a whole run in-process ------------------------------------------------------------------


def test_debug_executor_runs_every_fold_and_reports(one_torch_thread, tmp_path, capsys):
    data = make_packed(tmp_path / "d.h5", n=100, size=16, n_folds=2, n_test=0)
    run = tmp_path / "run"
    sets = [x for item in TINY for x in ("--set", item)]
    code = lens("submit", "--stage", "classify", "--data", str(data), "--folds", "2",
                "--run", str(run), "--executor", "debug", *sets)
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"report: {run / 'report.md'}" in out and "classify: macro AUC" in out
    report = json.loads((run / "report.json").read_text())
    assert report["complete"] and report["stages"]["classify"]["completed"] == 2
    data_json = json.loads((run / "run.json").read_text())
    assert {e["state"] for e in data_json["jobs"]["classify"].values()} == {"COMPLETED"}
    assert data_json["reports"][-1]["state"] == "COMPLETED"
    # The same command again: nothing left to run.
    code = lens("submit", "--stage", "classify", "--data", str(data), "--run", str(run),
                "--executor", "debug", *sets)
    assert code == 0 and "nothing to submit" in capsys.readouterr().out


EARLY_USR2 = """
import os, signal, sys
import lens.train.task as task
from lens.cluster.launch import TaskRunner

original = task.run_task

def run_task(spec):  # the time-limit signal lands while the task is still starting
    os.kill(os.getpid(), signal.SIGUSR2)
    return original(spec)

task.run_task = run_task
TaskRunner("classify", sys.argv[1], 0, sys.argv[2], tuple(sys.argv[3:]), threads=1)()
"""


@pytest.mark.slow
def test_a_signal_while_the_task_starts_is_a_requeue_not_a_failure(tmp_path):
    """A submitit task (here: as the local executor starts it) that gets SIGUSR2 before
    training checkpoints at the first step and exits 75; run again, it completes."""
    data = make_packed(tmp_path / "d.h5", n=100, size=16, n_folds=2, n_test=0)
    env = {**os.environ, "SUBMITIT_EXECUTOR": "local", "SUBMITIT_LOCAL_JOB_ID": "1",
           "SUBMITIT_LOCAL_NTASKS": "1", "SUBMITIT_LOCAL_GLOBALID": "0",
           "SUBMITIT_LOCAL_LOCALID": "0", "SUBMITIT_LOCAL_NODEID": "0",
           "SUBMITIT_LOCAL_JOB_NUM_NODES": "1"}
    run = tmp_path / "run"
    cfg = to_dict(load_config("classify", None, (*TINY, "epochs=2")))
    argv = [sys.executable, "-c", EARLY_USR2, str(data), str(run),
            *launch.config_overrides(cfg)]
    first = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 75, first.stderr
    assert "stopped by SIGUSR2" in first.stderr
    assert (run / "classify" / "fold_0" / "checkpoint.pt").is_file()
    second = subprocess.run([*argv[:2], argv[2].replace("os.kill(os.getpid(), signal.SIGUSR2)",
                                                        "pass"), *argv[3:]],
                            env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    result = json.loads((run / "classify" / "fold_0" / "result.json").read_text())
    assert result["restarts"] == 1 and result["epochs"] == 2


def cancel_driver(driver: subprocess.Popen, target: Path) -> str:
    """`lens cancel TARGET` while ``driver`` (a local `lens submit`) runs: it is signalled
    and exits 130; its stderr."""
    cancelled = subprocess.run([sys.executable, "-m", "lens", "cancel", str(target)],
                               capture_output=True, text=True, timeout=60)
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"SIGTERM to lens submit (pid {driver.pid})" in cancelled.stdout
    _, err = driver.communicate(timeout=120)
    assert driver.returncode == 130, err
    return err


@pytest.mark.slow
def test_cancel_stops_a_local_run(tmp_path):
    """`lens cancel` on a run that `lens submit --executor local` is driving: the running
    task checkpoints and stops, the queued one never starts, the driver exits 130."""
    data = make_packed(tmp_path / "d.h5", n=100, size=16, n_folds=2, n_test=0)
    run = tmp_path / "run"
    sets = [x for item in (*TINY, "epochs=400") for x in ("--set", item)]
    driver = subprocess.Popen(
        [sys.executable, "-m", "lens", "submit", "--stage", "classify", "--data", str(data),
         "--run", str(run), "--executor", "local", "--array-parallelism", "1", *sets],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        metrics = run / "classify" / "fold_0" / "metrics.jsonl"
        deadline = time.monotonic() + 120
        while not metrics.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert metrics.exists(), driver.stderr.read() if driver.poll() is not None else ""
        controller = int(manifest.read(run)["jobs"]["classify"]["0"]["job_id"])
        err = cancel_driver(driver, run)
        assert "cancelled; submit the same command again to resume" in err
    finally:
        driver.kill()
    jobs = manifest.read(run)["jobs"]["classify"]
    assert (jobs["0"]["state"], jobs["1"]["state"]) == ("CANCELLED", "CANCELLED")
    assert (run / "classify" / "fold_0" / "checkpoint.pt").is_file()
    assert not (run / "classify" / "fold_1").exists()
    assert not process_alive(controller, "submitit")


def test_container_jobs_run_each_rank_in_the_image(fake_slurm, fake_apptainer, data5, tmp_path,
                                                   monkeypatch):
    monkeypatch.setenv("FAKE_IMAGE_PYTHON", str(tuple(sys.version_info[:2])))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    profile = with_overrides(load_profile(REPO / "slurm" / "profiles" / "local.toml"),
                             container=str(fake_apptainer), binds=[f"{scratch}:/scratch:ro"],
                             gpus_per_task=2)
    run = tmp_path / "run"
    submit(_request(data5, run, "classify", profile=profile))
    scripts = sbatch_scripts(fake_slurm)
    task = (f"bash {run}/logs/requeue.sh apptainer exec --nv --bind "
            f"{data5.parent},{run},{scratch}:/scratch:ro {fake_apptainer} python "
            f"-u -m submitit.core._submit {run}/logs/classify")
    assert task in scripts[100]
    assert sbatch_option(scripts[100], "gres") == "gpu:2"
    assert sbatch_option(scripts[100], "ntasks-per-node") == "2"
    report = (f"apptainer exec --bind {run},{scratch}:/scratch:ro {fake_apptainer} python "
              f"-u -m submitit.core._submit {run}/logs/report")
    assert report in scripts[101] and "requeue.sh" not in scripts[101]
    container = manifest.read(run)["container"]
    assert container["path"] == str(fake_apptainer)
    assert container["python"] == f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert container["sha256"] == manifest.sha256(fake_apptainer)


@pytest.mark.slow
def test_local_run_through_the_container_command(fake_apptainer, tmp_path, monkeypatch):
    """The image stand-in runs this machine's Python: the tasks really go through
    `apptainer exec ... python -u -m submitit.core._submit`."""
    monkeypatch.setenv("FAKE_IMAGE_PYTHON", str(tuple(sys.version_info[:2])))
    data = make_packed(tmp_path / "d.h5", n=100, size=16, n_folds=2, n_test=0)
    run = tmp_path / "run"
    sets = [x for item in TINY for x in ("--set", item)]
    assert lens("submit", "--stage", "classify", "--data", str(data), "--run", str(run),
                "--executor", "local", "--container", str(fake_apptainer), *sets) == 0
    report = json.loads((run / "report.json").read_text())
    assert report["complete"] and report["stages"]["classify"]["completed"] == 2
