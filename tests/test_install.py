"""trainwell as a user installs it: a wheel in a fresh venv, `trainwell init` in a new git repo outside this one, `dvc repro`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

from tests.helpers import CLASSES, REPO_ROOT, tiny_params

pytestmark = [pytest.mark.install, pytest.mark.dvc, pytest.mark.train]

# Files a user's project commonly holds whose names used to shadow trainwell's old top-level packages.
SHADOWS = {
    "model.py": "raise SystemExit('the user model.py was imported by trainwell')\n",
    "pipeline.py": "raise SystemExit('the user pipeline.py was imported by trainwell')\n",
}


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, command))} exited {result.returncode}\n"
                             f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result


def build_wheel(out_dir: Path) -> Path:
    """The wheel, built from a copy of the sources (the build leaves nothing in the repository)."""
    source = out_dir / "source"
    shutil.copytree(REPO_ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO_ROOT / name, source / name)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out_dir), str(source)],
         out_dir, dict(os.environ))
    (wheel,) = out_dir.glob("trainwell-*.whl")
    return wheel


def fresh_venv(folder: Path, wheel: Path) -> Path:
    """A new venv with the wheel installed by pip. Its dependencies (3 GB, TensorFlow included) are
    borrowed from the test venv through a .pth path entry rather than downloaded again: that
    entry adds the folder to sys.path without running its .pth files, so the test venv's
    editable trainwell stays invisible and only the wheel's copy can be imported."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "borrowed-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([python, "-m", "pip", "install", "--no-deps", "--quiet", str(wheel)], folder, dict(os.environ))
    return folder / "bin"


def test_wheel_in_a_fresh_venv_runs_the_pipeline_in_a_new_project(tmp_path):
    wheel = build_wheel(tmp_path / "dist")
    bin_dir = fresh_venv(tmp_path / "venv", wheel)
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PATH=f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin", TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("DVC_EXP_NAME", None)

    project = tmp_path / "my project"  # a space in the path, as user folders often have
    project.mkdir()
    for name, text in SHADOWS.items():
        (project / name).write_text(text)
    _run(["git", "init", "-q", "-b", "main"], project, env)
    _run(["git", "config", "user.email", "ci@example.invalid"], project, env)
    _run(["git", "config", "user.name", "trainwell tests"], project, env)

    # The installed copy is the one that runs, even with the user's model.py and pipeline.py beside it.
    where = _run([str(bin_dir / "python"), "-m", "trainwell", "--version"], project, env)
    assert where.stdout.strip().startswith("trainwell ")
    imported = _run([str(bin_dir / "python"), "-c", "import trainwell; print(trainwell.__file__)"], project, env)
    assert Path(imported.stdout.strip()).is_relative_to(tmp_path / "venv")

    # A class-folder dataset of the user's own (generated here by the installed package).
    _run([str(bin_dir / "python"), "-c",
          "import sys; from trainwell.data.demo import generate; from trainwell.params import DemoParams; "
          f"generate(out_dir=sys.argv[1], demo=DemoParams(classes={CLASSES!r}, images_per_class=12, image_size=32))",
          str(project / "images")], project, env)
    _run(["trainwell", "init", "--data", "images"], project, env)
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert params["data"]["dir"] == "images"
    tiny = tiny_params()
    tiny["data"]["dir"] = "images"
    for section in ("data", "split", "build", "train", "evaluate", "gate"):
        params[section] = tiny[section]
    params["label_review"].update(folds=2, epochs_per_fold=1)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    repro = _run([str(bin_dir / "python"), "-m", "dvc", "repro"], project, env)
    assert "Running stage 'train'" in repro.stdout
    assert (project / "models" / "model.keras").is_file()
    evaluation = json.loads((project / "metrics" / "eval.json").read_text())
    assert evaluation["test_images"] == 15
    versions = json.loads((project / ".trainwell" / "versions.json").read_text())
    assert versions["trainwell"] == _run(["trainwell", "--version"], project, env).stdout.split()[1]
    for name, text in SHADOWS.items():
        assert (project / name).read_text() == text  # the user's files are untouched
    # The pipeline depends on nothing outside the project: no path in dvc.lock leaves it.
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    paths = [entry["path"] for stage in lock["stages"].values() for entry in stage.get("deps", [])]
    assert paths and all(not Path(path).is_absolute() and ".." not in Path(path).parts for path in paths)
    gate = _run(["trainwell", "gate"], project, env)
    assert "all pass" in gate.stdout
