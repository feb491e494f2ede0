"""A closed pipe is not a bug: every command with its stdout's reader gone (`| head`, `| true`) finishes its work
and exits with its own status, quietly, with no crash file."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import tiny_params, tool_env, write_params

# Runs the commands in one interpreter (TensorFlow imported once), each with fd 1 (and, where asked,
# fd 2) the writing end of a pipe whose reading end is already closed: the first write fails with
# EPIPE, as under `trainwell gate | true`. Prints {command: [status, crash files]} to the results file.
DRIVER = r"""
import json, os, sys, tempfile
from trainwell.cli import main

commands, results_file, crash_folder = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
tempfile.tempdir = crash_folder  # where an internal error would save its traceback
stderr_copy = os.dup(2)
results = {}
for arguments, close_stderr in commands:
    sys.stdout.flush()
    for descriptor in ([1, 2] if close_stderr else [1]):
        read_end, write_end = os.pipe()
        os.close(read_end)  # the reader is gone before the command writes anything
        os.dup2(write_end, descriptor)
        os.close(write_end)
    try:
        status = main(arguments)
    except SystemExit as done:  # --help and usage errors leave through argparse
        status = done.code
    os.dup2(stderr_copy, 2)
    crashes = sorted(name for name in os.listdir(crash_folder) if name.startswith("trainwell-crash"))
    results[" ".join(arguments) + (" 2>closed" if close_stderr else "")] = [status, crashes]
with open(results_file, "w") as handle:
    json.dump(results, handle)
"""


def run_closed(project: Path, commands: list[tuple[list[str], bool]], tmp_path: Path) -> dict[str, list]:
    crashes = tmp_path / "crashes"
    crashes.mkdir(exist_ok=True)
    results = tmp_path / "results.json"
    done = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(commands), str(results), str(crashes)],
                          cwd=project, env=tool_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr[-3000:]
    return json.loads(results.read_text())


@pytest.fixture
def fake_curves(workdir: Path) -> None:
    """The training curves dvc.yaml's plots name, without training (`trainwell plots` draws them)."""
    for split in ("train", "validation"):
        for metric in ("loss", "accuracy"):
            table = workdir / "dvclive" / "plots" / "metrics" / split / f"{metric}.tsv"
            table.parent.mkdir(parents=True, exist_ok=True)
            table.write_text(f"step\t{metric}\n0\t0.5\n1\t0.4\n")


@pytest.mark.tf_process  # every command in one child interpreter, which imports TensorFlow
def test_every_command_with_a_closed_stdout_finishes_and_keeps_its_status(workdir, predict_project, fake_curves,
                                                                          tmp_path):
    """`trainwell gate | true`, `trainwell audit DIR | true` and `trainwell predict DIR | head` each
    ended in exit 3, "internal error" and a crash file. Here every command but train, export and
    label-review (test_training_commands_with_a_closed_stdout) runs in a project with a closed
    stdout, in pipeline order, and must exit as it would with a reader: 0 here."""
    subprocess.run(["git", "init", "-q"], cwd=workdir, check=True)
    (workdir / "params.yaml").rename(workdir / "tiny.yaml")  # init writes the full-size params.yaml
    shutil.copytree(predict_project / "models", workdir / "models")  # an untrained model of the tiny size
    tiny = ["--params", "tiny.yaml"]
    audited = ["audit", "data/demo", *tiny]
    commands = [["init", str(workdir)], ["versions", *tiny], ["demo-data", *tiny], ["audit", *tiny], audited,
                [*audited, "--format", "json"], [*audited, "--format", "github"], [*audited, "--html", "page.html"],
                ["split", *tiny], ["build", *tiny], ["evaluate", *tiny], ["doctor", *tiny], ["card", *tiny],
                ["report", *tiny], ["gate", *tiny], ["gate", "--format", "json", *tiny],
                ["predict", "data/demo/circle", *tiny], ["predict", "data/demo", "-o", "p.csv", *tiny], ["plots"],
                ["--version"], ["--help"], ["gate", "--help"], ["audit", "--format", "yaml"]]
    results = run_closed(workdir, [(command, False) for command in commands] + [(audited, True)], tmp_path)
    statuses = {command: status for command, (status, _) in results.items()}
    assert statuses.pop("audit --format yaml") == 2  # a usage error is still one
    assert statuses == dict.fromkeys(statuses, 0), statuses
    assert all(crashes == [] for _, crashes in results.values())
    # The work was done, the outputs whole: the page, the predictions, the report site.
    assert (workdir / "page.html").read_text().rstrip().endswith("</html>")
    assert len((workdir / "p.csv").read_text().splitlines()) == 1 + 60
    assert (workdir / "reports" / "index.html").is_file() and (workdir / "dvc_plots" / "index.html").is_file()


@pytest.mark.train
def test_training_commands_with_a_closed_stdout(demo_copy, workdir, tmp_path):
    """train, label-review and export (each prints a line, and Keras its progress) with no reader."""
    params = tiny_params(epochs=1)
    params["label_review"].update({"folds": 2, "epochs_per_fold": 1})
    write_params(workdir, params)
    commands = [["audit"], ["split"], ["build"], ["train"], ["label-review"], ["export"]]
    results = run_closed(workdir, [(command, False) for command in commands], tmp_path)
    assert {command: status for command, (status, _) in results.items()} == {
        " ".join(command): 0 for command in commands}
    assert all(crashes == [] for _, crashes in results.values())
    assert (workdir / "models" / "model.keras").is_file() and (workdir / "models" / "export").is_dir()


def test_the_console_script_itself_into_true(workdir, demo_copy):
    """The installed entry point through a real `| true` (which exits at once, long before the audit
    prints): nothing on stderr, the audit's own status, as the issue's reproduction ran it."""
    shell = f"{shutil.which('trainwell', path=tool_env()['PATH'])} audit data/demo | true; echo \"status=${{PIPESTATUS[0]}}\""
    done = subprocess.run(["bash", "-c", shell], cwd=workdir, env=tool_env(), capture_output=True, text=True)
    assert done.stdout == "status=0\n" and done.stderr == "", done.stderr
