"""`lens status PRED`: shards from their parts and Slurm's accounting, then the merge."""

from __future__ import annotations

import json
from pathlib import Path

from lens.cluster.predict_status import parts_of, prediction_status
from lens.cluster.predict_submit import FORMAT, RECORD
from lens.cluster.slurmcli import JobState
from lens.cluster.status import render_text


def _record(parts: Path, submissions: list[dict]) -> None:
    parts.mkdir(parents=True)
    (parts / RECORD).write_text(json.dumps(
        {"format": FORMAT, "n_shards": 3, "submissions": submissions}))


def _state(job: str, state: str) -> JobState:
    return JobState(job, state, 0, 0, "00:01:02", "", "")


def test_shards_from_parts_and_sacct_then_the_merge(tmp_path):
    parts = tmp_path / "survey.parts"
    _record(parts, [{"executor": "slurm", "array": {"job_id": "100", "shards": [0, 1, 2]},
                     "merge": {"job_id": "101", "log": "merge.out"}}])
    (parts / "part_0.h5").write_bytes(b"")  # complete: parts are renamed into place whole
    asked: list[list[str]] = []

    def sacct(ids: list[str]) -> dict[str, JobState]:
        asked.append(ids)
        return {"100_0": _state("100_0", "COMPLETED"), "100_1": _state("100_1", "RUNNING"),
                "100_2": _state("100_2", "FAILED"), "101": _state("101", "PENDING")}

    assert parts_of(tmp_path / "survey") == parts == parts_of(parts)
    assert parts_of(tmp_path / "survey.h5") == parts
    status = prediction_status(parts, query=sacct)
    assert asked == [["100", "101"]]
    assert [(t.stage, t.fold, t.state, t.job_id) for t in status.tasks] == [
        ("predict", 0, "COMPLETED", "100_0"), ("predict", 1, "RUNNING", "100_1"),
        ("predict", 2, "FAILED", "100_2"), ("merge", None, "PENDING", "101")]
    assert status.tasks[2].log == str(parts / "logs")
    text = render_text(status)
    assert "predict 1/3 completed; merge PENDING" in text


def test_a_merged_prediction_run_here_needs_no_scheduler(tmp_path):
    parts = tmp_path / "survey.parts"
    _record(parts, [{"executor": "local", "array": {"job_id": None, "shards": [0, 1, 2],
                                                    "states": {"0": "COMPLETED"}}}])
    for i in range(3):
        (parts / f"part_{i}.h5").write_bytes(b"")
    (tmp_path / "survey.h5").write_bytes(b"")  # written after the parts: up to date

    def no_sacct(ids: list[str]) -> dict[str, JobState]:
        raise AssertionError("a local prediction must not ask Slurm")

    status = prediction_status(parts, query=no_sacct)
    assert [t.state for t in status.tasks] == ["COMPLETED"] * 4
    assert parts_of(tmp_path / "runs") is None  # no record: a training run, not a prediction


def test_cancel_stops_only_the_unfinished_jobs_of_a_prediction(tmp_path, monkeypatch, capsys):
    from lens.cli import main
    from lens.cluster import slurmcli, status

    parts = tmp_path / "survey.parts"
    _record(parts, [{"executor": "slurm", "array": {"job_id": "100", "shards": [0, 1, 2]},
                     "merge": {"job_id": "101"}}])
    (parts / "part_0.h5").write_bytes(b"")
    monkeypatch.setattr(status, "slurm_query", lambda ids: {
        "100_1": _state("100_1", "RUNNING"), "100_2": _state("100_2", "COMPLETED"),
        "101": _state("101", "PENDING")})
    cancelled: list[list[str]] = []
    monkeypatch.setattr(slurmcli, "scancel", lambda ids, **kw: cancelled.append(list(ids)))
    main(["cancel", str(tmp_path / "survey")])
    assert cancelled == [["100_1", "101"]]  # not shard 0 (its part is there), nor 2 (ended)
    shard_2 = prediction_status(parts).tasks[2]
    assert (shard_2.state, shard_2.detail) == ("INCOMPLETE",
                                               "its task ended without leaving its part")
    out = capsys.readouterr().out
    assert "scancel 100_1 (shard 1)" in out and "scancel 101 (merge)" in out


def test_cancel_signals_only_a_lens_driver_with_shards_to_run(tmp_path):
    """The recorded driver pid gets SIGTERM only while its shards are unfinished and the pid
    is still a lens process: a finished driver's pid, now another program's, is spared."""
    import socket
    import subprocess

    from lens.cluster.cancel import cancel_prediction

    other = subprocess.Popen(["sleep", "60"])  # a process that reuses the driver's pid
    try:
        driver = {"pid": other.pid, "host": socket.gethostname()}
        for states in ({"0": "COMPLETED", "1": "FAILED", "2": "CANCELLED"},
                       {"0": "COMPLETED", "1": "RUNNING", "2": "PENDING"}):
            parts = tmp_path / f"p{len(list(tmp_path.iterdir()))}.parts"
            _record(parts, [{"executor": "local", "driver": driver, "array": {
                "job_id": None, "shards": [0, 1, 2], "states": states}}])
            assert cancel_prediction(parts) == []
            assert other.poll() is None  # not signalled
    finally:
        other.kill()
        other.wait()


def test_shards_of_a_local_driver_that_has_ended_show_interrupted(tmp_path):
    """Recorded RUNNING or PENDING, but the `lens submit` that ran them is gone (kill -9):
    INTERRUPTED, not a state that never changes."""
    import socket
    import subprocess

    ended = subprocess.Popen(["true"])
    ended.wait()
    parts = tmp_path / "survey.parts"
    _record(parts, [{"executor": "local", "driver": {"pid": ended.pid,
                                                     "host": socket.gethostname()},
                     "array": {"job_id": None, "shards": [0, 1, 2],
                               "states": {"0": "COMPLETED", "1": "RUNNING", "2": "PENDING"}}}])
    (parts / "part_0.h5").write_bytes(b"")
    shards = prediction_status(parts).tasks[:3]
    assert [t.state for t in shards] == ["COMPLETED", "INTERRUPTED", "INTERRUPTED"]
    assert shards[1].detail == "the `lens submit` process that ran it has ended"
