"""lens.train.checkpoint: RNG states round-trip, weights_only loading, atomic writes."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from lens.errors import LensError
from lens.train import checkpoint


class Code:  # a pickled class: weights_only loading must refuse it
    pass


def draws() -> tuple:
    return (random.random(), float(np.random.rand()), float(np.random.randn()),
            float(torch.rand(1)))


def test_rng_state_round_trip_through_a_weights_only_file(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.randn()  # leaves a cached Gaussian in numpy's legacy state
    path = tmp_path / "c.pt"
    checkpoint.save(path, {"rng": checkpoint.rng_state()})
    expected = draws()
    draws()  # move every generator on
    loaded = checkpoint.load(path)  # torch.load(weights_only=True) inside
    checkpoint.set_rng_state(loaded["rng"])
    assert draws() == expected


def test_model_optimizer_scheduler_round_trip(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8),
                                torch.nn.Linear(8, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 / (1 + s))
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(5, 4)).sum().backward()
        opt.step()
        sched.step()
    path = tmp_path / "c.pt"
    checkpoint.save(path, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                           "scheduler": sched.state_dict(), "history": [{"a": 1.0}],
                           "config": {"optim": {"lr": 0.1}}})
    ckpt = checkpoint.load(path)
    assert ckpt["format"] == checkpoint.FORMAT and ckpt["history"] == [{"a": 1.0}]
    clone = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8),
                                torch.nn.Linear(8, 2))
    clone.load_state_dict(ckpt["model"])
    # built first, then loaded (as lens.train.loop does): a scheduler built after loading
    # would reset the optimizer's learning rate to its step-0 value
    opt2 = torch.optim.AdamW(clone.parameters(), lr=0.1)
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, lambda s: 1 / (1 + s))
    opt2.load_state_dict(ckpt["optimizer"])
    sched2.load_state_dict(ckpt["scheduler"])
    assert sched2.get_last_lr() == sched.get_last_lr()
    x = torch.randn(5, 4)
    for m, o in ((model, opt), (clone, opt2)):  # one more identical step on each
        o.zero_grad()
        m(x).sum().backward()
        o.step()
    for a, b in zip(model.state_dict().values(), clone.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_atomic_write_leaves_the_previous_checkpoint_on_failure(tmp_path):
    path = tmp_path / "c.pt"
    checkpoint.save(path, {"step": 1})

    class Unsaveable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        checkpoint.save(path, {"step": 2, "bad": Unsaveable()})
    assert checkpoint.load(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary left behind


def test_load_refuses_foreign_files(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(LensError, match="cannot read this checkpoint"):
        checkpoint.load(tmp_path / "junk.pt")
    torch.save({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(LensError, match="not a lens checkpoint"):
        checkpoint.load(tmp_path / "other.pt")
    torch.save({"format": checkpoint.FORMAT, "x": Code()}, tmp_path / "code.pt")
    with pytest.raises(LensError, match="cannot read"):
        checkpoint.load(tmp_path / "code.pt")
