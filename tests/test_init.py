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


def test_gitignore_is_only_appended_to_in_its_own_bytes_line_endings_and_mode(tmp_path):
    project = git_repo(tmp_path / "project")
    ignore = project / ".gitignore"
    ignore.write_bytes(b"caf\xe9\r\n/build\r\n")  # Latin-1, CRLF: not ours to re-encode
    ignore.chmod(0o640)
    inode = ignore.stat().st_ino
    assert main(["init", str(project)]) == 0
    content = ignore.read_bytes()
    assert content.startswith(b"caf\xe9\r\n/build\r\n") and b"\n" not in content.replace(b"\r\n", b"")
    assert b"/data/train_backup/\r\n" in content
    assert ignore.stat().st_mode & 0o777 == 0o640 and ignore.stat().st_ino == inode  # appended, never replaced


@pytest.mark.parametrize("case", ["fifo-gitignore", "linked-gitignore", "linked-dvcignore", "dangling-dvc-yaml",
                                  "inside-dvc", "empty-name"])
def test_init_refuses_odd_places_and_leaves_them_as_they_were(tmp_path, capsys, case):
    project = git_repo(tmp_path / "project")
    target = str(project)
    outside = tmp_path / "shared-file"
    outside.write_bytes(b"/mine\n")
    if case == "fifo-gitignore":
        os.mkfifo(project / ".gitignore")  # dvc init would block reading it
    elif case == "linked-gitignore":  # git never reads a linked .gitignore; init once appended to its target
        (project / ".gitignore").symlink_to(outside)
    elif case == "linked-dvcignore":  # dvc init would write through it
        (project / ".dvcignore").symlink_to(tmp_path / "nowhere")
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
    assert outside.read_bytes() == b"/mine\n" and not (tmp_path / "nowhere").exists()


def test_init_in_a_folder_whose_name_is_not_utf8(tmp_path, capsys):
    """DVC 3 itself cannot work in such a folder ('surrogates not allowed'): init says so, cleanly,
    before writing anything, instead of a traceback."""
    project = git_repo(tmp_path / os.fsdecode(b"caf\xe9-project"))
    before = snapshot(project)
    assert main(["init", str(project)]) == 2
    err = capsys.readouterr().err
    assert "`dvc init` failed" in err and "Traceback" not in err
    assert snapshot(project) == before


@pytest.fixture
def read_only_gitignore(tmp_path: Path):
    """A project whose .gitignore cannot be written: a read-only bind mount of it where this test may
    mount (root ignores file modes), else (not root) its mode."""
    project = git_repo(tmp_path / "project")
    ignore = project / ".gitignore"
    ignore.write_bytes(b"/mine\n")
    if os.geteuid() != 0:
        ignore.chmod(0o444)
        yield project
        return
    bound = subprocess.run(["mount", "--bind", str(ignore), str(ignore)], capture_output=True).returncode == 0
    if not bound or subprocess.run(["mount", "-o", "remount,ro,bind", str(ignore)], capture_output=True).returncode:
        if bound:
            subprocess.run(["umount", str(ignore)], check=False)
        pytest.skip("needs a read-only bind mount (root in a container that may mount) or a non-root user")
    try:
        yield project
    finally:
        subprocess.run(["umount", str(ignore)], check=False)


def git_state(project: Path) -> str:
    return subprocess.run(["git", "status", "--porcelain", "--ignored", "-uall"], cwd=project,
                          capture_output=True, text=True).stdout


def test_init_with_an_unwritable_gitignore_writes_nothing_at_all(read_only_gitignore, capsys):
    """It once wrote params.yaml, dvc.yaml and .dvc, then failed as an internal error, and the next
    init refused the half-made project."""
    project = read_only_gitignore
    before, index = snapshot(project), git_state(project)
    assert main(["init", str(project)]) == 2
    err = capsys.readouterr().err
    assert ".gitignore' cannot be written" in err and "internal error" not in err
    assert snapshot(project) == before and git_state(project) == index


def test_init_failing_part_way_takes_back_what_it_did(tmp_path, monkeypatch, capsys):
    """A write that fails after `dvc init` ran and staged its files in git (here a full disk: the
    project is a 16 KiB tmpfs, where dvc init's files fit and params.yaml does not) leaves the folder
    and git's index as they were."""
    top = git_repo(tmp_path / "top")
    project = top / "project"
    project.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(project)], capture_output=True).returncode:
        pytest.skip("needs a small file system: root in a container that may mount")
    monkeypatch.setenv("GIT_DISCOVERY_ACROSS_FILESYSTEM", "1")  # the repository is on the file system above
    try:
        before, index = snapshot(project), git_state(top)
        assert main(["init", str(project)]) == 1
        err = capsys.readouterr().err
        assert "no space left on the device writing" in err and "params.yaml" in err
        assert snapshot(project) == before and git_state(top) == index
        assert list(project.iterdir()) == []  # no empty .dvc folder either
    finally:
        subprocess.run(["umount", str(project)], check=False)
