"""pretrain -> encoder.pt -> finetune: the hand-over and its refusals."""

from __future__ import annotations

import json

import pytest
import torch
from test_train_cli import lens
from test_train_data import make_packed

from lens.errors import LensError
from lens.train.task import TaskSpec, run_task

FAST = ("epochs=1", "batch_size=32", "n_boot=0")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    return make_packed(tmp_path_factory.mktemp("d") / "d.h5", n=160, n_test=20)


@pytest.fixture(scope="module")
def pretrained_run(data_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    torch.set_num_threads(1)
    result = run_task(TaskSpec("pretrain", data_file, 0, out,
                               overrides=FAST + ("method.name=rotation",
                                                 "method.params.all_rotations=false")))
    return out, result


def test_pretrain_writes_encoder_and_loss_curve(pretrained_run):
    out, result = pretrained_run
    task = out / "pretrain" / "fold_0"
    assert sorted(p.name for p in task.iterdir()) == [
        "checkpoint.pt", "config.json", "encoder.pt", "metrics.jsonl", "result.json"]
    enc = torch.load(task / "encoder.pt", weights_only=True)
    assert enc["backbone"] == "resnet18" and enc["in_channels"] == 1
    assert enc["image_size"] == 32 and enc["method"] == "rotation"
    assert "conv1.weight" in enc["state_dict"]
    assert result["status"] == "completed" and len(result["metrics"]["loss_curve"]) == 1
    assert 0 <= result["metrics"]["linear_probe"]["macro_auc"] <= 1
    line = json.loads((task / "metrics.jsonl").read_text())
    assert "val" not in line and line["train_loss"] == result["metrics"]["loss_curve"][0]


@pytest.mark.parametrize("mode", ["linear", "mlp", "full"])
def test_finetune_modes_load_the_encoder(pretrained_run, data_file, mode):
    out, _ = pretrained_run
    result = run_task(TaskSpec("finetune", data_file, 0, out / mode,
                               overrides=FAST + (f"finetune.mode={mode}",),
                               pretrained=out / "pretrain/fold_0/encoder.pt"))
    assert result["status"] == "completed" and result["metrics"]["val"]["n"] == result["n_val"]
    assert result["encoder"]["method"] == "rotation" and result["encoder"]["fold"] == 0
    ckpt = torch.load(out / mode / "finetune/fold_0/checkpoint.pt", weights_only=True)
    enc = torch.load(out / "pretrain/fold_0/encoder.pt", weights_only=True)
    w0, w1 = enc["state_dict"]["conv1.weight"], ckpt["model"]["backbone.conv1.weight"]
    if mode == "full":
        assert not torch.equal(w0, w1)  # trained
    else:
        assert torch.equal(w0, w1)  # frozen: the pretrained weights, untouched


def test_finetune_finds_the_encoder_of_its_fold_in_the_run(pretrained_run, data_file):
    out, _ = pretrained_run
    result = run_task(TaskSpec("finetune", data_file, 0, out, overrides=FAST))
    assert result["stage"] == "finetune"
    with pytest.raises(LensError, match="pretrain/fold_1/encoder.pt: no pretrained encoder"):
        run_task(TaskSpec("finetune", data_file, 1, out, overrides=FAST))


def test_finetune_refuses_a_missing_encoder(data_file, tmp_path, capsys):
    code, err = lens("train", "--stage", "finetune", "--data", str(data_file), "--fold", "0",
                     "--out", str(tmp_path), capsys=capsys)
    assert code == 1 and "no pretrained encoder" in err and "--stage pretrain" in err
    assert not (tmp_path / "finetune").exists()


def test_finetune_refuses_another_backbone_or_channel_count(pretrained_run, data_file, tmp_path):
    out, _ = pretrained_run
    enc = torch.load(out / "pretrain/fold_0/encoder.pt", weights_only=True)
    other = tmp_path / "other.pt"
    torch.save({**enc, "backbone": "cnn_attention"}, other)
    with pytest.raises(LensError, match="'cnn_attention' backbone but this config asks for "
                                        "model.name='resnet18'"):
        run_task(TaskSpec("finetune", data_file, 0, tmp_path, overrides=FAST, pretrained=other))
    torch.save({**enc, "in_channels": 3}, other)
    with pytest.raises(LensError, match="3-channel images but the data has 1 channel"):
        run_task(TaskSpec("finetune", data_file, 0, tmp_path, overrides=FAST, pretrained=other))
    other.write_bytes(b"junk")
    with pytest.raises(LensError, match="cannot read the encoder"):
        run_task(TaskSpec("finetune", data_file, 0, tmp_path, overrides=FAST, pretrained=other))
    assert not (tmp_path / "finetune").exists()


def test_pretrain_on_an_unlabeled_file_without_folds(tmp_path):
    data = make_packed(tmp_path / "u.h5", n=80, n_folds=0, n_test=0, unlabeled=True)
    result = run_task(TaskSpec("pretrain", data, 0, tmp_path / "run",
                               overrides=FAST + ("method.name=rotation",
                                                 "method.params.all_rotations=false")))
    assert result["n_train"] == 80 and result["metrics"]["linear_probe"] is None
    with pytest.raises(LensError, match="unknown param"):
        run_task(TaskSpec("pretrain", data, 1, tmp_path / "run",
                          overrides=FAST + ("method.params.nope=1",)))
