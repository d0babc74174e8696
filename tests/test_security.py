"""Nothing lens reads can run code: checkpoints, encoders and model files load with
``torch.load(weights_only=True)``, .npy/.npz with ``allow_pickle=False`` (or lens's own
header parser), and text from data files is never handed to a shell.

The scan below reads the package source, so a new unsafe call fails here; the files built
below carry real malicious pickles, so a refusal that only looks right fails too (the
payload would create a file).
"""

from __future__ import annotations

import ast
import io
import json
import os
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from test_bad_input import lens
from test_train_data import make_packed

from lens.errors import LensError

PACKAGE = Path(__file__).resolve().parents[1] / "lens"


class Payload:
    """Unpickling this runs ``touch <marker>``: proof that a loader executed file content."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))




# ---- the source: every loader call carries its safety flag ---------------------------------


def _calls(tree: ast.AST, module_names: set[str], attr: str) -> list[ast.Call]:
    out = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == attr and isinstance(node.func.value, ast.Name)
                and node.func.value.id in module_names):
            out.append(node)
    return out


def _keyword(call: ast.Call, name: str) -> object:
    for kw in call.keywords:
        if kw.arg == name and isinstance(kw.value, ast.Constant):
            return kw.value.value
    return "missing"


def _sources() -> dict[str, ast.AST]:
    return {str(p.relative_to(PACKAGE.parent)): ast.parse(p.read_text(), str(p))
            for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_torch_load_is_weights_only_and_every_np_load_refuses_pickles():
    torch_loads, np_loads, unsafe = 0, 0, []
    for name, tree in _sources().items():
        for call in _calls(tree, {"torch"}, "load"):
            torch_loads += 1
            if _keyword(call, "weights_only") is not True:
                unsafe.append(f"{name}:{call.lineno}: torch.load without weights_only=True")
        for call in _calls(tree, {"np", "numpy"}, "load"):
            np_loads += 1
            if _keyword(call, "allow_pickle") is not False:
                unsafe.append(f"{name}:{call.lineno}: np.load without allow_pickle=False")
        for call in _calls(tree, {"np", "numpy"}, "save"):
            if _keyword(call, "allow_pickle") is True:
                unsafe.append(f"{name}:{call.lineno}: np.save with allow_pickle=True")
    assert unsafe == []
    # checkpoint, encoder and model files; predictions.npz and single .npy images
    assert torch_loads >= 3 and np_loads >= 2, (torch_loads, np_loads)


def test_no_pickle_eval_or_shell_in_the_package():
    found = []
    for name, tree in _sources().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [
                    node.module or ""]
                found += [f"{name}:{node.lineno}: imports {m}" for m in mods
                          if m.split(".")[0] in ("pickle", "marshal", "shelve", "dill", "yaml")]
            if isinstance(node, ast.Call):
                f = node.func
                if isinstance(f, ast.Name) and f.id in ("eval", "exec", "compile"):
                    found.append(f"{name}:{node.lineno}: {f.id}()")
                if isinstance(f, ast.Attribute) and f.attr in ("system", "popen") and \
                        isinstance(f.value, ast.Name) and f.value.id == "os":
                    found.append(f"{name}:{node.lineno}: os.{f.attr}()")
                if any(kw.arg == "shell" and isinstance(kw.value, ast.Constant)
                       and kw.value.value is True for kw in node.keywords):
                    found.append(f"{name}:{node.lineno}: shell=True")
    assert found == []


# ---- malicious files are refused, and their payload never runs -------------------------------


def test_checkpoint_with_a_malicious_pickle_is_refused(tmp_path):
    from lens.train import checkpoint

    marker = tmp_path / "pwned"
    path = tmp_path / "checkpoint.pt"
    torch.save({"format": checkpoint.FORMAT, "model": {}, "x": Payload(marker)}, path)
    with pytest.raises(LensError, match=f"{path}: cannot read this checkpoint"):
        checkpoint.load(path)
    assert not marker.exists()


def test_resuming_from_a_malicious_checkpoint_is_refused(tmp_path, capsys):
    data = make_packed(tmp_path / "d.h5", n=64, n_test=8, n_folds=2)
    task = tmp_path / "run" / "classify" / "fold_0"
    task.mkdir(parents=True)
    marker = tmp_path / "pwned"
    torch.save({"format": "lens-checkpoint-1", "x": Payload(marker)}, task / "checkpoint.pt")
    code, err = lens(capsys, "train", "--stage", "classify", "--data", data, "--fold", "0",
                     "--out", tmp_path / "run", "--set", "batch_size=8")
    assert code == 1
    assert f"error: {task}/checkpoint.pt: cannot read this checkpoint" in err
    assert "delete it to start the task again" in err
    assert not marker.exists()


def test_encoder_and_model_files_with_a_malicious_pickle_are_refused(tmp_path):
    from lens.predict.models import _load as load_model_file
    from lens.train.stages.finetune import load_encoder

    marker = tmp_path / "pwned"
    path = tmp_path / "encoder.pt"
    torch.save({"backbone": "resnet18", "in_channels": 1, "image_size": 32,
                "state_dict": {}, "x": Payload(marker)}, path)
    with pytest.raises(LensError, match=f"{path}: cannot read the encoder"):
        load_encoder(path, "resnet18", 1, 32)
    with pytest.raises(LensError, match=f"{path}: cannot read the model"):
        load_model_file(path)
    assert not marker.exists()


def _pickled_npy(marker: Path) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.array([Payload(marker), 1], dtype=object), allow_pickle=True)
    return buffer.getvalue()


def test_pickled_npy_images_are_refused(tmp_path):
    from lens.data.readers import read_header, read_image
    from lens.stats.load import _read_npy

    marker = tmp_path / "pwned"
    path = tmp_path / "image.npy"
    path.write_bytes(_pickled_npy(marker))
    for reader in (read_header, read_image):
        with pytest.raises(Exception, match="pickled"):
            reader(str(path))
    with pytest.raises(LensError, match=f"{path}: not a readable .npy image .*allow_pickle"):
        _read_npy(path)
    assert not marker.exists()


def test_pickled_predictions_are_not_loaded_by_the_report(tmp_path):
    from lens.report.collect import FoldOutcome, load_predictions

    marker = tmp_path / "pwned"
    task = tmp_path / "classify" / "fold_0"
    task.mkdir(parents=True)
    with open(task / "predictions.npz", "wb") as f:
        np.savez(f, val_prob=np.array([Payload(marker)], dtype=object), val_label=np.zeros(1))
    outcome = FoldOutcome("classify", 0, "COMPLETED", {"status": "completed"}, task)
    assert load_predictions(outcome) is None  # refused, as an unreadable fold
    assert not marker.exists()


# ---- text inside data files is data ---------------------------------------------------------


def test_shell_text_in_a_packed_file_is_never_run(tmp_path, capsys, monkeypatch):
    """Class names and the provenance command of a packed file are shown, stored and
    compared, never executed: inspect, generate, train and report all pass them through."""
    import h5py

    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)
    data = make_packed(tmp_path / "d.h5", n=64, n_test=8, n_folds=2)
    with h5py.File(data, "a") as f:
        f.attrs["class_names"] = json.dumps(["$(touch pwned1)", "`touch pwned2`"])
        f.attrs["command"] = "lens pack x; touch pwned3 $(touch pwned4)"
    code, err = lens(capsys, "inspect", data)
    assert code == 0, err
    code, err = lens(capsys, "generate", "--stage", "classify", "--data", data, "--run",
                     tmp_path / "run")
    assert code == 0, err
    scripts = "".join(p.read_text() for p in (tmp_path / "run" / "slurm").iterdir())
    assert "pwned" not in scripts  # nothing from inside the file reaches a script
    for fold in (0, 1):
        code, err = lens(capsys, "train", "--stage", "classify", "--data", data, "--fold",
                         fold, "--out", tmp_path / "run", "--set", "epochs=1", "--set",
                         "batch_size=8", "--set", "n_boot=0", "--set", "model.name=cnn_attention",
                         "--set", "device=cpu", "--set", "num_workers=0")
        assert code == 0, err
    code, err = lens(capsys, "report", tmp_path / "run")
    assert code == 0, err
    assert "$(touch pwned1)" in (tmp_path / "run" / "report.md").read_text()
    assert not list(tmp_path.rglob("pwned*")), "text from a data file was executed"
