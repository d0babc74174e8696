"""`lens status` and `lens cancel` without a cluster: states from result files, sacct (a
stand-in query), the local executor's records; the table (golden file); the lookup that
`lens report` uses; cancel of only what still runs.

Regenerate the golden file after an intended change:
    LENS_UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_status.py
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_generate import check_golden
from typer.testing import CliRunner

from lens.cli import app
from lens.cluster import manifest
from lens.cluster.cancel import cancel
from lens.cluster.slurmcli import JobState
from lens.cluster.status import (
    expand_job_id,
    render_text,
    run_status,
    sacct_states,
    slurm_query,
    state_lookup,
)
from lens.errors import LensError


def js(job_id: str, state: str, elapsed: str = "00:00:10", code: int = 0) -> JobState:
    return JobState(job_id, state, code, 0, elapsed, "x", "x")


def slurm_run(tmp_path: Path) -> Path:
    """A run of 4 classify folds on Slurm: array 200, report job 201."""
    run = tmp_path / "run"
    run.mkdir()
    data = manifest.new(run)
    data["stages"]["classify"] = {"folds": 4, "config": {}}
    for fold in range(4):
        manifest.set_fold_job(data, "classify", fold, {
            "job_id": f"200_{fold}", "executor": "slurm", "submission": 0,
            "log": f"{run}/logs/classify/200_{fold}_0_log.out"})
    data["reports"].append({"job_id": "201", "executor": "slurm", "submission": 0,
                            "log": f"{run}/logs/report/201_0_log.out"})
    manifest.write(run, data)
    done = run / "classify" / "fold_0"
    done.mkdir(parents=True)
    (done / "result.json").write_text(json.dumps(
        {"status": "completed", "restarts": 2, "wall_time_s": 75.2}))
    (run / "logs" / "classify").mkdir(parents=True)
    (run / "logs" / "classify" / "200_1_0_log.out").write_text(
        "lens: task 200_1 checkpointed; requeueing it (restart 1)\n")
    return run


SACCT = {"200_0": js("200_0", "COMPLETED", "00:01:20"), "200_1": js("200_1", "RUNNING"),
         "200_2": js("200_2", "FAILED", "00:00:03", code=1),
         "200_[3]": js("200_[3]", "PENDING", "00:00:00"), "201": js("201", "PENDING")}


def test_expand_pending_array_ranges():
    assert expand_job_id("12_[0-2,5%2]") == ["12_0", "12_1", "12_2", "12_5"]
    assert expand_job_id("12_[7]") == ["12_7"]
    assert expand_job_id("12_3") == ["12_3"] and expand_job_id("12") == ["12"]
    states = sacct_states(["12_0", "12_4", "13"], query=lambda ids: {
        "12_[0-1,4]": js("12_[0-1,4]", "PENDING"), "13": js("13", "RUNNING")})
    assert sorted(states) == ["12_0", "12_1", "12_4", "13"]


def test_states_from_results_sacct_and_logs(tmp_path):
    run = slurm_run(tmp_path)
    status = run_status(run, query=lambda ids: SACCT)
    rows = {(t.stage, t.fold): t for t in status.tasks}
    assert rows[("classify", 0)].state == "COMPLETED" and rows[("classify", 0)].restarts == 2
    assert rows[("classify", 0)].elapsed == "00:01:20"
    assert rows[("classify", 1)].state == "RUNNING" and rows[("classify", 1)].restarts == 1
    assert rows[("classify", 2)].state == "FAILED" and "exit code 1" in rows[("classify", 2)].detail
    assert rows[("classify", 2)].log.endswith("200_2_0_log.out")
    assert rows[("classify", 3)].state == "PENDING"
    assert rows[("report", None)].state == "PENDING"
    assert status.to_json()["summary"]["classify"] == {"COMPLETED": 1, "RUNNING": 1,
                                                       "FAILED": 1, "PENDING": 1}


def test_status_table_golden(tmp_path):
    run = slurm_run(tmp_path)
    status = run_status(run, query=lambda ids: SACCT)
    status = dataclasses.replace(status, run="RUN", tasks=tuple(  # stable paths
        dataclasses.replace(t, log=t.log and t.log.replace(str(run), "RUN"))
        for t in status.tasks))
    check_golden("status_table.txt", render_text(status, width=120))


def test_a_job_unknown_to_sacct_is_explained(tmp_path):
    run = slurm_run(tmp_path)
    status = run_status(run, query=lambda ids: {"200_1": js("200_1", "RUNNING")})
    rows = {(t.stage, t.fold): t for t in status.tasks}
    assert rows[("classify", 0)].state == "COMPLETED"  # the result file is enough
    assert rows[("classify", 2)].state == "UNKNOWN"
    assert "sacct does not know job 200_2" in rows[("classify", 2)].detail
    assert any("sacct does not know job(s) 200_2, 200_3, 201" in n for n in status.notes)


def test_without_sacct_the_files_still_answer(tmp_path):
    run = slurm_run(tmp_path)

    def broken(ids):
        raise LensError("sacct not found: is this a Slurm login node?")

    status = run_status(run, query=broken)
    assert [t.state for t in status.tasks] == ["COMPLETED", "UNKNOWN", "UNKNOWN", "UNKNOWN",
                                               "UNKNOWN"]
    assert "accounting is not available" in status.notes[0]


def test_local_records_and_a_dead_driver(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    data = manifest.new(run)
    data["stages"]["pretrain"] = {"folds": 2, "config": {}}
    data["submissions"].append({"driver": {"pid": 999_999_999, "host": os.uname().nodename}})
    manifest.set_fold_job(data, "pretrain", 0, {"job_id": "4242", "executor": "local",
                                                 "state": "FAILED", "submission": 0,
                                                 "elapsed_s": 12.4})
    manifest.set_fold_job(data, "pretrain", 1, {"job_id": "4243", "executor": "local",
                                                 "state": "RUNNING", "submission": 0})
    manifest.write(run, data)
    rows = run_status(run).tasks
    assert (rows[0].state, rows[0].elapsed) == ("FAILED", "00:00:12")
    assert rows[1].state == "INTERRUPTED" and "has ended" in rows[1].detail


def test_state_lookup_for_the_report(tmp_path, monkeypatch):
    run = slurm_run(tmp_path)
    monkeypatch.setattr("lens.cluster.slurmcli.job_states", lambda ids: SACCT)
    lookup = state_lookup(run)
    assert lookup("classify", 2) == ("FAILED", f"{run}/logs/classify/200_2_0_log.out")
    assert lookup("classify", 9) is None
    assert state_lookup(tmp_path / "not-a-run")("classify", 0) is None


def test_report_names_the_failed_fold_and_its_log(tmp_path, monkeypatch):
    run = slurm_run(tmp_path)
    monkeypatch.setattr("lens.cluster.slurmcli.job_states", lambda ids: SACCT)
    result = CliRunner().invoke(app, ["report", str(run)])
    assert result.exit_code != 0
    report = json.loads((run / "report.json").read_text())
    missing = {m["fold"]: m for m in report["stages"]["classify"]["missing"]}
    assert missing[2]["state"] == "FAILED" and missing[2]["log"].endswith("200_2_0_log.out")
    assert missing[1]["state"] == "RUNNING"


def test_status_command_json_and_errors(tmp_path, monkeypatch):
    run = slurm_run(tmp_path)
    monkeypatch.setattr("lens.cluster.slurmcli.job_states", lambda ids: SACCT)
    result = CliRunner().invoke(app, ["status", str(run), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["summary"]["report"] == {"PENDING": 1}
    result = CliRunner().invoke(app, ["status", str(run)])
    assert result.exit_code == 0 and "FAILED" in result.output
    result = CliRunner().invoke(app, ["status", str(tmp_path)])
    assert isinstance(result.exception, LensError) and "no run.json" in str(result.exception)


def test_cancel_scancels_only_what_still_runs(tmp_path, monkeypatch):
    run = slurm_run(tmp_path)
    monkeypatch.setattr("lens.cluster.slurmcli.job_states", lambda ids: SACCT)
    calls = []
    monkeypatch.setattr("lens.cluster.slurmcli.scancel", lambda ids, **kw: calls.append(ids))
    done = cancel(run)
    assert calls == [["200_1", "200_3", "201"]]
    assert done == ["scancel 200_1 (classify fold 1)", "scancel 200_3 (classify fold 3)",
                    "scancel 201 (report)"]


def test_cancel_stops_a_local_task(tmp_path):
    """Stand-ins for the `lens submit` process that drives a local run and for submitit's
    controller of a running task (a process whose command line names it)."""
    sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    driver = subprocess.Popen(sleep)
    controller = subprocess.Popen([*sleep, "submitit.local._local"])
    try:
        run = tmp_path / "run"
        run.mkdir()
        data = manifest.new(run)
        data["stages"]["classify"] = {"folds": 1, "config": {}}
        data["submissions"].append({"driver": {"pid": driver.pid, "host": "elsewhere"}})
        manifest.set_fold_job(data, "classify", 0, {"job_id": str(controller.pid),
                                                     "executor": "local", "state": "RUNNING",
                                                     "submission": 0})
        manifest.write(run, data)
        # another host ran it: status cannot check, cancel does not touch pids
        assert run_status(run).tasks[0].detail.startswith("ran on another host")
        assert cancel(run) == [] and driver.poll() is None and controller.poll() is None
        data["submissions"][0]["driver"]["host"] = os.uname().nodename
        manifest.write(run, data)
        assert cancel(run) == [f"SIGTERM to lens submit (pid {driver.pid})",
                               f"SIGTERM to pid {controller.pid} (classify fold 0)"]
        assert driver.wait(timeout=10) == -15 and controller.wait(timeout=10) == -15
    finally:
        driver.kill()
        controller.kill()


@pytest.mark.parametrize("content, message", [
    (None, "no run.json here"), ("{", "not valid JSON"), ('{"format": "x"}', "not a lens run"),
])
def test_bad_manifests_are_named(tmp_path, content, message):
    run = tmp_path / "run"
    run.mkdir()
    if content is not None:
        (run / "run.json").write_text(content)
    with pytest.raises(LensError, match=message):
        run_status(run)


def test_a_job_too_new_for_sacct_is_found_by_squeue(tmp_path, monkeypatch):
    """sbatch has returned but slurmdbd has not heard of the job yet: squeue knows it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sacct").write_text("#!/bin/bash\necho '200_0|COMPLETED|0:0|00:00:09|x|x'\n")
    (bin_dir / "squeue").write_text(
        "#!/bin/bash\n[[ \"$*\" == *'-j 201'* ]] && echo '201|PENDING|0:00'\n")
    for name in ("sacct", "squeue"):
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert {k: v.state for k, v in slurm_query(["200", "201"]).items()} == {
        "200_0": "COMPLETED", "201": "PENDING"}
