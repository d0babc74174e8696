"""Fault: a process killed (SIGKILL, as on a node failure) in the middle of a checkpoint or
result write leaves the previous file intact and readable; and the aggregation never reads
a half-written result while a fold is still writing.

The writers here are the real ones (lens.train.checkpoint.save, lens.atomic), killed at
random moments many times; the control at the end shows that the same reader does catch
torn files when a writer is not atomic, so the checks can fail.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from lens import atomic
from lens.train import checkpoint

KILLS = 40
FORK = multiprocessing.get_context("fork")  # the writers start at once: torch is imported


def _write_checkpoints(path: str, start: int, conn) -> None:
    torch.set_num_threads(1)
    weights = torch.empty(2_000_000)  # 8 MB: a write takes long enough to be interrupted
    for version in range(start, start + 10_000):
        weights.fill_(float(version))
        checkpoint.save(Path(path), {"version": version, "w": weights})
        conn.send(version)


def _write_results(path: str, start: int, conn) -> None:
    pad = "x" * 8_000_000  # 8 MB: quick to encode, long enough to write to be interrupted
    for version in range(start, start + 10_000):
        atomic.write_json(path, {"status": "completed", "version": version, "pad": pad})
        conn.send(version)


def _receive(conn, last: int, timeout: float) -> int:
    """The newest version the writer reported as written (it may have died meanwhile)."""
    try:
        while conn.poll(timeout):
            last = conn.recv()
            timeout = 0
    except EOFError:
        pass
    return last


def _read_checkpoint(path: Path) -> int:
    ckpt = torch.load(path, weights_only=True)  # what lens does when it resumes
    assert ckpt["format"] == checkpoint.FORMAT
    version = ckpt["version"]
    assert bool((ckpt["w"] == float(version)).all()), "a checkpoint mixes two versions"
    return version


def _read_result(path: Path) -> int:
    result = json.loads(path.read_text())
    assert result["status"] == "completed" and len(result["pad"]) == 8_000_000
    return result["version"]


@pytest.mark.slow
@pytest.mark.parametrize("writer, reader, name", [
    (_write_checkpoints, _read_checkpoint, "checkpoint.pt"),
    (_write_results, _read_result, "result.json"),
])
def test_sigkill_during_writes_leaves_the_old_or_the_new_file(tmp_path, writer, reader, name):
    path = tmp_path / name
    rng = random.Random(0)
    on_disk, mid_write = 0, 0
    for _ in range(KILLS):
        parent, child = FORK.Pipe(duplex=False)
        proc = FORK.Process(target=writer, args=(str(path), on_disk + 1, child))
        proc.start()
        child.close()
        done = on_disk
        # let it write a little, then kill it at a random moment (often mid-write)
        deadline = time.monotonic() + rng.uniform(0.0, 0.25)
        while time.monotonic() < deadline or (done == 0 and time.monotonic() < deadline + 30):
            done = _receive(parent, done, 0.005)
        os.kill(proc.pid, 9)
        proc.join()
        done = _receive(parent, done, 0)
        parent.close()
        leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(f".{name}.tmp-")]
        mid_write += bool(leftovers)
        for p in leftovers:  # a killed writer cannot remove its temporary: lens ignores it
            p.unlink()
        if done == 0 and not path.exists():
            continue
        version = reader(path)  # must load: never half-written
        # the last finished write, or one that finished after its report was sent
        assert version in (done, done + 1), (version, done)
        on_disk = version
    print(f"{name}: {KILLS} SIGKILLs, {mid_write} during a write, every one readable; "
          f"{on_disk} versions written")
    assert on_disk > 0
    assert mid_write >= 3, f"only {mid_write} of {KILLS} kills landed during a write"


# ---- the aggregation while a fold is still writing ----------------------------------------


def _fold_writer(task: str, atomic_writes: bool, stop_after: float) -> None:
    """Rewrites a fold's predictions.npz then result.json, like a task finishing, again and
    again; atomic as lens does, or plainly (the control)."""
    task_dir = Path(task)
    end = time.monotonic() + stop_after
    version = 0
    while time.monotonic() < end:
        version += 1
        arrays = _predictions(version)
        result = {"status": "completed", "stage": "classify", "fold": 1, "version": version,
                  "class_names": ["a", "b"], "data": {"n_folds": 2},
                  "metrics": {"val": {"macro_auc": 0.5}}, "pad": ["x" * 64] * 4000}
        if atomic_writes:
            with atomic.atomic_path(task_dir / "predictions.npz") as tmp, open(tmp, "wb") as f:
                np.savez(f, **arrays)
            atomic.write_json(task_dir / "result.json", result)
        else:
            with open(task_dir / "predictions.npz", "wb") as f:
                np.savez(f, **arrays)
            with open(task_dir / "result.json", "w") as f:
                text = json.dumps(result)
                for i in range(0, len(text), 4096):  # a slow writer: a torn file is visible
                    f.write(text[i:i + 4096])
                    f.flush()


def _predictions(version: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(version)
    n = 500
    label = rng.integers(0, 2, n)
    prob = rng.uniform(size=(n, 2))
    prob /= prob.sum(axis=1, keepdims=True)
    return {"val_index": np.arange(n), "val_label": label, "val_prob": prob,
            "test_index": np.arange(10), "test_label": np.arange(10) % 2,
            "test_prob": np.full((10, 2), 0.5), "version": np.array(version)}


def _static_fold(run: Path) -> None:
    """Fold 0: finished long ago."""
    task = run / "classify" / "fold_0"
    task.mkdir(parents=True)
    arrays = _predictions(0)
    arrays["val_index"] = arrays["val_index"] + 10_000
    with open(task / "predictions.npz", "wb") as f:
        np.savez(f, **arrays)
    (task / "result.json").write_text(json.dumps({
        "status": "completed", "stage": "classify", "fold": 0, "class_names": ["a", "b"],
        "data": {"n_folds": 2}, "metrics": {"val": {"macro_auc": 0.5}}}))


def _read_while_writing(run: Path, atomic_writes: bool, seconds: float) -> tuple[int, int, list]:
    """(reads, reads that saw fold 1 complete, problems) of the report's readers."""
    from lens.report.build import build_report
    from lens.report.collect import collect, load_predictions

    task = run / "classify" / "fold_1"
    task.mkdir(parents=True, exist_ok=True)
    proc = FORK.Process(target=_fold_writer, args=(str(task), atomic_writes, seconds))
    proc.start()
    reads, complete, problems = 0, 0, []
    try:
        while proc.is_alive():
            reads += 1
            try:
                outcomes = collect(run, "classify")
                fold1 = outcomes[1]
                if fold1.completed:
                    complete += 1
                    preds = load_predictions(fold1)
                    # predictions are renamed into place before the result: never missing
                    if preds is None or int(preds["version"]) < fold1.result["version"]:
                        problems.append("a complete result without its predictions")
                if reads % 10 == 0:
                    build_report(run)
            except Exception as exc:  # a torn file reached the report
                problems.append(f"{type(exc).__name__}: {exc}"[:120])
            if not atomic_writes:  # the control reads the raw files, as a naive reader
                try:
                    json.loads((task / "result.json").read_text())
                    with np.load(task / "predictions.npz", allow_pickle=False) as z:
                        z["val_prob"]
                except FileNotFoundError:
                    pass
                except Exception as exc:
                    problems.append(f"{type(exc).__name__}"[:120])
    finally:
        proc.join()
    return reads, complete, problems


def test_the_report_never_reads_a_fold_that_is_still_being_written(tmp_path):
    torch.set_num_threads(1)
    run = tmp_path / "run"
    _static_fold(run)
    reads, complete, problems = _read_while_writing(run, atomic_writes=True, seconds=4.0)
    print(f"report readers: {reads} reads while fold 1 was rewritten, {complete} saw it "
          f"complete, {len(problems)} problems")
    assert problems == []
    assert reads >= 50 and complete >= 10, (reads, complete)


def test_control_a_plain_writer_is_caught_tearing_files(tmp_path):
    """Without atomic writes the same readers do see half-written files: the check above
    is able to fail."""
    torch.set_num_threads(1)
    run = tmp_path / "run"
    _static_fold(run)
    reads, _, problems = _read_while_writing(run, atomic_writes=False, seconds=3.0)
    print(f"control: {reads} reads of a plain writer's files, {len(problems)} failures")
    assert reads >= 50 and problems, reads
