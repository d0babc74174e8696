"""Faults on the real local Slurm cluster (slurm/dev/start.sh), through the scripts that
`lens generate` writes: a time limit too short for the epochs, preemption (`scontrol
requeue`), a hard kill of a task, a fold that raises, and the requeue path when the task
runs inside a container command that has no `scontrol`.

Real `lens train` tasks on tiny data (32 px, the small CNN, deterministic CPU settings, one
thread). What must hold after each fault: the task completes (or is reported as failed with
the truth in sacct), no epoch is trained twice or skipped, a resumed task ends with exactly
the metrics of an uninterrupted one, and completed folds are never touched again.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from test_generate import _logs, invoke
from test_train_data import make_packed

from lens.cluster import slurmcli

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
# A run folder name a shell could misread: every fault below runs in one.
ODD = "run 'q' $(touch pwned) x"
TINY = """\
epochs = {epochs}
batch_size = 16
num_workers = 0
device = "cpu"
deterministic = true
n_boot = 0
[model]
name = "cnn_attention"
"""


def write_config(path: Path, epochs: int) -> Path:
    path.write_text(TINY.format(epochs=epochs))
    return path


def write_profile(path: Path, base: Path, **values: object) -> Path:
    """The local profile with some values replaced; one thread per task (deterministic)."""
    lines = [x for x in base.read_text().splitlines()
             if x.split("=")[0].strip() not in values]
    lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    lines.append('setup = ["export OMP_NUM_THREADS=1"]')
    path.write_text("\n".join(lines) + "\n")
    return path


def generate(data: Path, run: Path, config: Path, profile: Path, *extra: str) -> Path:
    result = invoke(["--stage", "classify", "--data", str(data), "--run", str(run),
                     "--config", str(config), "--profile", str(profile), *extra])
    assert result.exit_code == 0, result.output
    return run / "slurm"


def submit_sh(scripts: Path, cwd: Path) -> dict[str, str]:
    done = subprocess.run(["bash", str(scripts / "submit.sh")], capture_output=True, text=True,
                          timeout=60, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return dict(line.split() for line in done.stdout.splitlines())


def sbatch_one_fold(scripts: Path, fold: int, cwd: Path) -> str:
    """Only one fold of the generated array script (sbatch's --array overrides the file's)."""
    return slurmcli.sbatch([f"--array={fold}"], script=scripts / "classify.sbatch", cwd=cwd)


def wait_for(what: str, check: Callable[[], bool], timeout: float, run: Path) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{_logs(run)}"
        time.sleep(0.2)


def epochs_done(task: Path) -> int:
    try:
        return len((task / "metrics.jsonl").read_text().splitlines())
    except FileNotFoundError:
        return 0


def squeue_state(job: str) -> str:
    out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True,
                         text=True, timeout=30)
    return out.stdout.strip()


def check_epochs(task: Path, epochs: int) -> list[dict]:
    """Every configured epoch trained once, in order: none lost, none twice."""
    lines = [json.loads(x) for x in (task / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == list(range(1, epochs + 1))
    result = json.loads((task / "result.json").read_text())
    assert result["status"] == "completed" and result["epochs"] == epochs
    steps = lines[0]["step"]
    assert [x["step"] for x in lines] == [steps * (i + 1) for i in range(epochs)]
    assert result["steps"] == steps * epochs
    return lines


def reference(data: Path, config: Path, out: Path, fold: int) -> dict:
    """The same task, uninterrupted, here (one thread, as on the cluster)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "lens", "train", "--stage", "classify",
                           "--data", str(data), "--fold", str(fold), "--out", str(out),
                           "--config", str(config)], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads((out / "classify" / f"fold_{fold}" / "result.json").read_text())


def python_of(run: Path, fold: int) -> int:
    """The pid of the Python process running fold ``fold`` of ``run`` (not srun's)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")[:-1]
        except OSError:
            continue
        words = [a.decode(errors="replace") for a in argv]
        if (words[:1] == [sys.executable] and "train" in words and str(run) in words
                and words[words.index("--fold") + 1] == str(fold)):
            return int(entry.name)
    raise AssertionError(f"no python process for fold {fold} of {run}")


@pytest.fixture(scope="module")
def setup(slurm_cluster, tmp_path_factory) -> dict:
    """Data, a ~15 s config, and the reference results of an uninterrupted fold 0."""
    root = tmp_path_factory.mktemp("faults")
    data = make_packed(root / "lenses.h5", n=192, n_test=32, n_folds=2)
    config = write_config(root / "tiny.toml", epochs=12)
    return {"root": root, "data": data, "config": config,
            "profile": write_profile(root / "local.toml", slurm_cluster.profile,
                                     max_requeues=5),
            "reference": reference(data, config, root / "reference", fold=0)}


# ---- 1. a time limit too short for the epochs -------------------------------------------------


def _seconds_per_epoch(data: Path, tmp: Path) -> float:
    """This machine's speed for the time-limit task: a short local run of the same config."""
    out = tmp / "calibrate"
    cmd = [sys.executable, "-m", "lens", "train", "--stage", "classify", "--data", str(data),
           "--fold", "0", "--out", str(out),
           "--config", str(write_config(tmp / "calibrate.toml", epochs=4))]
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                   capture_output=True, timeout=300)
    lines = [json.loads(x) for x in
             (out / "classify" / "fold_0" / "metrics.jsonl").read_text().splitlines()]
    return (lines[-1]["elapsed_s"] - lines[0]["elapsed_s"]) / (len(lines) - 1)


def test_time_limit_checkpoints_requeues_and_completes(slurm_cluster, tmp_path):
    """A 1-minute limit and about 75 s of training (sized from this machine's measured
    speed): Slurm signals the batch shell (B:USR2) 15 s before the limit (its timer ticks
    every 30 s, so 15-45 s after the start), the task checkpoints, the shell requeues it,
    and it resumes until every epoch is done."""
    torch.set_num_threads(1)
    data = make_packed(tmp_path / "lenses.h5", n=480, n_test=32, n_folds=2)
    epochs = max(40, math.ceil(75 / _seconds_per_epoch(data, tmp_path)))
    config = write_config(tmp_path / "slow.toml", epochs=epochs)
    profile = write_profile(tmp_path / "short.toml", slurm_cluster.profile, time="00:01:00",
                            signal_delay_s=15, max_requeues=12)
    run = tmp_path / ODD
    scripts = generate(data, run, config, profile)
    job = sbatch_one_fold(scripts, 0, tmp_path)
    states = slurmcli.wait_finished([job], expected=1, timeout=900)
    assert states[f"{job}_0"].state == "COMPLETED", (states, _logs(run))

    task = run / "classify" / "fold_0"
    check_epochs(task, epochs)
    result = json.loads((task / "result.json").read_text())
    log = (run / "logs" / f"classify_{job}_0.out").read_text()
    requeues = log.count("checkpointed; requeueing it")
    assert result["restarts"] >= 1, log
    # (a signal that lands after the last epoch, while results are written, is not needed)
    assert result["restarts"] == requeues
    assert requeues <= log.count("SIGUSR2 received") <= requeues + 1
    assert "DUE TO TIME LIMIT" not in log  # always stopped before the limit, never killed
    for k in range(requeues + 1):
        assert f"(restart {k}, rendezvous" in log
    print(f"time limit: {epochs} epochs in {requeues + 1} runs ({requeues} requeues)")
    assert not list(tmp_path.rglob("pwned*"))


def test_time_limit_signal_while_the_task_starts_is_not_a_failure(setup, tmp_path):
    """The signal reaches the task while Python is still importing torch (a short limit, or
    a requeued task near its limit): it checkpoints at its first step and is requeued."""
    run = tmp_path / ODD
    scripts = generate(setup["data"], run, setup["config"], setup["profile"])
    job = sbatch_one_fold(scripts, 0, tmp_path)
    task = run / "classify" / "fold_0"

    def started() -> bool:
        try:
            return python_of(run, 0) > 0
        except AssertionError:
            return False

    wait_for("the task's Python", started, 600, run)
    time.sleep(1.0)  # inside lens now, importing torch (the first ~0.3 s are the interpreter's)
    assert not (task / "metrics.jsonl").exists()  # not training yet
    slurmcli.scancel([f"{job}_0"], signal="USR2", batch=True)
    states = slurmcli.wait_finished([job], expected=1, timeout=600)
    assert states[f"{job}_0"].state == "COMPLETED", (states, _logs(run))
    log = (run / "logs" / f"classify_{job}_0.out").read_text()
    assert "stopped by SIGUSR2 at epoch 1, step 1" in log, log
    assert "requeueing it (restart 1)" in log
    check_epochs(task, 12)
    result = json.loads((task / "result.json").read_text())
    assert result["restarts"] == 1 and result["metrics"] == setup["reference"]["metrics"]


# ---- 2. preemption: scontrol requeue of a running array task -------------------------------


def test_preempted_task_resumes_with_the_metrics_of_an_uninterrupted_run(setup, tmp_path):
    run = tmp_path / ODD
    scripts = generate(setup["data"], run, setup["config"], setup["profile"])
    job = sbatch_one_fold(scripts, 0, tmp_path)
    task = run / "classify" / "fold_0"
    wait_for("epoch 3 of fold 0", lambda: epochs_done(task) >= 3, 600, run)
    slurmcli.run(["scontrol", "requeue", f"{job}_0"])  # what preemption with requeue does
    wait_for("the requeue", lambda: squeue_state(f"{job}_0") == "PENDING", 60, run)

    # Between the two runs: the task checkpointed on SIGTERM, at the step it had reached.
    log = (run / "logs" / f"classify_{job}_0.out").read_text()
    assert "stopped by SIGTERM at epoch" in log, log
    ckpt = torch.load(task / "checkpoint.pt", weights_only=True)
    metrics = [json.loads(x) for x in (task / "metrics.jsonl").read_text().splitlines()]
    assert ckpt["progress"]["global_step"] >= metrics[-1]["step"]  # nothing reported is lost
    stopped = ckpt["progress"]["global_step"]

    states = slurmcli.wait_finished([job], expected=1, timeout=600)
    assert states[f"{job}_0"].state == "COMPLETED", (states, _logs(run))
    check_epochs(task, 12)
    result = json.loads((task / "result.json").read_text())
    assert result["restarts"] == 1
    ref = setup["reference"]
    assert result["metrics"] == ref["metrics"]  # every number, bit for bit
    assert result["steps"] == ref["steps"] > stopped
    log = (run / "logs" / f"classify_{job}_0.out").read_text()
    assert "(restart 1, rendezvous" in log
    print(f"preemption: requeued at step {stopped} of {ref['steps']}, no step lost, "
          "metrics equal to the uninterrupted run")


# ---- 3. a hard kill (kill -9, as on a node failure), then the same scripts again -------------


def test_hard_kill_fails_the_task_and_resubmitting_resumes_only_that_fold(setup, tmp_path):
    run = tmp_path / ODD
    scripts = generate(setup["data"], run, setup["config"], setup["profile"])
    ids = submit_sh(scripts, tmp_path)
    classify, report = ids["classify"], ids["report"]
    killed, other = run / "classify" / "fold_0", run / "classify" / "fold_1"
    wait_for("epoch 2 of fold 0", lambda: epochs_done(killed) >= 2, 600, run)
    os.kill(python_of(run, 0), signal.SIGKILL)
    at_kill = epochs_done(killed)

    states = slurmcli.wait_finished([classify, report], expected=3, timeout=600)
    assert states[f"{classify}_0"].state == "FAILED", (states, _logs(run))
    assert states[f"{classify}_1"].state == "COMPLETED", (states, _logs(run))
    assert (states[report].state, states[report].exit_code) == ("FAILED", 1)
    report_json = json.loads((run / "report.json").read_text())
    missing = report_json["stages"]["classify"]["missing"]
    assert [m["fold"] for m in missing] == [0] and not report_json["complete"]
    assert (killed / "checkpoint.pt").exists() and not (killed / "result.json").exists()
    kept = {p.name: p.stat().st_mtime_ns for p in other.iterdir()}

    ids = submit_sh(scripts, tmp_path)  # the same experiment again
    states = slurmcli.wait_finished(ids.values(), expected=3, timeout=600)
    assert all(s.state == "COMPLETED" for s in states.values()), (states, _logs(run))
    assert {p.name: p.stat().st_mtime_ns for p in other.iterdir()} == kept  # untouched
    check_epochs(killed, 12)
    result = json.loads((killed / "result.json").read_text())
    assert result["restarts"] == 1  # resumed from the checkpoint, not started over
    assert result["metrics"] == setup["reference"]["metrics"]
    assert json.loads((run / "report.json").read_text())["complete"]
    print(f"hard kill: fold 0 killed after epoch {at_kill}, FAILED in sacct; resubmitted, it "
          "resumed and matches the uninterrupted run; fold 1 untouched")


# ---- 4. a fold that raises -------------------------------------------------------------------


def test_a_failing_fold_is_reported_and_exit_codes_tell_the_truth(setup, tmp_path):
    """A corrupt checkpoint in fold 1's folder makes that task raise; fold 0 completes, the
    report job still runs (afterany), lists fold 1 and exits 1."""
    run = tmp_path / ODD
    config = write_config(tmp_path / "quick.toml", epochs=2)
    scripts = generate(setup["data"], run, config, setup["profile"])
    bad = run / "classify" / "fold_1"
    bad.mkdir(parents=True)
    (bad / "checkpoint.pt").write_bytes(b"PK\x03\x04 not really a checkpoint")
    ids = submit_sh(scripts, tmp_path)
    classify, report = ids["classify"], ids["report"]
    states = slurmcli.wait_finished(ids.values(), expected=3, timeout=600)
    assert {k: (v.state, v.exit_code) for k, v in states.items()} == {
        f"{classify}_0": ("COMPLETED", 0), f"{classify}_1": ("FAILED", 1),
        report: ("FAILED", 1)}, _logs(run)
    log = (run / "logs" / f"classify_{classify}_1.out").read_text()
    assert f"error: {bad}/checkpoint.pt: cannot read this checkpoint" in log
    assert "Traceback" not in log
    # No run.json (plain sbatch): the task's own failed.json tells the report it FAILED.
    failure = json.loads((bad / "failed.json").read_text())
    assert "cannot read this checkpoint" in failure["error"]
    report_log = (run / "logs" / f"report_{report}.out").read_text()
    assert f"classify fold 1: FAILED ({bad}/failed.json)" in report_log
    assert "1 task(s) missing or failed" in report_log
    rep = json.loads((run / "report.json").read_text())["stages"]["classify"]
    assert (rep["n_folds"], rep["completed"]) == (2, 1)
    assert [(m["fold"], m["state"]) for m in rep["missing"]] == [(1, "FAILED")]
    assert "| classify | 1 | FAILED |" in (run / "report.md").read_text()


# ---- 6. requeue from the host when the task runs in a container without scontrol ------------

CONTAINER = """#!/bin/bash
# Stands in for `apptainer exec IMAGE python`: the task runs with a PATH that has no
# scontrol (nor srun, sbatch), as inside an image; the batch shell around it keeps its own.
printf 'start restart=%s\\n' "${{SLURM_RESTART_COUNT:-0}}" >> {record}
export PATH={venv_bin}:/nonexistent
if command -v scontrol >/dev/null 2>&1; then echo "scontrol is visible" >&2; exit 99; fi
exec {python} "$@"
"""


def test_requeue_from_the_host_when_the_container_has_no_scontrol(setup, tmp_path):
    record = tmp_path / "container.log"
    wrapper = tmp_path / "fake apptainer"
    wrapper.write_text(CONTAINER.format(record=json.dumps(str(record)),
                                        venv_bin=json.dumps(str(Path(sys.executable).parent)),
                                        python=json.dumps(sys.executable)))
    wrapper.chmod(0o755)
    run = tmp_path / ODD
    scripts = generate(setup["data"], run, setup["config"], setup["profile"],
                       "--python", f"'{wrapper}'")
    assert f"'{wrapper}' -m lens train" in (scripts / "classify.sbatch").read_text()
    job = sbatch_one_fold(scripts, 0, tmp_path)
    task = run / "classify" / "fold_0"
    wait_for("epoch 2 of fold 0", lambda: epochs_done(task) >= 2, 600, run)
    slurmcli.scancel([f"{job}_0"], signal="USR2", batch=True)  # as --signal=B:USR2@T does

    states = slurmcli.wait_finished([job], expected=1, timeout=600)
    assert states[f"{job}_0"].state == "COMPLETED", (states, _logs(run))
    assert record.read_text().splitlines() == ["start restart=0", "start restart=1"]
    log = (run / "logs" / f"classify_{job}_0.out").read_text()
    assert "stopped by SIGUSR2" in log and "requeueing it (restart 1)" in log
    check_epochs(task, 12)
    result = json.loads((task / "result.json").read_text())
    assert result["restarts"] == 1
    assert result["metrics"] == setup["reference"]["metrics"]


# ---- 2 and 3 through `lens submit` (submitit arrays), `lens status` and a resubmission ------


def submitit_python(array: str, fold: int) -> int | None:
    """The pid of the Python that submitit runs for array task ``array``_``fold``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            env = dict(x.split(b"=", 1) for x in (entry / "environ").read_bytes().split(b"\0")
                       if b"=" in x)
        except OSError:
            continue
        if (argv[0] == sys.executable.encode() and b"submitit.core._submit" in argv
                and env.get(b"SLURM_ARRAY_JOB_ID") == array.encode()
                and env.get(b"SLURM_ARRAY_TASK_ID") == str(fold).encode()):
            return int(entry.name)
    return None


def lens_cli(*args: object) -> tuple[int, str, str]:
    """`lens ...` as a user runs it: (exit code, stdout, stderr)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    done = subprocess.run([sys.executable, "-m", "lens", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=300)
    return done.returncode, done.stdout, done.stderr


def test_lens_submit_survives_preemption_and_resumes_a_killed_fold(setup, tmp_path):
    """Fold 0 is preempted (scontrol requeue) and resumes by itself; fold 1 is killed with
    SIGKILL: `lens status` says FAILED and names its log, the report job exits 1, and
    `lens submit` on the same run submits fold 1 alone, which resumes from its checkpoint
    while fold 0's files stay untouched."""
    run = tmp_path / ODD
    args = ("submit", "--stage", "classify", "--data", setup["data"], "--run", run,
            "--config", setup["config"], "--profile", setup["profile"], "--executor", "slurm")
    code, out, err = lens_cli(*args)
    assert code == 0, out + err
    manifest = json.loads((run / "run.json").read_text())
    array = manifest["submissions"][0]["arrays"][0]["job_id"]
    report = manifest["reports"][-1]["job_id"]
    fold0, fold1 = run / "classify" / "fold_0", run / "classify" / "fold_1"

    wait_for("epoch 2 of fold 0", lambda: epochs_done(fold0) >= 2, 600, run)
    slurmcli.run(["scontrol", "requeue", f"{array}_0"])  # preemption
    wait_for("epoch 2 of fold 1", lambda: epochs_done(fold1) >= 2
             and submitit_python(array, 1) is not None, 600, run)
    os.kill(submitit_python(array, 1), signal.SIGKILL)  # a node failure, as far as it knows

    states = slurmcli.wait_finished([array, report], expected=3, timeout=600)
    assert states[f"{array}_0"].state == "COMPLETED", (states, _logs(run))
    assert states[f"{array}_1"].state == "FAILED", states
    assert (states[report].state, states[report].exit_code) == ("FAILED", 1), states
    result0 = json.loads((fold0 / "result.json").read_text())
    assert result0["restarts"] == 1 and result0["metrics"] == setup["reference"]["metrics"]
    check_epochs(fold0, 12)

    code, out, err = lens_cli("status", run, "--json")
    assert code == 0, err
    rows = {(t["stage"], t["fold"]): t for t in json.loads(out)["tasks"]}
    failed = rows[("classify", 1)]
    assert failed["state"] == "FAILED" and failed["job_id"] == f"{array}_1"
    assert failed["log"] and Path(failed["log"]).is_file()
    assert rows[("classify", 0)]["state"] == "COMPLETED"
    assert rows[("classify", 0)]["restarts"] == 1
    code, out, err = lens_cli("status", run)
    assert code == 0 and "FAILED" in out and Path(failed["log"]).name in out.replace("\n", "")

    kept = {p.name: p.stat().st_mtime_ns for p in fold0.iterdir()}
    code, out, err = lens_cli(*args)  # the same command again
    assert code == 0, out + err
    manifest = json.loads((run / "run.json").read_text())
    again = manifest["submissions"][-1]
    assert [(a["stage"], a["folds"]) for a in again["arrays"]] == [("classify", [1])]
    states = slurmcli.wait_finished([again["arrays"][0]["job_id"], manifest["reports"][-1][
        "job_id"]], expected=2, timeout=600)
    assert all(s.state == "COMPLETED" for s in states.values()), (states, _logs(run))
    assert {p.name: p.stat().st_mtime_ns for p in fold0.iterdir()} == kept
    check_epochs(fold1, 12)
    assert json.loads((fold1 / "result.json").read_text())["restarts"] == 1
    assert json.loads((run / "report.json").read_text())["complete"]
    print("lens submit: fold 0 preempted and resumed by itself (equal to the uninterrupted "
          "run); fold 1 killed, FAILED in lens status with its log, resumed by resubmission")
