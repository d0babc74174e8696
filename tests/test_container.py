"""The Apptainer definition (parsed: it cannot be built here) and the container commands."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import lens
from lens.cluster.container import (
    check_image_python,
    container_argv,
    image_python_version,
    parse_bind,
    resolve_binds,
    shell_command,
)
from lens.errors import LensError

REPO = Path(__file__).resolve().parents[1]
DEF = REPO / "containers" / "lens.def"


def parse_definition(text: str) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Header keywords and the body lines of each %section (comments dropped)."""
    header: dict[str, str] = {}
    sections: dict[str, list[str]] = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("%"):
            current = line[1:].split()[0]
            assert current not in sections, f"section %{current} twice"
            sections[current] = []
        elif current is None:
            if line and not line.startswith("#"):
                key, _, value = line.partition(":")
                header[key.strip()] = value.strip()
        elif line and not line.startswith("#"):
            sections[current].append(line)
    return header, sections


@pytest.fixture(scope="module")
def definition():
    return parse_definition(DEF.read_text())


def test_definition_header_pins_a_pytorch_cuda_base(definition):
    header, _ = definition
    assert header["Bootstrap"] == "docker"
    image, _, tag = header["From"].partition(":")
    assert image == "pytorch/pytorch"
    # An exact release tag (no "latest"), with its CUDA and cuDNN, runtime flavour.
    match = re.fullmatch(r"(\d+\.\d+\.\d+)-cuda(\d+\.\d+)-cudnn(\d+)-runtime", tag)
    assert match, tag
    torch_version, cuda, cudnn = match.groups()
    _, sections = definition
    labels = dict(line.split(None, 1) for line in sections["labels"])
    assert labels["lens.torch"] == torch_version
    assert labels["lens.cuda"] == cuda and labels["lens.cudnn"] == cudnn
    assert labels["lens.version"] == lens.__version__
    assert re.fullmatch(r"3\.\d+", labels["lens.python"])
    # The Python of the base is stated next to From: for whoever changes the base.
    assert f"Python {labels['lens.python']}" in DEF.read_text().split("From:")[0]
    assert "torch>=2.3" in (REPO / "pyproject.toml").read_text()  # the base satisfies lens
    assert tuple(map(int, torch_version.split(".")[:2])) >= (2, 3)


def test_definition_sections(definition):
    _, sections = definition
    for name in ("files", "post", "environment", "runscript", "test", "labels", "help"):
        assert sections.get(name), f"%{name} missing or empty"
    assert sections["runscript"] == ['exec python -m lens "$@"']
    post = "\n".join(sections["post"])
    assert "pip install --constraint" in post  # the base's torch is kept
    assert "torch==" in post and "torchvision==" in post
    test = "\n".join(sections["test"])
    assert "lens --help" in test and "smoke.sh" in test
    assert "export PYTHONUNBUFFERED=1" in sections["environment"]
    commands = [line for line in sections["help"] if "apptainer " in line]
    assert commands and not any("--cleanenv" in line for line in commands)


def test_definition_files_exist_in_the_repository(definition):
    _, sections = definition
    sources = [line.split()[0] for line in sections["files"]]
    assert {"pyproject.toml", "lens"} <= set(sources)
    for src in sources:
        assert (REPO / src).exists(), f"%files copies {src}, which is not in the repository"
    readme = re.search(r'readme\s*=\s*"([^"]+)"', (REPO / "pyproject.toml").read_text())
    assert readme is None or readme.group(1) in sources  # pip install needs it
    # Every /opt/lens path the other sections use is copied in by %files.
    targets = {line.split()[1] for line in sections["files"]}
    used = set(re.findall(r"/opt/lens/[\w./-]+", "\n".join(sections["test"])))
    assert used <= targets


def test_smoke_script_runs_here(tmp_path):
    """The image's %test script, run against this checkout's lens (CPU, a few seconds)."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    done = subprocess.run(["bash", str(REPO / "containers" / "smoke.sh"), sys.executable],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "smoke test passed" in done.stdout
    assert not list(tmp_path.glob("lens-smoke.*"))  # it cleans up after itself


# ---- container commands ----------------------------------------------------------------------


@pytest.fixture
def dirs(tmp_path):
    paths = {}
    for name in ("data", "run 1", "it's", "$(touch pwned)", "data/sub"):
        (tmp_path / name).mkdir(parents=True, exist_ok=True)
        paths[name] = str(tmp_path / name)
    return paths


def test_container_argv_with_gpus_and_binds(dirs, tmp_path):
    argv = container_argv("/images/lens.sif", [dirs["data"], dirs["run 1"]], gpus=True)
    assert argv == ["apptainer", "exec", "--nv", "--bind",
                    f"{dirs['data']},{dirs['run 1']}", "/images/lens.sif", "python"]


def test_container_argv_without_gpus_has_no_nv_and_never_cleanenv(dirs):
    argv = container_argv("lens.sif", [dirs["data"]], gpus=False, python="python3")
    assert "--nv" not in argv and "--cleanenv" not in argv
    assert argv[-2:] == ["lens.sif", "python3"]
    assert container_argv("lens.sif", [], gpus=False) == ["apptainer", "exec", "lens.sif",
                                                          "python"]


def test_binds_deduplicated_and_nested_ones_dropped(dirs):
    binds = resolve_binds([dirs["data"], dirs["data"] + "/", dirs["data/sub"], dirs["run 1"],
                           f"{dirs['data']}:/mnt/data:ro", dirs["run 1"]])
    assert [b.spec() for b in binds] == [dirs["data"], dirs["run 1"],
                                         f"{dirs['data']}:/mnt/data:ro"]


def test_bind_source_must_exist(tmp_path):
    with pytest.raises(LensError, match=f"bind source {tmp_path}/missing does not exist"):
        container_argv("lens.sif", [tmp_path / "missing"], gpus=False)


@pytest.mark.parametrize("spec, problem", [
    ("/a:b", "must be absolute"),
    ("/a:/b:rx", "must be ro or rw"),
    ("/a:/b:ro:x", "expected SRC"),
    ("", "expected SRC"),
    ("/a,b", "comma"),
])
def test_bad_bind_specs(spec, problem):
    with pytest.raises(LensError, match=problem):
        parse_bind(spec)


def test_two_sources_at_one_destination(dirs):
    with pytest.raises(LensError, match="/mnt"):
        resolve_binds([f"{dirs['data']}:/mnt", f"{dirs['run 1']}:/mnt"])


def test_shell_command_quotes_hostile_paths(dirs, tmp_path):
    argv = container_argv(str(tmp_path / "img's.sif"), [dirs["it's"], dirs["$(touch pwned)"]],
                          gpus=True)
    line = shell_command(argv)
    assert shlex.split(line) == argv
    # Evaluated by a shell, the words come back unchanged and nothing runs.
    done = subprocess.run(["bash", "-c", 'printf "%s\\n" ' + line], capture_output=True,
                          text=True, cwd=tmp_path)
    assert done.stdout.splitlines() == argv
    assert not (tmp_path / "pwned").exists()


# ---- the image's Python -------------------------------------------------------------------


def test_image_python_version_through_the_runner():
    seen = []

    def runner(argv):
        seen.append(argv)
        return "(3, 11)\n"

    assert image_python_version("lens.sif", runner) == (3, 11)
    assert seen[0][:4] == ["apptainer", "exec", "lens.sif", "python"]
    assert check_image_python("lens.sif", runner, local=(3, 11)) == (3, 11)


def test_image_python_mismatch_says_how_to_fix():
    with pytest.raises(LensError) as err:
        check_image_python("/img/lens.sif", lambda argv: "(3, 12)", local=(3, 11))
    msg = str(err.value)
    assert "/img/lens.sif has Python 3.12" in msg and "Python 3.11" in msg
    assert "rebuild the image from a base with Python 3.11" in msg
    assert "submit from a Python 3.12 environment" in msg


def test_image_python_unreadable_output():
    with pytest.raises(LensError, match="cannot read its Python version"):
        image_python_version("x.sif", lambda argv: "FATAL: image not found")


def test_default_runner_reports_a_missing_apptainer(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(LensError, match="apptainer not found on PATH"):
        image_python_version("x.sif")
