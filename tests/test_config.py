"""lens.train.config: TOML + --set overrides, every key and type checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lens.errors import LensError
from lens.train.config import (
    ClassifyConfig,
    FinetuneConfig,
    PretrainConfig,
    diff,
    load_config,
    parse_override,
    to_dict,
    tomllib,
)

JOBS = Path(__file__).resolve().parents[1] / "jobs"


@pytest.mark.parametrize("stage,cls", [("classify", ClassifyConfig),
                                       ("pretrain", PretrainConfig),
                                       ("finetune", FinetuneConfig)])
def test_shipped_job_files_load_and_set_every_key(stage, cls):
    cfg = load_config(stage, JOBS / f"{stage}.toml")
    assert isinstance(cfg, cls)
    assert cfg.model.name == "resnet18"
    raw = tomllib.loads((JOBS / f"{stage}.toml").read_text())
    missing = set(to_dict(cfg)) - set(raw)
    assert not missing, f"jobs/{stage}.toml should show every key, misses {missing}"


def test_defaults_without_a_file():
    cfg = load_config("classify")
    assert cfg == ClassifyConfig()
    assert load_config("pretrain").augment.dihedral is False  # methods make their own views
    json.dumps(to_dict(load_config("pretrain")))  # JSON-ready


def test_overrides_are_typed():
    cfg = load_config("finetune", None, ("optim.lr=0.01", "epochs=3", "deterministic=true",
                                         "finetune.mode=full", "model.name=vit_tiny",
                                         "optim.warmup_epochs=2", "data_on_device=false"))
    assert cfg.optim.lr == 0.01 and cfg.epochs == 3 and cfg.deterministic is True
    assert cfg.finetune.mode == "full" and cfg.model.name == "vit_tiny"
    assert cfg.optim.warmup_epochs == 2.0 and isinstance(cfg.optim.warmup_epochs, float)
    assert cfg.data_on_device is False
    assert load_config("classify", None, ("data_on_device=auto",)).data_on_device == "auto"


def test_method_params_are_a_free_table():
    cfg = load_config("pretrain", None, ("method.name=byol", "method.params.momentum=0.99"))
    assert cfg.method.name == "byol" and cfg.method.params == {"momentum": 0.99}


def test_file_then_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("epochs = 7\n[optim]\nlr = 0.5\n")
    cfg = load_config("classify", path, ("optim.lr=0.25",))
    assert cfg.epochs == 7 and cfg.optim.lr == 0.25


def test_unknown_key_in_file_lists_valid_keys(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[optim]\nlrr = 0.1\n")
    with pytest.raises(LensError) as err:
        load_config("classify", path)
    msg = str(err.value)
    assert str(path) in msg and "optim.lrr" in msg and "valid keys" in msg
    assert "lr=0.001" in msg and "weight_decay=0.05" in msg


def test_unknown_top_level_and_set_keys_list_valid_keys(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("epoch = 3\n")
    with pytest.raises(LensError, match="unknown config key.*epoch.*valid keys:.*epochs=30"):
        load_config("classify", path)
    with pytest.raises(LensError, match=r"--set optim\.betas=1.*unknown config key 'betas'.*"
                                        r"valid keys:.*beta1=0\.9"):
        load_config("classify", None, ("optim.betas=1",))
    with pytest.raises(LensError, match="unknown config key 'finetune'"):
        load_config("classify", None, ("finetune.mode=full",))  # a key of another stage
    with pytest.raises(LensError, match="is a value, not a table"):
        load_config("classify", None, ("seed.x=1",))


@pytest.mark.parametrize("override,expected", [
    ("optim.lr=abc", r"optim\.lr = 'abc' has the wrong type: expected float, got str"),
    ("epochs=2.5", r"epochs = 2\.5 has the wrong type: expected int, got float"),
    ("deterministic=1", r"deterministic = 1 has the wrong type: expected bool, got int"),
    ("device=gpu", r"device = 'gpu' has the wrong type: expected 'auto' \| 'cpu' \| 'cuda'"),
    ("data_on_device=yes", r"data_on_device = 'yes'.*expected bool \| 'auto'"),
    ("model=3", r"config section \[model\] must be a table"),
])
def test_wrongly_typed_values_name_key_value_and_type(override, expected):
    with pytest.raises(LensError, match=expected):
        load_config("classify", None, (override,))


def test_range_checks():
    with pytest.raises(LensError, match="epochs = 0 must be >= 1"):
        load_config("classify", None, ("epochs=0",))
    with pytest.raises(LensError, match="optim.lr = -1.0 must be > 0"):
        load_config("classify", None, ("optim.lr=-1",))
    with pytest.raises(LensError, match="augment.brightness"):
        load_config("classify", None, ("augment.brightness=2.0",))


def test_bad_inputs(tmp_path):
    with pytest.raises(LensError, match="config file not found"):
        load_config("classify", tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("epochs = = 3\n")
    with pytest.raises(LensError, match="not valid TOML"):
        load_config("classify", bad)
    with pytest.raises(LensError, match="expected key=value"):
        load_config("classify", None, ("epochs",))
    with pytest.raises(LensError, match="unknown stage"):
        load_config("train")


def test_parse_override_values():
    assert parse_override("a.b=0.5") == (["a", "b"], 0.5)
    assert parse_override("name=resnet18") == (["name"], "resnet18")
    assert parse_override('name="x y"') == (["name"], "x y")
    assert parse_override("flag=false") == (["flag"], False)


def test_diff_names_changed_keys():
    a = to_dict(load_config("classify"))
    b = to_dict(load_config("classify", None, ("optim.lr=0.5", "epochs=2")))
    assert diff(a, b) == ["epochs: 30 -> 2", "optim.lr: 0.001 -> 0.5"]
    assert diff(a, a) == []
