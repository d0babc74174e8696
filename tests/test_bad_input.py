"""Bad input that other test files do not already cover (docs/RELIABILITY.md has the full
table): corrupt or truncated packed files given to `lens train`, run folders that cannot be
written, a full disk while a checkpoint is written, hostile names and paths, a job id that
sacct does not know, and a data file that is gone when the array task starts.

Every case must end with a one-line message naming the file, key or value, and a non-zero
exit; nothing half-written is left behind.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import h5py
import pytest
import torch
from test_train_data import make_packed

from lens.cli import main
from lens.cluster import slurmcli
from lens.errors import LensError
from lens.train import checkpoint

# Small and quick on two shared cores: 32 px images, the small CNN, no bootstrap.
TINY = ("--set", "epochs=2", "--set", "batch_size=16", "--set", "n_boot=0",
        "--set", "device=cpu", "--set", "num_workers=0", "--set", "deterministic=true",
        "--set", "model.name=cnn_attention")
# Everything a shell could misread, in a file or folder name.
HOSTILE = "it's \"q\" $(touch pwned) `touch pwned2` ;x &y #z"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    return make_packed(tmp_path_factory.mktemp("data") / "d.h5", n=96, n_test=16, n_folds=2)


def lens(capsys, *args: str) -> tuple[int, str]:
    """The console entry point in-process (it maps LensError/OSError to exit codes)."""
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def train(capsys, data: Path, out: Path, *extra: str, fold: int = 0) -> tuple[int, str]:
    return lens(capsys, "train", "--stage", "classify", "--data", data, "--fold", str(fold),
                "--out", out, *TINY, *extra)


def one_line_error(err: str) -> str:
    """The error line; fails when the output holds a traceback."""
    assert "Traceback" not in err, err
    lines = [x for x in err.splitlines() if x.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


# ---- packed files that cannot be read -----------------------------------------------------


def _truncated(src: Path, dst: Path) -> Path:
    shutil.copyfile(src, dst)
    os.truncate(dst, dst.stat().st_size // 2)
    return dst


def _garbage(src: Path, dst: Path) -> Path:
    dst.write_bytes(b"\x89HDF\r\n\x1a\n" + os.urandom(4096))  # the magic, then noise
    return dst


def _unknown_schema(src: Path, dst: Path) -> Path:
    shutil.copyfile(src, dst)
    with h5py.File(dst, "a") as f:
        f.attrs["schema_version"] = 3
    return dst


def _no_schema(src: Path, dst: Path) -> Path:
    with h5py.File(dst, "w") as f:
        f.create_dataset("images", data=[1.0])
    return dst


def _empty(src: Path, dst: Path) -> Path:
    dst.write_bytes(b"")
    return dst


@pytest.mark.parametrize("make, message", [
    (_truncated, "not a readable HDF5 file (Unable to synchronously open file (truncated file"),
    (_garbage, "not a readable HDF5 file"),
    (_empty, "not a readable HDF5 file"),
    (_unknown_schema, "schema version 3 is not supported by this lens (it reads versions 1, 2); "
                "repack with this version of `lens pack`"),
    (_no_schema, "not a lens file (no schema_version attribute)"),
])
def test_unreadable_packed_files_are_refused_by_train(data_file, tmp_path, capsys, make,
                                                      message):
    bad = make(data_file, tmp_path / "bad file.h5")
    code, err = train(capsys, bad, tmp_path / "run")
    assert code == 1
    assert one_line_error(err).startswith(f"error: {bad}: {message}")
    assert not (tmp_path / "run").exists()  # nothing written for a task that cannot run


def test_a_task_that_fails_records_why_and_a_rerun_forgets_it(data_file, tmp_path, capsys):
    task = tmp_path / "run" / "classify" / "fold_0"
    task.mkdir(parents=True)
    (task / "checkpoint.pt").write_bytes(b"PK\x03\x04 not really a checkpoint")
    code, err = train(capsys, data_file, tmp_path / "run")
    assert code == 1 and "cannot read this checkpoint" in err
    failure = json.loads((task / "failed.json").read_text())
    assert failure["status"] == "failed" and failure["rank"] == 0
    assert failure["error"].startswith("LensError: ") and "cannot read" in failure["error"]
    (task / "checkpoint.pt").unlink()
    code, err = train(capsys, data_file, tmp_path / "run")
    assert code == 0, err
    assert not (task / "failed.json").exists() and (task / "result.json").exists()


def test_batch_larger_than_the_training_images(data_file, tmp_path, capsys):
    code, err = train(capsys, data_file, tmp_path / "run", "--set", "batch_size=512")
    assert code == 1
    assert one_line_error(err) == ("error: batch_size 512 is larger than the 40 training "
                                   "images; lower it with --set batch_size=...")
    assert not (tmp_path / "run").exists()


# ---- run folders that cannot be written -------------------------------------------------------


@contextlib.contextmanager
def tmpfs(path: Path, size: str, *, read_only: bool = False) -> Iterator[Path]:
    """A small tmpfs at ``path`` (root only): a real read-only or full file system."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}): the simulated "
                    "variant of this test still runs")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@contextlib.contextmanager
def unwritable_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder this process cannot create files in: read-only mode bits, or (root ignores
    those) a read-only tmpfs."""
    if os.geteuid() != 0:
        path = tmp_path / "ro"
        path.mkdir()
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
        return
    with tmpfs(tmp_path / "ro", "1m", read_only=True) as path:
        yield path


def test_run_folder_that_cannot_be_written(data_file, tmp_path, capsys):
    with unwritable_dir(tmp_path) as ro:
        code, err = train(capsys, data_file, ro / "run")
        assert code == 1
        line = one_line_error(err)
        assert line.startswith(f"error: {ro}/run") and line.endswith(
            ("Read-only file system", "Permission denied")), line
        # the report of a run folder that cannot be written
        code, err = lens(capsys, "report", ro)
        assert code == 1 and str(ro) in one_line_error(err)
        # lens generate into it
        code, err = lens(capsys, "generate", "--stage", "classify", "--data", data_file,
                         "--run", ro / "exp")
        assert code == 1 and f"{ro}/exp" in one_line_error(err)


def test_run_folder_that_is_a_file(data_file, tmp_path, capsys):
    afile = tmp_path / "results.txt"
    afile.write_text("not a folder")
    for out in (afile, afile / "run"):
        code, err = train(capsys, data_file, out)
        assert code == 1
        assert one_line_error(err) == f"error: {out}/classify/fold_0/result.json: Not a directory"
    assert afile.read_text() == "not a folder"


def test_report_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    code, err = lens(capsys, "report", tmp_path / "nowhere")
    assert code == 1
    assert one_line_error(err) == f"error: {tmp_path}/nowhere: no such run directory"
    (tmp_path / "empty").mkdir()
    code, err = lens(capsys, "report", tmp_path / "empty")
    assert code == 1
    assert one_line_error(err) == (f"error: {tmp_path}/empty: no stage folders (classify/, "
                                   "pretrain/, finetune/) found")


# ---- a full disk while a checkpoint is written ----------------------------------------------


def _checkpoint_files(task: Path) -> list[str]:
    return sorted(p.name for p in task.iterdir() if "checkpoint" in p.name)


def test_full_disk_during_a_checkpoint_keeps_the_previous_one(data_file, tmp_path, capsys,
                                                              monkeypatch):
    """Simulated: the second checkpoint's write fails half-way with ENOSPC."""
    real_save = torch.save
    calls = []

    def save(obj, f, *args, **kwargs):
        if str(f).endswith(".pt") or ".checkpoint.pt.tmp" in str(f):
            calls.append(str(f))
        if ".checkpoint.pt.tmp" in str(f) and len(calls) == 2:
            Path(f).write_bytes(b"PK\x03\x04 half a zip file")  # what a full disk leaves
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    run = tmp_path / "run"
    task = run / "classify" / "fold_0"
    code, err = train(capsys, data_file, run)
    assert code == 1
    assert one_line_error(err).startswith(
        f"error: {task}/checkpoint.pt: could not be written (No space left on device; ")
    assert err.rstrip().endswith("MiB free there); the previous checkpoint.pt is unchanged")
    assert _checkpoint_files(task) == ["checkpoint.pt"]  # the half-written temporary is gone
    assert checkpoint.load(task / "checkpoint.pt")["progress"]["epoch"] == 1
    assert not (task / "result.json").exists()

    monkeypatch.setattr(torch, "save", real_save)  # space freed: the same command resumes
    code, err = train(capsys, data_file, run)
    assert code == 0, err
    result = json.loads((task / "result.json").read_text())
    assert (result["epochs"], result["restarts"]) == (2, 1)
    epochs = [json.loads(x)["epoch"] for x in (task / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]


def test_really_full_disk_during_a_checkpoint(data_file, tmp_path, capsys):
    """A real full file system (a 12 MiB tmpfs; a checkpoint of this model is ~7.6 MB, and the
    atomic write needs room for the old and the new one): torch.save's own error is turned
    into a message that names the file; then, with room, the same command resumes."""
    with tmpfs(tmp_path / "small", "12m") as disk:
        run = disk / "run"
        task = run / "classify" / "fold_0"
        code, err = train(capsys, data_file, run)
        assert code == 1
        line = one_line_error(err)
        assert line.startswith(f"error: {task}/checkpoint.pt: could not be written ("), line
        assert "usually a full disk" in line or "No space left on device" in line, line
        assert line.endswith("the previous checkpoint.pt is unchanged"), line
        assert _checkpoint_files(task) == ["checkpoint.pt"]
        assert checkpoint.load(task / "checkpoint.pt")["progress"]["epoch"] == 1
        remount = subprocess.run(["mount", "-o", "remount,size=64m", str(disk)],
                                 capture_output=True, text=True)
        assert remount.returncode == 0, remount.stderr
        code, err = train(capsys, data_file, run)
        assert code == 0, err
        result = json.loads((task / "result.json").read_text())
        assert (result["epochs"], result["restarts"]) == (2, 1)


# ---- names and paths with spaces, quotes and $(...) -----------------------------------------


def test_hostile_names_train_and_report(data_file, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where an injected `touch pwned` would land
    folder = tmp_path / HOSTILE
    folder.mkdir()
    data = folder / f"data {HOSTILE}.h5"
    shutil.copyfile(data_file, data)
    run = folder / f"run {HOSTILE}"
    for fold in (0, 1):
        code, err = train(capsys, data, run, "--set", "epochs=1", fold=fold)
        assert code == 0, err
    code, err = lens(capsys, "report", run)
    assert code == 0, err
    report = json.loads((run / "report.json").read_text())
    assert report["complete"] and report["run"] == str(run)
    result = json.loads((run / "classify" / "fold_0" / "result.json").read_text())
    assert result["data"]["path"] == str(data)
    assert not list(tmp_path.rglob("pwned*")), "an injected command ran"


# ---- Slurm: a job id that sacct does not know; data gone at run time --------------------------


@pytest.mark.slurm
def test_job_id_unknown_to_sacct(slurm_cluster):
    assert slurmcli.job_states(["987654321"]) == {}
    with pytest.raises(LensError, match="jobs 987654321 not finished after 1 s: "
                                        "unknown to sacct"):
        slurmcli.wait_finished(["987654321"], timeout=1, poll=0.2)
    with pytest.raises(LensError, match=r"`sacct .* -j not-a-job .*` failed \(exit 1\)"):
        slurmcli.job_states(["not-a-job"])


@pytest.mark.slurm
def test_lens_status_with_job_ids_unknown_to_sacct(slurm_cluster, tmp_path, capsys):
    """run.json names jobs the real sacct has never seen (purged, or another cluster's):
    `lens status` says so for each task and exits 0; a complete result still counts."""
    from lens.cluster import manifest

    run = tmp_path / "run"
    run.mkdir()
    data = manifest.new(run)
    data["stages"]["classify"] = {"folds": 2, "config": {}}
    for fold in (0, 1):
        manifest.set_fold_job(data, "classify", fold, {
            "job_id": f"987654320_{fold}", "executor": "slurm", "submission": 0,
            "log": f"{run}/logs/classify/987654320_{fold}_0_log.out"})
    data["reports"].append({"job_id": "987654321", "executor": "slurm", "submission": 0})
    manifest.write(run, data)
    (run / "classify" / "fold_0").mkdir(parents=True)
    (run / "classify" / "fold_0" / "result.json").write_text('{"status": "completed"}')
    capsys.readouterr()
    main(["status", str(run), "--json"])  # exit 0: returns normally
    status = json.loads(capsys.readouterr().out)
    rows = {(t["stage"], t["fold"]): t for t in status["tasks"]}
    assert rows[("classify", 0)]["state"] == "COMPLETED"
    assert rows[("classify", 1)]["state"] == "UNKNOWN"
    assert rows[("classify", 1)]["detail"] == "sacct does not know job 987654320_1"
    assert rows[("report", None)]["state"] == "UNKNOWN"
    assert any("sacct does not know job(s) 987654320_1, 987654321" in n
               for n in status["notes"])


@pytest.mark.slurm
@pytest.mark.slow
def test_data_file_missing_when_the_array_task_starts(slurm_cluster, tmp_path):
    """The data was there when the scripts were written, and is gone (or not mounted) on the
    compute node: every fold fails with the file named in its log, the report still runs
    (afterany), lists both folds and exits non-zero; sacct says FAILED for each."""
    from test_generate import _logs, invoke

    data = make_packed(tmp_path / "lenses.h5", n=48, n_test=8, n_folds=2)
    run = tmp_path / "run"
    result = invoke(["--stage", "classify", "--data", str(data), "--run", str(run),
                     "--profile", str(slurm_cluster.profile)])
    assert result.exit_code == 0, result.output
    data.rename(tmp_path / "moved.h5")
    done = subprocess.run(["bash", str(run / "slurm" / "submit.sh")], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    ids = dict(line.split() for line in done.stdout.splitlines())
    states = slurmcli.wait_finished(ids.values(), expected=3, timeout=300)
    classify, report = ids["classify"], ids["report"]
    assert {k: (v.state, v.exit_code) for k, v in states.items()} == {
        f"{classify}_0": ("FAILED", 1), f"{classify}_1": ("FAILED", 1),
        report: ("FAILED", 1)}, _logs(run)
    for fold in (0, 1):
        log = (run / "logs" / f"classify_{classify}_{fold}.out").read_text()
        assert f"error: {data}: no such file" in log
        assert "Traceback" not in log
    report_log = (run / "logs" / f"report_{report}.out").read_text()
    assert "error: " in report_log and "Traceback" not in report_log
