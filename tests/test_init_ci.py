"""`trainwell init --ci github`: the workflow it writes is real commands in the README's order, and an existing one is kept."""

from __future__ import annotations

import os
import random
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dvc.cli import parse_args as parse_dvc_args

from tests.helpers import snapshot
from tests.test_hostile_names import FRAGMENTS
from tests.test_init import git_repo
from trainwell.cli import build_parser, main
from trainwell.errors import UsageError
from trainwell.params import Params, load_params
from trainwell.stages.init import CI_WORKFLOWS, render_workflow

WORKFLOW = CI_WORKFLOWS["github"][0]


def run_steps(workflow: dict) -> list[list[str]]:
    """Each `run:` step's commands as argument lists, GitHub's ${{ }} expressions given sample values."""
    commands = []
    for step in workflow["jobs"]["trainwell"]["steps"]:
        if "run" not in step:
            continue
        text = re.sub(r"\$\{\{ github\.base_ref \}\}", "main", step["run"])
        text = re.sub(r"\$\{\{ github\.event\.number \}\}", "7", text)
        assert "${{" not in text, text
        for command in text.split("&&"):
            commands.append(shlex.split(command.split(">")[0]))
    return commands


def check_command(argv: list[str]) -> None:
    """Each command parses with the real parser of its tool: a renamed subcommand or flag fails here."""
    tool, arguments = argv[0], argv[1:]
    if tool == "trainwell":
        build_parser().parse_args(arguments)
    elif tool == "dvc":
        parse_dvc_args(arguments)
    else:
        assert tool in ("pip", "gh"), argv


def test_init_ci_github_writes_the_readme_pipeline_as_real_commands(tmp_path, capsys):
    project = git_repo(tmp_path / "project")
    assert main(["init", str(project), "--ci", "github"]) == 0
    assert WORKFLOW in capsys.readouterr().out
    workflow = yaml.safe_load((project / WORKFLOW).read_text())
    assert workflow["on"] == {"pull_request": None}
    commands = run_steps(workflow)
    for argv in commands:
        check_command(argv)
    tools = [argv[:2] for argv in commands]
    # The README's order: install, the pipeline, then the gate against the base branch.
    assert tools == [["pip", "install"], ["dvc", "repro"], ["trainwell", "audit"], ["trainwell", "gate"],
                     ["dvc", "metrics"], ["gh", "pr"]]
    assert commands[0] == ["pip", "install", f"trainwell=={__import__('trainwell').__version__}"]
    params = load_params(project / "params.yaml")
    assert commands[2] == ["trainwell", "audit", params.data.dir, "--format", "github"]
    assert commands[3] == ["trainwell", "gate", "--baseline", "origin/main"]
    upload = next(step for step in workflow["jobs"]["trainwell"]["steps"] if "upload-artifact" in step.get("uses", ""))
    assert upload["if"] == "${{ !cancelled() }}"
    assert Path(params.paths.report_index).parent == Path(upload["with"]["path"])
    assert f"python-version: \"{sys.version_info.major}.{sys.version_info.minor}\"" in (project / WORKFLOW).read_text()


def test_ci_in_an_existing_project_writes_only_the_workflow_and_pulls_from_its_remote(tmp_path, capsys):
    project = git_repo(tmp_path / "project")
    (project / "requirements.txt").write_text("trainwell\n")
    assert main(["init", str(project)]) == 0
    subprocess.run([sys.executable, "-m", "dvc", "remote", "add", "-d", "store", str(tmp_path / "remote")],
                   cwd=project, check=True, capture_output=True)
    before = snapshot(project)
    assert main(["init", str(project), "--ci", "github"]) == 0
    assert "wrote" in capsys.readouterr().out
    after = snapshot(project)
    assert {name for name in after if name not in before or after[name] != before[name]} == {WORKFLOW}
    commands = run_steps(yaml.safe_load((project / WORKFLOW).read_text()))
    for argv in commands:
        check_command(argv)
    assert commands[:3] == [["pip", "install", "-r", "requirements.txt"], ["dvc", "pull", "--allow-missing"],
                            ["dvc", "repro"]]


@pytest.mark.parametrize("initialised", [False, True], ids=["fresh", "set up"])
def test_an_existing_workflow_is_left_byte_identical(tmp_path, capsys, initialised):
    project = git_repo(tmp_path / "project")
    if initialised:
        assert main(["init", str(project)]) == 0
    (project / WORKFLOW).parent.mkdir(parents=True)
    (project / WORKFLOW).write_bytes(b"name: mine\r\n# \xff not even UTF-8\n")
    before = snapshot(project)
    assert main(["init", str(project), "--ci", "github"]) == 2
    assert f"{WORKFLOW}' already exists" in capsys.readouterr().err
    assert snapshot(project) == before  # nothing at all was written: no dvc init, no params.yaml


def test_a_linked_workflows_folder_out_of_the_project_is_refused(tmp_path, capsys):
    project = git_repo(tmp_path / "project")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (project / ".github").symlink_to(elsewhere)
    assert main(["init", str(project), "--ci", "github"]) == 2
    assert "through a link" in capsys.readouterr().err
    assert list(elsewhere.iterdir()) == [] and not (project / "params.yaml").exists()


def hostile_folders(count: int, seed: int = 1) -> list[str]:
    """Seeded folder names of shell and YAML metacharacters, line breaks, quotes and non-ASCII."""
    rng = random.Random(seed)
    extra = ["$(touch pwned)", "`id`", "${{ secrets.TOKEN }}", "*", "!", "&&", "|", ">", "{", "}", "[", "]",
             "\U0001f600", "\x00", "\x7f", "\ufeff", "- ", ": ", "---", "..."]
    names = {"-rf", "--format", "~", "~user/x", " leading", "trailing "}
    while len(names) < count:
        parts = rng.choices(FRAGMENTS + extra, k=rng.randint(1, 5)) + [f"d{len(names)}"]
        rng.shuffle(parts)
        names.add("/".join(parts[:2]) + "".join(parts[2:]))
    return sorted(names)


def test_any_data_folder_name_reaches_the_audit_step_as_one_argument():
    defaults = Params()
    for name in hostile_folders(300):
        params = defaults.model_copy(update={"data": defaults.data.model_copy(update={"dir": name})})
        workflow = yaml.safe_load(render_workflow("github", params=params, remote=False, requirements=False))
        audit = next(step["run"] for step in workflow["jobs"]["trainwell"]["steps"] if "audit" in step.get("run", ""))
        assert shlex.split(audit) == ["trainwell", "audit", name, "--format", "github"], repr(name)
        assert len(workflow["jobs"]["trainwell"]["steps"]) == 8  # no name added or hid a step


def test_a_data_folder_that_is_not_utf8_is_refused_by_name():
    defaults = Params()
    name = os.fsdecode(b"raw-\xff")
    params = defaults.model_copy(update={"data": defaults.data.model_copy(update={"dir": name})})
    with pytest.raises(UsageError, match="not valid UTF-8"):
        render_workflow("github", params=params, remote=False, requirements=False)
