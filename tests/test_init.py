"""`trainwell init` in a user's git repository: what it writes, what it refuses, and paths of any shape."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.helpers import snapshot
from trainwell.cli import main
from trainwell.params import load_params


def git_repo(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", str(folder)], check=True)
    return folder


def test_init_writes_a_valid_project_and_keeps_the_users_gitignore(tmp_path, capsys):
    project = git_repo(tmp_path / "project")
    (project / ".gitignore").write_text("/my-secrets\n*.log")  # no trailing newline: kept as is, then appended
    assert main(["init", str(project)]) == 0
    assert (project / ".dvc").is_dir()
    params = load_params(project / "params.yaml")  # valid, and every key has its documented default
    assert params.data.dir == "data/demo"
    assert yaml.safe_load((project / "dvc.yaml").read_text())["stages"]["train"]["cmd"] == "trainwell train"
    ignored = (project / ".gitignore").read_text().splitlines()
    assert ignored[:2] == ["/my-secrets", "*.log"]
    assert "/data/audit/cache.json" in ignored and "/data/train_backup/" in ignored
    # What a killed audit leaves (a temporary file beside the cache) is ignored, and only that.
    checked = subprocess.run(["git", "check-ignore", "--no-index", "data/audit/.cache.json.k2_x9.tmp",
                              "data/audit/.cache.json.npy.0a1b.tmp", "data/audit/quarantine.csv"],
                             cwd=project, capture_output=True, text=True)
    assert checked.stdout.split() == ["data/audit/.cache.json.k2_x9.tmp", "data/audit/.cache.json.npy.0a1b.tmp"]
    assert "dvc repro" in capsys.readouterr().out


def test_init_never_overwrites_and_says_so(tmp_path, capsys):
    project = git_repo(tmp_path / "project")
    (project / "params.yaml").write_text("mine: true\n")
    before = snapshot(project)
    assert main(["init", str(project)]) == 2
    assert "params.yaml already exist" in capsys.readouterr().err
    assert snapshot(project) == before


def test_init_outside_git_or_with_a_missing_data_folder_is_a_usage_error(tmp_path, capsys):
    plain = tmp_path / "plain"
    plain.mkdir()
    assert main(["init", str(plain)]) == 2
    assert "git init" in capsys.readouterr().err
    project = git_repo(tmp_path / "project")
    assert main(["init", str(project), "--data", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert not (project / "params.yaml").exists()


def test_init_in_a_sub_folder_of_a_repository(tmp_path):
    top = git_repo(tmp_path / "monorepo")
    project = top / "vision" / "classifier"
    project.mkdir(parents=True)
    assert main(["init", str(project)]) == 0
    assert (project / ".dvc").is_dir() and not (top / ".dvc").exists()


@pytest.mark.parametrize("name", ['we"ird: #folder', "new\nline", "per%cent,comma", "ünï cødé", "- dash", "{brace}"])
def test_data_path_of_any_shape_round_trips_through_params_yaml(tmp_path, name):
    project = git_repo(tmp_path / "project")
    data = tmp_path / "elsewhere" / name
    (data / "cats").mkdir(parents=True)
    assert main(["init", str(project), "--data", str(data)]) == 0
    assert load_params(project / "params.yaml").data.dir == str(data.resolve())
    inside = project / "images" / name
    (inside / "dogs").mkdir(parents=True)
    (project / "params.yaml").unlink()
    (project / "dvc.yaml").unlink()
    assert main(["init", str(project), "--data", str(inside)]) == 0
    assert load_params(project / "params.yaml").data.dir == f"images/{name}"


def test_gitignore_is_only_appended_to_in_its_own_bytes_line_endings_and_link(tmp_path):
    shared = tmp_path / "shared-ignore"
    shared.write_bytes(b"caf\xe9\r\n/build\r\n")  # Latin-1, CRLF: not ours to re-encode
    shared.chmod(0o640)
    project = git_repo(tmp_path / "project")
    (project / ".gitignore").symlink_to(shared)
    assert main(["init", str(project)]) == 0
    assert (project / ".gitignore").is_symlink()
    content = shared.read_bytes()
    assert content.startswith(b"caf\xe9\r\n/build\r\n") and b"\n" not in content.replace(b"\r\n", b"")
    assert b"/data/train_backup/\r\n" in content and shared.stat().st_mode & 0o777 == 0o640


@pytest.mark.parametrize("case", ["fifo-gitignore", "dangling-dvc-yaml", "inside-dvc", "empty-name"])
def test_init_refuses_odd_places_and_leaves_them_as_they_were(tmp_path, capsys, case):
    project = git_repo(tmp_path / "project")
    target = str(project)
    if case == "fifo-gitignore":
        os.mkfifo(project / ".gitignore")  # dvc init would block reading it
    elif case == "dangling-dvc-yaml":
        (project / "dvc.yaml").symlink_to(tmp_path / "nowhere.yaml")
    elif case == "inside-dvc":
        (project / ".dvc").mkdir()
        target = str(project / ".dvc")
    else:
        target = ""
    before = snapshot(project)
    assert main(["init", target]) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert snapshot(project) == before


def test_init_in_a_folder_whose_name_is_not_utf8(tmp_path, capsys):
    """DVC 3 itself cannot work in such a folder ('surrogates not allowed'): init says so, cleanly,
    before writing anything, instead of a traceback."""
    project = git_repo(tmp_path / os.fsdecode(b"caf\xe9-project"))
    before = snapshot(project)
    assert main(["init", str(project)]) == 2
    err = capsys.readouterr().err
    assert "`dvc init` failed" in err and "Traceback" not in err
    assert snapshot(project) == before
