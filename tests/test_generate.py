"""sbatch rendering (golden files), shell quoting, `lens generate`, and the generated scripts
on the local Slurm cluster: chaining, requeue on exit 75 and on SIGUSR2, hostile paths.

Regenerate the golden files after an intended change:
    LENS_UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_generate.py
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lens.cli import app
from lens.cluster import slurmcli
from lens.cluster.sbatch import (
    AggregateJob,
    ArrayJob,
    Resources,
    SubmitScript,
    SubmitStep,
    array_spec,
    render_aggregate_script,
    render_array_script,
    render_submit_script,
    sbatch_quote,
)
from lens.data.h5file import write_packed
from lens.errors import LensError

GOLDEN = Path(__file__).resolve().parent / "golden"
# A folder name with everything a shell or sbatch could misread (Slurm forbids backslashes in
# log paths; they are tested where they can occur).
HOSTILE = "run 'q' \"dq\" $(touch pwned) `touch pwned2` #hash 100% ;x"

CONTAINER = ("apptainer", "exec", "--nv", "--bind", "/scratch/me,/runs/ssl",
             "/images/lens.sif", "python")


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("LENS_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with LENS_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{name} changed; LENS_UPDATE_GOLDEN=1 to accept"


def classify_job(**changes) -> ArrayJob:
    fields = dict(
        stage="classify", data="/data/lenses.h5", run_dir="/runs/exp1", folds=(0, 1, 2, 3, 4),
        python=("/opt/env/bin/python",),
        resources=Resources(partition="debug", account="lens", time="00:30:00", mem="2G"),
        array_parallelism=2, signal_delay_s=30, max_requeues=5,
    )
    fields.update(changes)
    return ArrayJob(**fields)


# ---- golden files -------------------------------------------------------------------------


def test_golden_classify_array():
    check_golden("classify.sbatch", render_array_script(classify_job()))


def test_golden_finetune_gpu_container():
    job = ArrayJob(
        stage="finetune", data="/scratch/me/lenses.h5", run_dir="/runs/ssl",
        folds=(0, 1, 2, 3, 4), python=CONTAINER,
        resources=Resources(partition="gpu", account="proj", qos="normal", time="08:00:00",
                            ntasks_per_node=4, cpus_per_task=8, gpus=4, gpu_type="a100",
                            mem="128G", constraint="ib", extra=("--mail-type=END,FAIL",)),
        config="/home/me/jobs/finetune.toml", sets=("finetune.mode=full", "optim.lr=3e-4"),
        setup=("module load apptainer", "export NCCL_DEBUG=WARN"),
        array_parallelism=None, signal_delay_s=300, max_requeues=20,
    )
    check_golden("finetune_gpu_container.sbatch", render_array_script(job))


def test_golden_report():
    job = AggregateJob(run_dir="/runs/exp1", python=("/opt/env/bin/python",),
                       resources=Resources(partition="debug", account="lens",
                                           time="00:10:00", mem="1G"))
    check_golden("report.sbatch", render_aggregate_script(job))


def test_golden_submit_pretrain_finetune():
    plan = SubmitScript("/runs/ssl", (
        SubmitStep("pretrain", "pretrain.sbatch"),
        SubmitStep("finetune", "finetune.sbatch", "pretrain", "aftercorr"),
        SubmitStep("report", "report.sbatch", "finetune", "afterany"),
    ))
    check_golden("submit_all.sh", render_submit_script(plan))


# ---- rendering rules -------------------------------------------------------------------------


def _sbatch_lines(script: str) -> list[str]:
    """The lines sbatch reads as options: #SBATCH lines before the first command line."""
    out = []
    for line in script.splitlines()[1:]:
        if not line.startswith("#"):
            break
        if line.startswith("#SBATCH"):
            out.append(line)
    return out


def test_all_sbatch_lines_come_first_and_have_no_variables():
    script = render_array_script(classify_job(setup=("module load x",)))
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash"
    header = _sbatch_lines(script)
    assert header == [line for line in lines if line.startswith("#SBATCH")]
    assert not any("$" in line for line in header)
    assert "set -euo pipefail" in lines
    assert "#SBATCH --array=0-4%2" in header and "#SBATCH --signal=B:USR2@30" in header
    assert "#SBATCH --requeue" in header


def test_gpu_resources_give_one_rank_per_gpu():
    job = classify_job(resources=Resources(ntasks_per_node=4, gpus=4, gpu_type="a100"))
    header = _sbatch_lines(render_array_script(job))
    assert "#SBATCH --ntasks-per-node=4" in header
    assert "#SBATCH --gres=gpu:a100:4" in header
    assert not any("gres" in line for line in _sbatch_lines(render_array_script(classify_job())))


@pytest.mark.parametrize("folds, par, spec", [
    ((0, 1, 2, 3, 4), None, "0-4"), ((0, 1, 2, 4), 2, "0-2,4%2"), ((3,), None, "3"),
    ((5, 0, 1, 7, 6), 1, "0-1,5-7%1"),
])
def test_array_spec(folds, par, spec):
    assert array_spec(folds, par) == spec


@pytest.mark.parametrize("folds", [(), (1, 1), (-1, 0)])
def test_array_spec_rejects(folds):
    with pytest.raises(LensError):
        array_spec(folds)


def test_run_dir_with_backslash_is_refused():
    with pytest.raises(LensError, match="backslash"):
        render_array_script(classify_job(run_dir="/runs/a\\b"))


def test_values_with_newlines_are_rejected():
    with pytest.raises(LensError, match="one line"):
        render_array_script(classify_job(run_dir="/runs/a\n#SBATCH --x"))
    with pytest.raises(LensError, match="one line"):
        render_array_script(classify_job(sets=("a=1\nrm -rf /",)))


def test_submit_rejects_bad_chains():
    with pytest.raises(LensError, match="not an earlier step"):
        render_submit_script(SubmitScript("/r", (SubmitStep("a", "a.sbatch", "b", "afterany"),
                                                 SubmitStep("b", "b.sbatch"))))
    with pytest.raises(LensError, match="must be one of"):
        render_submit_script(SubmitScript("/r", (SubmitStep("a", "a.sbatch"),
                                                 SubmitStep("b", "b.sbatch", "a", "after_ok"))))


# ---- quoting, checked by the parsers that read it back -----------------------------------------


def sbatch_parse(line: str) -> list[str]:
    """Words of an #SBATCH line as sbatch's _get_argument reads them (src/sbatch/opt.c):
    backslash escapes any character, quotes group, an unquoted # starts a comment."""
    words, word, quote, escape, started = [], "", None, False, False
    for ch in line[len("#SBATCH"):]:
        if escape:
            word, escape, started = word + ch, False, True
        elif ch == "\\":
            escape = True
        elif quote:
            if ch == quote:
                quote = None
            else:
                word += ch
        elif ch in "\"'":
            quote, started = ch, True
        elif ch == "#":
            break
        elif ch.isspace():
            if started:
                words.append(word)
            word, started = "", False
        else:
            word, started = word + ch, True
    if started:
        words.append(word)
    return words


@pytest.mark.parametrize("value", ["plain", "a b", "it's", 'say "hi"', "x#y", "back\\slash",
                                   "$(touch pwned)", HOSTILE + "\\"])
def test_sbatch_quote_round_trips(value):
    assert sbatch_parse(f"#SBATCH --job-name={sbatch_quote(value)}") == [f"--job-name={value}"]


def test_output_path_escapes_percent():
    script = render_array_script(classify_job(run_dir="/runs/100%"))
    line = next(x for x in _sbatch_lines(script) if x.startswith("#SBATCH --output="))
    assert sbatch_parse(line) == ["--output=/runs/100%%/logs/classify_%A_%a.out"]


STAND_INS = {
    # srun: record its argv (NUL-separated) and the rendezvous, then behave as asked.
    "srun": """#!/bin/bash
printf '%s\\0' "$@" > "$RECORD/srun.argv"
echo "$MASTER_ADDR:$MASTER_PORT" > "$RECORD/rendezvous"
case "${STANDIN_MODE:-ok}" in
    ok) exit 0 ;;
    tempfail) exit 75 ;;
    fail) exit 3 ;;
    signal)  # wait for the forwarded SIGUSR2, then "checkpoint" and ask to run again
        trap 'echo usr2 > "$RECORD/got"; exit 75' USR2
        touch "$RECORD/started"
        for _ in $(seq 1 200); do sleep 0.05; done
        exit 9 ;;
esac
""",
    "scontrol": """#!/bin/bash
if [[ "$1 $2" == "show hostnames" ]]; then echo node7; echo node8; exit 0; fi
printf '%s\\n' "$*" >> "$RECORD/scontrol"
""",
}


def _stand_in_env(tmp_path: Path, **env) -> dict[str, str]:
    bin_dir, record = tmp_path / "bin", tmp_path / "record"
    bin_dir.mkdir(exist_ok=True)
    record.mkdir(exist_ok=True)
    for name, text in STAND_INS.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "RECORD": str(record),
            "SLURM_JOB_ID": "1234", "SLURM_ARRAY_JOB_ID": "1230", "SLURM_ARRAY_TASK_ID": "3",
            "SLURM_JOB_NODELIST": "node[7-8]", "SLURM_JOB_NAME": "lens-classify", **env}


def hostile_job(tmp_path: Path, **changes) -> ArrayJob:
    return classify_job(data=f"{tmp_path}/data {HOSTILE}.h5", run_dir=f"{tmp_path}/{HOSTILE}",
                        config=f"{tmp_path}/cfg $(touch pwned).toml",
                        sets=("note=$(touch pwned)", "name=it's", "esc=a\\b\\n"),
                        python=(f"{tmp_path}/py $(touch pwned)/python", "-X", "dev"), **changes)


def _run_script(tmp_path: Path, script: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    path = tmp_path / "job.sbatch"
    path.write_text(script)
    syntax = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    return subprocess.run(["bash", str(path)], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=60)


def test_array_script_passes_hostile_values_verbatim(tmp_path):
    job = hostile_job(tmp_path)
    done = _run_script(tmp_path, render_array_script(job), _stand_in_env(tmp_path))
    assert done.returncode == 0, done.stderr
    argv = (tmp_path / "record" / "srun.argv").read_text().split("\0")[:-1]
    assert argv == [*job.python, "-m", "lens", "train", "--stage", "classify", "--data",
                    job.data, "--fold", "3", "--out", job.run_dir, "--config", job.config,
                    "--set", "note=$(touch pwned)", "--set", "name=it's", "--set", "esc=a\\b\\n"]
    assert (tmp_path / "record" / "rendezvous").read_text() == f"node7:{20000 + 1234}\n"
    assert not list(tmp_path.rglob("pwned*")), "an injected command ran"
    assert not (tmp_path / "record" / "scontrol").exists()  # exit 0: no requeue


def test_exit_75_requeues_the_array_task_from_the_host(tmp_path):
    env = _stand_in_env(tmp_path, STANDIN_MODE="tempfail", SLURM_RESTART_COUNT="2")
    done = _run_script(tmp_path, render_array_script(classify_job()), env)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "record" / "scontrol").read_text() == "requeue 1230_3\n"
    assert "requeueing it (restart 3)" in done.stderr


def test_requeue_stops_after_max_requeues(tmp_path):
    env = _stand_in_env(tmp_path, STANDIN_MODE="tempfail", SLURM_RESTART_COUNT="5")
    done = _run_script(tmp_path, render_array_script(classify_job(max_requeues=5)), env)
    assert done.returncode == 75
    assert not (tmp_path / "record" / "scontrol").exists()
    assert "giving up" in done.stderr


def test_other_failures_are_not_requeued(tmp_path):
    env = _stand_in_env(tmp_path, STANDIN_MODE="fail")
    done = _run_script(tmp_path, render_array_script(classify_job()), env)
    assert done.returncode == 3
    assert not (tmp_path / "record" / "scontrol").exists()


def test_usr2_to_the_batch_shell_reaches_the_step_then_requeues(tmp_path):
    path = tmp_path / "job.sbatch"
    path.write_text(render_array_script(classify_job()))
    env = _stand_in_env(tmp_path, STANDIN_MODE="signal")
    proc = subprocess.Popen(["bash", str(path)], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = tmp_path / "record" / "started"
    deadline = time.monotonic() + 20
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert started.exists()
    proc.send_signal(signal.SIGUSR2)  # what --signal=B:USR2@delay does
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert (tmp_path / "record" / "got").read_text() == "usr2\n"
    assert (tmp_path / "record" / "scontrol").read_text() == "requeue 1230_3\n"


def test_aggregate_script_quotes_the_run_dir(tmp_path):
    job = AggregateJob(run_dir=f"{tmp_path}/{HOSTILE}", python=("python3",))
    done = _run_script(tmp_path, render_aggregate_script(job), _stand_in_env(tmp_path))
    assert done.returncode == 0, done.stderr
    argv = (tmp_path / "record" / "srun.argv").read_text().split("\0")[:-1]
    assert argv == ["python3", "-m", "lens", "report", job.run_dir]
    assert not list(tmp_path.rglob("pwned*"))


SBATCH_STAND_IN = """#!/bin/bash
n=$(( $(cat "$RECORD/n" 2>/dev/null || echo 100) + 1 ))
echo $n > "$RECORD/n"
printf '%s\\n' "$*" >> "$RECORD/sbatch"
if [[ -n "${FAIL_AT:-}" && $n -eq $FAIL_AT ]]; then echo "sbatch: error: denied" >&2; exit 1; fi
echo "$n;lens"
"""


def _submit_env(tmp_path: Path, **env) -> dict[str, str]:
    env = _stand_in_env(tmp_path, **env)
    for name, text in (("sbatch", SBATCH_STAND_IN),
                       ("scancel", '#!/bin/bash\necho "$*" >> "$RECORD/scancel"\n')):
        (tmp_path / "bin" / name).write_text(text)
        (tmp_path / "bin" / name).chmod(0o755)
    return env


def _all_plan(run_dir: str) -> SubmitScript:
    return SubmitScript(run_dir, (
        SubmitStep("pretrain", "pretrain.sbatch"),
        SubmitStep("finetune", "finetune.sbatch", "pretrain", "aftercorr"),
        SubmitStep("report", "report.sbatch", "finetune", "afterany"),
    ))


def test_submit_script_chains_the_jobs(tmp_path):
    scripts = tmp_path / f"scripts {HOSTILE}"
    scripts.mkdir()
    (scripts / "submit.sh").write_text(render_submit_script(_all_plan(f"{tmp_path}/r $(x)")))
    done = subprocess.run(["bash", str(scripts / "submit.sh")], capture_output=True, text=True,
                          env=_submit_env(tmp_path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["pretrain 101", "finetune 102", "report 103"]
    calls = [shlex.split(x) for x in (tmp_path / "record" / "sbatch").read_text().splitlines()]
    # printf of "$*" joins words with spaces: compare on the options only
    assert calls[0][:1] == ["--parsable"]
    assert calls[1][:3] == ["--parsable", "--dependency=aftercorr:101",
                            "--kill-on-invalid-dep=yes"]
    assert calls[2][:3] == ["--parsable", "--dependency=afterany:102",
                            "--kill-on-invalid-dep=yes"]
    assert (tmp_path / "r $(x)" / "logs").is_dir()
    assert not list(tmp_path.rglob("pwned*"))


def test_submit_script_cancels_what_it_submitted_when_an_sbatch_fails(tmp_path):
    (tmp_path / "submit.sh").write_text(render_submit_script(_all_plan(f"{tmp_path}/r")))
    done = subprocess.run(["bash", str(tmp_path / "submit.sh")], capture_output=True,
                          text=True, env=_submit_env(tmp_path, FAIL_AT="103"), cwd=tmp_path)
    assert done.returncode != 0
    assert "denied" in done.stderr
    assert (tmp_path / "record" / "scancel").read_text() == "101 102\n"


# ---- lens generate ---------------------------------------------------------------------------


def packed(path: Path, n: int = 12, folds: int = 3, size: int = 8) -> Path:
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 2
    images = rng.normal(size=(n, 1, size, size)).astype(np.float32)
    images[labels == 1, :, size // 4: 3 * size // 4, size // 4: 3 * size // 4] += 3.0
    fold = (np.arange(n) // 2) % folds  # both classes in every fold
    write_packed(path, images, labels, ["no", "sub"], fold=fold, n_folds=folds)
    return path


def invoke(args: list[str]):
    return CliRunner().invoke(app, ["generate", *args])


def test_generate_writes_the_scripts(tmp_path):
    data = packed(tmp_path / "d.h5")
    run = tmp_path / "run"
    result = invoke(["--stage", "all", "--data", str(data), "--run", str(run),
                     "--set", "pretrain:epochs=2", "--python", "/opt/py/bin/python",
                     "--partition", "short", "--array-parallelism", "2"])
    assert result.exit_code == 0, result.output
    out = run / "slurm"
    assert sorted(p.name for p in out.iterdir()) == [
        "finetune.sbatch", "pretrain.sbatch", "report.sbatch", "submit.sh"]
    assert os.access(out / "submit.sh", os.X_OK) and (run / "logs").is_dir()
    pretrain = (out / "pretrain.sbatch").read_text()
    assert "#SBATCH --array=0-2%2" in pretrain and "#SBATCH --partition=short" in pretrain
    assert f"srun /opt/py/bin/python -m lens train --stage pretrain --data {data}" in pretrain
    assert "--set epochs=2" in pretrain
    assert "--set" not in (out / "finetune.sbatch").read_text()
    submit = (out / "submit.sh").read_text()
    assert "--dependency=aftercorr:\"$pretrain\"" in submit
    assert "--dependency=afterany:\"$finetune\"" in submit
    assert f"submit with: bash {out / 'submit.sh'}" in result.output


def test_generate_with_profile_and_container(tmp_path):
    (tmp_path / "data dir").mkdir()
    data = packed(tmp_path / "data dir" / "d.h5", folds=2)
    image = tmp_path / "lens.sif"
    image.write_bytes(b"")
    (tmp_path / "scratch").mkdir()
    profile = tmp_path / "gpu.toml"
    profile.write_text('partition = "gpu"\ngpus_per_task = 2\ncpus_per_task = 4\n'
                       'setup = ["module load apptainer"]\n'
                       f'binds = ["{tmp_path}/scratch"]\n')
    run = tmp_path / "run"
    result = invoke(["--stage", "classify", "--data", str(data), "--run", str(run),
                     "--profile", str(profile), "--container", str(image), "--time", "02:00:00",
                     "--out", str(tmp_path / "scripts")])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "scripts" / "classify.sbatch").read_text()
    binds = f"{tmp_path}/data dir,{run},{tmp_path}/scratch"
    expected = shlex.join(["srun", "apptainer", "exec", "--nv", "--bind", binds, str(image),
                           "python", "-m", "lens", "train"])
    assert expected in text
    for line in ("#SBATCH --gres=gpu:2", "#SBATCH --ntasks-per-node=2",
                 "#SBATCH --cpus-per-task=4", "#SBATCH --time=02:00:00", "module load apptainer"):
        assert line in text
    report = (tmp_path / "scripts" / "report.sbatch").read_text()
    assert "--nv" not in report and "gres" not in report  # the report needs no GPU


@pytest.mark.parametrize("args, message", [
    (["--data", "{tmp}/missing.h5"], "no such file"),
    (["--folds", "5"], "has only 3 folds"),
    (["--container", "{tmp}/none.sif"], "does not exist"),
    (["--container", "{tmp}/d.h5", "--bind", "{tmp}/nowhere"], "bind source"),
    (["--config", "{tmp}/none.toml"], "config file not found"),
    (["--set", "finetune:epochs=1"], "not part of this experiment"),
    (["--set", "epochz=3"], "epochz"),
    (["--profile", "{tmp}/bad.toml"], "unknown key"),
    (["--time", "soon"], "Slurm time"),
])
def test_generate_errors_name_the_problem(tmp_path, args, message):
    packed(tmp_path / "d.h5")
    (tmp_path / "bad.toml").write_text("nodes = 2\n")
    base = ["--stage", "classify", "--data", f"{tmp_path}/d.h5", "--run", f"{tmp_path}/run",
            "--out", f"{tmp_path}/out"]
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if args[0] == "--data":
        base = base[:2] + base[4:]
    result = invoke(base + args)
    assert result.exit_code != 0
    assert isinstance(result.exception, LensError), result.output
    assert message in str(result.exception)
    assert not (tmp_path / "out").exists() and not (tmp_path / "run").exists()  # nothing


def test_generate_help_has_examples():
    result = CliRunner().invoke(app, ["generate", "--help"])
    assert result.exit_code == 0 and "Examples:" in result.output


# ---- on the local Slurm cluster ------------------------------------------------------------

STAND_IN_PYTHON = """#!{python}
# Stands in for `python -m lens train|report`: records each run; fold 1 asks to run again
# (exit 75) the first time, fold 2 waits for SIGUSR2 the first time and then exits 75.
import json, os, signal, sys, time

argv = sys.argv[1:]
assert argv[:2] == ["-m", "lens"], argv
opts = {{argv[i]: argv[i + 1] for i in range(3, len(argv) - 1) if argv[i].startswith("--")}}
run = opts["--out"] if argv[2] == "train" else argv[3]
key = f"{{opts['--stage']}}_{{opts['--fold']}}" if argv[2] == "train" else "report"
restart = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
got = []
signal.signal(signal.SIGUSR2, lambda *a: got.append("usr2"))
os.makedirs(os.path.join(run, "standin"), exist_ok=True)
base = os.path.join(run, "standin", f"{{key}}_r{{restart}}")
open(base + ".started", "w").close()
code = 0
if key == "classify_1" and restart == 0:
    code = 75
if key == "classify_2" and restart == 0:
    for _ in range(600):
        if got:
            break
        time.sleep(0.1)
    code = 75 if got else 9
env = {{k: os.environ.get(k) for k in ("SLURM_PROCID", "SLURM_NTASKS", "MASTER_ADDR",
                                        "MASTER_PORT", "SLURM_ARRAY_TASK_ID")}}
with open(base + ".json", "w") as f:
    json.dump({{"argv": argv, "env": env, "got": got, "code": code, "end": time.time()}}, f)
sys.exit(code)
"""


@pytest.mark.slurm
@pytest.mark.slow
def test_generated_scripts_on_the_cluster_requeue_chain_and_quote(slurm_cluster, tmp_path):
    data = packed(tmp_path / "d.h5")
    run = tmp_path / HOSTILE
    py = tmp_path / "py dir" / "python"
    py.parent.mkdir()
    py.write_text(STAND_IN_PYTHON.format(python=sys.executable))
    py.chmod(0o755)
    result = invoke(["--stage", "classify", "--data", str(data), "--run", str(run),
                     "--profile", str(slurm_cluster.profile), "--python", shlex.quote(str(py)),
                     "--out", str(tmp_path / "scripts")])
    assert result.exit_code == 0, result.output
    done = subprocess.run(["bash", str(tmp_path / "scripts" / "submit.sh")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    ids = dict(line.split() for line in done.stdout.splitlines())
    classify, report = ids["classify"], ids["report"]

    # Fold 2 waits for SIGUSR2; send it to the batch shell, as --signal=B:USR2@T would.
    started = run / "standin" / "classify_2_r0.started"
    deadline = time.monotonic() + 120
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert started.exists(), _logs(run)
    slurmcli.scancel([f"{classify}_2"], signal="USR2", batch=True)

    states = slurmcli.wait_finished([classify, report], expected=4, timeout=240)
    assert {k: v.state for k, v in states.items()} == {
        f"{classify}_0": "COMPLETED", f"{classify}_1": "COMPLETED",
        f"{classify}_2": "COMPLETED", report: "COMPLETED"}, _logs(run)
    records = {p.name[:-5]: json.loads(p.read_text()) for p in (run / "standin").glob("*.json")}
    assert sorted(records) == ["classify_0_r0", "classify_1_r0", "classify_1_r1",
                               "classify_2_r0", "classify_2_r1", "report_r0"]
    assert records["classify_1_r0"]["code"] == 75 and records["classify_1_r1"]["code"] == 0
    assert records["classify_2_r0"]["got"] == ["usr2"]  # forwarded through srun
    # The report ran after every fold's last run (a requeued fold is not "finished").
    assert records["report_r0"]["end"] > max(r["end"] for k, r in records.items()
                                             if k.startswith("classify"))
    first = records["classify_0_r0"]
    assert first["argv"][first["argv"].index("--out") + 1] == str(run)
    assert first["env"]["SLURM_PROCID"] == "0" and first["env"]["MASTER_PORT"]
    assert records["report_r0"]["argv"] == ["-m", "lens", "report", str(run)]
    logs = sorted(p.name for p in (run / "logs").iterdir())
    assert logs == sorted([f"classify_{classify}_{i}.out" for i in range(3)]
                          + [f"report_{report}.out"])
    assert "requeueing it (restart 1)" in (run / "logs" / f"classify_{classify}_1.out").read_text()
    assert not list(tmp_path.rglob("pwned*")), "an injected command ran"


def _logs(run: Path) -> str:
    logs = run / "logs"
    if not logs.is_dir():
        return "no logs"
    return "\n".join(f"== {p.name}\n{p.read_text()[-2000:]}" for p in sorted(logs.iterdir()))


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("lens.train.task") is None,
                    reason="lens train (lens.train.task) is not part of this checkout")
def test_classify_experiment_end_to_end_on_the_cluster(slurm_cluster, tmp_path):
    """Real `lens train` tasks, two srun ranks each (gloo DDP on CPU), then `lens report`."""
    data = packed(tmp_path / "lenses.h5", n=48, folds=2, size=16)
    config = tmp_path / "tiny.toml"
    config.write_text('epochs = 1\nbatch_size = 8\nnum_workers = 0\ndevice = "cpu"\n'
                      "n_boot = 10\n")
    profile = tmp_path / "ddp.toml"
    profile.write_text(slurm_cluster.profile.read_text() + "ntasks_per_node = 2\n"
                       'setup = ["export OMP_NUM_THREADS=1"]\n')
    run = tmp_path / "runs" / "exp 1"
    result = invoke(["--stage", "classify", "--data", str(data), "--run", str(run),
                     "--config", str(config), "--profile", str(profile)])
    assert result.exit_code == 0, result.output
    done = subprocess.run(["bash", str(run / "slurm" / "submit.sh")], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    ids = dict(line.split() for line in done.stdout.splitlines())
    states = slurmcli.wait_finished(ids.values(), expected=3, timeout=400)
    assert all(s.state == "COMPLETED" for s in states.values()), (states, _logs(run))
    for fold in (0, 1):
        res = json.loads((run / "classify" / f"fold_{fold}" / "result.json").read_text())
        assert (res["status"], res["stage"], res["fold"]) == ("completed", "classify", fold)
        assert res["world_size"] == 2  # both srun ranks joined the rendezvous
    assert (run / "report.md").is_file(), _logs(run)


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("lens.train.stages.finetune") is None,
                    reason="the pretrain/finetune stages are not part of this checkout")
def test_pretrain_then_finetune_end_to_end_on_the_cluster(slurm_cluster, tmp_path):
    """--stage all: finetune fold K starts after pretrain fold K (aftercorr) and uses its
    encoder; the report runs after every finetune task."""
    data = packed(tmp_path / "lenses.h5", n=48, folds=2, size=16)
    config = tmp_path / "tiny.toml"
    config.write_text('epochs = 1\nbatch_size = 8\nnum_workers = 0\ndevice = "cpu"\n'
                      "n_boot = 10\n")
    run = tmp_path / "ssl run"
    result = invoke(["--stage", "all", "--data", str(data), "--run", str(run),
                     "--config", str(config), "--profile", str(slurm_cluster.profile)])
    assert result.exit_code == 0, result.output
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", str(run / "slurm" / "submit.sh")], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    ids = dict(line.split() for line in done.stdout.splitlines())
    states = slurmcli.wait_finished(ids.values(), expected=5, timeout=400)
    assert all(s.state == "COMPLETED" for s in states.values()), (states, _logs(run))
    pre, fine = ids["pretrain"], ids["finetune"]
    for fold in (0, 1):
        assert states[f"{fine}_{fold}"].start >= states[f"{pre}_{fold}"].end
        assert (run / "pretrain" / f"fold_{fold}" / "encoder.pt").is_file()
        res = json.loads((run / "finetune" / f"fold_{fold}" / "result.json").read_text())
        assert (res["status"], res["stage"], res["fold"]) == ("completed", "finetune", fold)
    assert (run / "report.md").is_file(), _logs(run)
