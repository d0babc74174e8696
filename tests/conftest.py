"""Shared fixtures. ``slurm_cluster``: the local one-node Slurm cluster (slurm/dev/start.sh)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
START = REPO / "slurm" / "dev" / "start.sh"


@dataclass(frozen=True)
class SlurmCluster:
    """What tests need to know to submit to the local cluster."""

    partition: str = "debug"
    account: str = "lens"
    profile: Path = REPO / "slurm" / "profiles" / "local.toml"


def _cluster_problem() -> str | None:
    """None when sinfo shows an idle node and sacct answers; else what is wrong."""
    if shutil.which("sinfo") is None:
        return "sinfo is not installed"
    try:
        node = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True,
                              text=True, timeout=15)
        if node.returncode != 0:
            return f"sinfo failed: {node.stderr.strip()}"
        states = node.stdout.split()
        if not any(s.rstrip("*") in ("idle", "mixed", "allocated") for s in states):
            return f"no usable node (sinfo: {' '.join(states) or 'nothing'})"
        acct = subprocess.run(["sacct", "-n", "-X", "-S", "now"], capture_output=True,
                              text=True, timeout=15)
        if acct.returncode != 0:
            return f"sacct failed: {acct.stderr.strip()}"
    except subprocess.TimeoutExpired as exc:
        return f"{exc.cmd[0]} did not answer"
    return None


@pytest.fixture(scope="session")
def slurm_cluster() -> SlurmCluster:
    """The local Slurm cluster, started with slurm/dev/start.sh when it is not up.

    Fails (does not skip) with the reason when the cluster cannot be started: the Slurm
    tests are part of the suite, in CI too.
    """
    if _cluster_problem() is None:
        return SlurmCluster()
    try:
        done = subprocess.run(["bash", str(START)], capture_output=True, text=True,
                              timeout=600, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{START} did not finish within 600 s")
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-40:])
        pytest.fail(f"could not start the local Slurm cluster ({START}):\n{tail}")
    problem = _cluster_problem()
    if problem is not None:
        pytest.fail(f"the local Slurm cluster started but is not usable: {problem}")
    return SlurmCluster()


@pytest.fixture
def one_torch_thread():
    """One torch CPU thread for the test (small models: threads only contend), restored."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
