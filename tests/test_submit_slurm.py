"""`lens submit`, `lens status`, `lens cancel` on the real local Slurm cluster (slurm/dev/start.sh).

Tiny data (16 px, the small CNN, one epoch, one thread, deterministic): what is tested is
the orchestration. One `--stage all --folds 5` run is shared by several tests (module
fixture). The time-limit run is submitted early and checked last, so that its long waits
(Slurm's signal and requeue delays) overlap the other tests.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_submit import TINY, lens
from test_train_data import make_packed

from lens.cluster import slurmcli
from lens.cluster.status import sacct_states
from lens.data.h5file import write_packed

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "slurm" / "profiles" / "local.toml"
SETS = [x for item in TINY for x in ("--set", item)]


def logs(run: Path) -> str:
    out = []
    for path in sorted((run / "logs").rglob("*_log.out")):
        out.append(f"== {path.relative_to(run)}\n{path.read_text(errors='replace')[-1500:]}")
    return "\n".join(out) or "no logs"


def manifest(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())


def status_json(run: Path, capsys) -> dict:
    capsys.readouterr()
    assert lens("status", str(run), "--json") == 0
    return json.loads(capsys.readouterr().out)


def wait_states(job_ids: list[str], expected: int, timeout: float = 300) -> dict:
    return slurmcli.wait_finished(job_ids, expected=expected, timeout=timeout, poll=2)


def submit(run: Path, data: Path, *args: str, sets=SETS, executor: str = "slurm") -> int:
    return lens("submit", "--data", str(data), "--run", str(run), "--executor", executor,
                *(["--profile", str(PROFILE)] if executor == "slurm" else []), *sets, *args)


@pytest.fixture(scope="module")
def data5(tmp_path_factory) -> Path:
    return make_packed(tmp_path_factory.mktemp("data5") / "tiny.h5", n=120, size=16,
                       n_folds=5, n_test=20)


@pytest.fixture(scope="module")
def data2(tmp_path_factory) -> Path:
    return make_packed(tmp_path_factory.mktemp("data2") / "tiny2.h5", n=100, size=16,
                       n_folds=2, n_test=0)


# ---- two gloo ranks per task (first: it needs both CPUs of the node) ------------------------


def test_a_task_with_two_gloo_ranks(slurm_cluster, data2, tmp_path, capsys):
    run = tmp_path / "ddp"
    assert submit(run, data2, "--stage", "classify", "--ranks-per-task", "2", "--wait") == 0, \
        logs(run)
    script = next((run / "logs" / "classify").glob("*_submission.sh")).read_text()
    assert "#SBATCH --ntasks-per-node=2" in script
    for fold in (0, 1):
        result = json.loads((run / "classify" / f"fold_{fold}" / "result.json").read_text())
        assert result["status"] == "completed" and result["world_size"] == 2
        ranks = sorted((run / "logs" / "classify").glob(f"*_{fold}_[01]_log.out"))
        assert len(ranks) == 2  # one log per srun rank
    states = status_json(run, capsys)["summary"]
    assert states == {"classify": {"COMPLETED": 2}, "report": {"COMPLETED": 1}}


# ---- the time-limit run: submitted now, checked at the end ----------------------------------


def _uneven_folds(path: Path, n: int = 360, size: int = 32) -> Path:
    """Fold 1 holds almost every image: the task of fold 0 trains on them (slow), the task
    of fold 1 on a handful (it ends quickly and frees its CPU)."""
    rng = np.random.default_rng(1)
    labels = np.arange(n) % 2
    images = rng.normal(0, 0.5, (n, 1, size, size)).astype(np.float32)
    images[labels == 1, :, size // 4: 3 * size // 4, size // 4: 3 * size // 4] += 1.0
    fold = np.ones(n, np.int16)
    fold[:16] = 0  # 8 of each class
    write_packed(path, images, labels, ["a", "b"], fold=fold, n_folds=2)
    return path


LONG = ("batch_size=16", "n_boot=10", "num_workers=0", "deterministic=true",
        "model.name=cnn_attention", "device=cpu", "eval_every_epochs=1000")
# With --time 2 and the profile's signal_delay_s = 30, Slurm sends USR2 60-90 s after the
# task starts (it checks every 30 s and signals up to 30 s early). Training planned for
# 120 s at the fastest calibrated epoch is always interrupted at least once (a run 30 %
# faster than its calibration still needs 90 s); the resumed run may be signalled again
# (the profile allows 5 requeues).
TRAIN_S = 120


def _seconds_per_epoch(data: Path, tmp: Path) -> float:
    """This machine's speed for the time-limit task: its fastest epoch in a short local run
    of the same config (the mean of a few epochs over-estimates it when the machine is busy,
    and too few epochs would let the task finish before Slurm's signal)."""
    out = tmp / "calibrate"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "lens", "train", "--stage", "classify", "--data", str(data),
           "--fold", "0", "--out", str(out), *[x for s in (*LONG, "epochs=8")
                                               for x in ("--set", s)]]
    subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=300)
    elapsed = [json.loads(x)["elapsed_s"] for x in
               (out / "classify" / "fold_0" / "metrics.jsonl").read_text().splitlines()]
    return min(b - a for a, b in itertools.pairwise(elapsed))


@pytest.fixture(scope="module")
def time_limit_run(slurm_cluster, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("timelimit")
    data = _uneven_folds(tmp / "uneven.h5")
    epochs = max(20, math.ceil(TRAIN_S / _seconds_per_epoch(data, tmp)))
    run = tmp / "run"
    sets = [x for s in (*LONG, f"epochs={epochs}") for x in ("--set", s)]
    assert submit(run, data, "--stage", "classify", "--time", "2", sets=sets) == 0
    return run, epochs


# ---- --stage all on 5 folds -------------------------------------------------------------------


@pytest.fixture(scope="module")
def all_run(slurm_cluster, data5, time_limit_run, tmp_path_factory):
    """`lens submit --stage all --folds 5 --wait`; the time-limit run is already queued."""
    run = tmp_path_factory.mktemp("all") / "run"
    code = submit(run, data5, "--stage", "all", "--folds", "5", "--wait")
    assert code == 0, logs(run)
    return run


def test_stage_all_completes_and_reports_five_folds(all_run, capsys):
    status = status_json(all_run, capsys)
    assert status["summary"] == {"pretrain": {"COMPLETED": 5}, "finetune": {"COMPLETED": 5},
                                 "report": {"COMPLETED": 1}}
    report = json.loads((all_run / "report.json").read_text())
    assert report["complete"]
    for stage in ("pretrain", "finetune"):
        assert report["stages"][stage]["completed"] == report["stages"][stage]["n_folds"] == 5
    assert report["stages"]["finetune"]["oof"]["n"] == 100  # every training image once
    assert "finetune: macro AUC" in report["headline"]
    data = manifest(all_run)
    pre, fine = (data["submissions"][0]["arrays"][i]["job_id"] for i in (0, 1))
    assert data["submissions"][0]["arrays"][1]["dependency"] == f"aftercorr:{pre}"
    states = slurmcli.job_states([pre, fine])
    for fold in range(5):  # fold K fine-tuned after its own pretraining, from its encoder
        assert states[f"{fine}_{fold}"].start >= states[f"{pre}_{fold}"].end
        assert data["jobs"]["finetune"][str(fold)]["job_id"] == f"{fine}_{fold}"
        assert Path(data["jobs"]["finetune"][str(fold)]["log"]).is_file()
    assert data["data"]["n_folds"] == 5 and len(data["data"]["sha256"]) == 64
    assert data["stages"]["pretrain"]["config"]["epochs"] == 1


def test_local_executor_gives_the_same_report(all_run, data5, tmp_path):
    local = tmp_path / "local"
    # one thread per task here as on the cluster (cpus_per_task = 1)
    code = submit(local, data5, "--stage", "all", "--folds", "5", "--array-parallelism", "2",
                  executor="local")
    assert code == 0, logs(local)
    cluster = json.loads((all_run / "report.json").read_text())["stages"]
    here = json.loads((local / "report.json").read_text())["stages"]
    keys = ("macro_auc", "micro_auc", "accuracy", "balanced_accuracy", "epochs")
    for fold in range(5):
        a, b = cluster["finetune"]["folds"][fold], here["finetune"]["folds"][fold]
        assert {k: a[k] for k in keys} == {k: b[k] for k in keys}
        assert cluster["pretrain"]["folds"][fold]["final_loss"] == \
            here["pretrain"]["folds"][fold]["final_loss"]
    assert cluster["finetune"]["oof"]["macro_auc"] == here["finetune"]["oof"]["macro_auc"]
    assert manifest(local)["submissions"][0]["executor"] == "local"


def test_resubmission_skips_complete_folds_and_reruns_a_deleted_one(all_run, data5, capsys):
    results = {(s, f): all_run / s / f"fold_{f}" / "result.json"
               for s in ("pretrain", "finetune") for f in range(5)}
    before = {k: p.stat().st_mtime_ns for k, p in results.items()}
    shutil.rmtree(all_run / "finetune" / "fold_2")
    capsys.readouterr()
    code = submit(all_run, data5, "--stage", "all", "--folds", "5", "--wait")
    out = capsys.readouterr().out
    assert code == 0, logs(all_run)
    assert "skipped pretrain fold 2: complete" in out
    sub = manifest(all_run)["submissions"][-1]
    assert [(a["stage"], a["folds"], a["dependency"]) for a in sub["arrays"]] == [
        ("finetune", [2], None)]  # one array of the one missing fold; its encoder exists
    array = sub["arrays"][0]["job_id"]
    assert manifest(all_run)["jobs"]["finetune"]["2"]["job_id"] == f"{array}_2"
    after = {k: p.stat().st_mtime_ns for k, p in results.items()}
    assert {k for k in before if before[k] != after[k]} == {("finetune", 2)}
    assert json.loads((all_run / "report.json").read_text())["complete"]


# ---- --stage finetune chains onto a queued pretraining --------------------------------------


def test_finetune_chains_onto_a_queued_pretraining(slurm_cluster, data2, tmp_path, capsys):
    run = tmp_path / "chain"
    assert submit(run, data2, "--stage", "pretrain", "--array-parallelism", "1") == 0
    pre = manifest(run)["submissions"][0]["arrays"][0]["job_id"]
    slurmcli.run(["scontrol", "hold", pre])  # keep the pretraining queued
    try:
        capsys.readouterr()
        assert submit(run, data2, "--stage", "finetune") == 0
        out = capsys.readouterr().out
        assert f"after aftercorr:{pre}" in out
        fine = manifest(run)["submissions"][1]["arrays"][0]["job_id"]
        shown = slurmcli.run(["scontrol", "show", "job", fine])
        assert f"Dependency=aftercorr:{pre}" in shown
    finally:
        slurmcli.run(["scontrol", "release", pre])
    first, report = (r["job_id"] for r in manifest(run)["reports"])
    assert manifest(run)["reports"][0]["superseded_by"] == report  # one report per run
    states = wait_states([pre, fine, report], expected=5)
    assert {s.state for s in states.values()} == {"COMPLETED"}, logs(run)
    assert slurmcli.job_states([first])[first].state == "CANCELLED"
    for fold in (0, 1):
        assert states[f"{fine}_{fold}"].start >= states[f"{pre}_{fold}"].end
        result = json.loads((run / "finetune" / f"fold_{fold}" / "result.json").read_text())
        assert result["status"] == "completed"
    assert status_json(run, capsys)["summary"]["finetune"] == {"COMPLETED": 2}


# ---- lens cancel ------------------------------------------------------------------------------


def test_cancel_stops_a_running_task_without_requeueing_it(slurm_cluster, data2, tmp_path,
                                                           capsys):
    run = tmp_path / "cancel"
    sets = [x for s in (*TINY, "epochs=500") for x in ("--set", s)]
    assert submit(run, data2, "--stage", "classify", "--array-parallelism", "1",
                  sets=sets) == 0
    metrics = run / "classify" / "fold_0" / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while not metrics.exists() and time.monotonic() < deadline:  # training has begun
        time.sleep(1)
    assert metrics.exists(), logs(run)
    capsys.readouterr()
    assert lens("cancel", str(run)) == 0
    out = capsys.readouterr().out
    array = manifest(run)["submissions"][0]["arrays"][0]["job_id"]
    assert f"scancel {array}_0 (classify fold 0)" in out and "(report)" in out
    report = manifest(run)["reports"][-1]["job_id"]
    wait_states([array, report], expected=3, timeout=120)
    time.sleep(5)  # a requeue would show up by now
    states = sacct_states([array, report])
    assert {k: v.state for k, v in states.items()} == {
        f"{array}_0": "CANCELLED", f"{array}_1": "CANCELLED", report: "CANCELLED"}, logs(run)
    assert (run / "classify" / "fold_0" / "checkpoint.pt").is_file()  # it checkpointed
    log = (run / "logs" / "classify" / f"{array}_0_0_log.out").read_text()
    assert "cancelled (SIGTERM); not requeueing" in log
    rows = {(t["stage"], t["fold"]): t["state"] for t in status_json(run, capsys)["tasks"]}
    assert rows[("classify", 0)] == "CANCELLED"
    assert lens("cancel", str(run)) == 0
    assert "nothing queued or running" in capsys.readouterr().out


# ---- the time-limit run, checked last --------------------------------------------------------


def test_time_limit_checkpoints_requeues_and_resumes(time_limit_run, capsys):
    run, epochs = time_limit_run
    data = manifest(run)
    array = data["submissions"][0]["arrays"][0]["job_id"]
    report = data["reports"][-1]["job_id"]
    states = wait_states([array, report], expected=3, timeout=600)
    assert {s.state for s in states.values()} == {"COMPLETED"}, logs(run)
    result = json.loads((run / "classify" / "fold_0" / "result.json").read_text())
    assert result["status"] == "completed" and result["epochs"] == epochs
    assert result["restarts"] >= 1, logs(run)
    log = (run / "logs" / "classify" / f"{array}_0_0_log.out").read_text()
    assert "stopped by SIGUSR2" in log and f"task {array}_0 checkpointed; requeueing it" in log
    rows = {(t["stage"], t["fold"]): t for t in status_json(run, capsys)["tasks"]}
    assert rows[("classify", 0)]["restarts"] == result["restarts"]
