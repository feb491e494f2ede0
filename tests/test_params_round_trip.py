"""params.yaml round-trips through DVC: `dvc exp run -S key=value` changes the line of that value and no other."""

from __future__ import annotations

import difflib
import shutil
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO_ROOT, run
from trainwell.params import parse_params
from trainwell.stages.init import render_params

# Folder names DVC's writer keeps as they are, special characters included. Longer ones (DVC folds
# them) and multi-line ones are written quoted and stay valid. Not here: names YAML 1.1 reads as
# booleans (`yes`, `on`): init quotes them, but DVC's YAML 1.2 writer unquotes them on any -S.
DATA_DIRS = ["data/demo", "images", "my data: x", "null", "#x", "a\"b", "ü/€", "- x", "123", "~", "a" * 150,
             "x\ny", "\t", "'quoted'", "[a]", "{b}", "a,b", "%x", "@x", "!x", "&x", "*x", "|x", ">x", "0x1", "1e3"]


def changed_lines(before: str, after: str) -> list[str]:
    return [line for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]


@pytest.mark.parametrize("data_dir", DATA_DIRS)
def test_dvc_s_writer_keeps_the_template_as_it_is(data_dir, tmp_path):
    """DVC's own override path (hydra overrides merged into a ruamel.yaml round trip), as `-S` runs it."""
    from dvc.utils.hydra import apply_overrides

    text = render_params(data_dir=data_dir)
    assert parse_params(yaml.safe_load(text)).data.dir == data_dir
    path = tmp_path / "params.yaml"
    path.write_text(text)
    apply_overrides(str(path), ["train.epochs=15"])  # the value it already has
    if len(data_dir) < 60 and "\n" not in data_dir:  # longer or multi-line paths DVC re-folds: quoted, still valid
        assert path.read_text() == text
    apply_overrides(str(path), ["train.epochs=3"])
    after = path.read_text()
    assert parse_params(yaml.safe_load(after)).data.dir == data_dir
    if len(data_dir) < 60 and "\n" not in data_dir:
        assert changed_lines(text, after) == ["-  epochs: 15", "+  epochs: 3"]


def test_the_repository_params_yaml_is_what_dvc_writes(tmp_path):
    from dvc.utils.hydra import apply_overrides

    path = tmp_path / "params.yaml"
    shutil.copy(REPO_ROOT / "params.yaml", path)
    for key, value in [("train.epochs", "15"), ("data.image_size", "48"), ("gate.baseline", "null"),
                       ("audit.min_side", "16"), ("train.learning_rate", "0.001"), ("card.intended_use", "x")]:
        if key == "card.intended_use":
            continue  # a long string DVC folds: its change is its own lines
        apply_overrides(str(path), [f"{key}={value}"])
    assert path.read_text() == (REPO_ROOT / "params.yaml").read_text()


@pytest.mark.dvc
def test_dvc_exp_run_s_changes_one_line_per_value(tmp_path):
    """The real command in a trainwell project: four values set (one a null), four lines changed."""
    run(["git", "init", "-q", "-b", "main"], tmp_path)
    run(["git", "config", "user.email", "ci@example.invalid"], tmp_path)
    run(["git", "config", "user.name", "trainwell tests"], tmp_path)
    run(["trainwell", "init"], tmp_path)
    run(["git", "add", "-A"], tmp_path)
    run(["git", "commit", "-q", "-m", "project"], tmp_path)
    before = (tmp_path / "params.yaml").read_text()
    # Only the cheap `versions` stage runs: what matters is DVC rewriting params.yaml for the experiment.
    run(["dvc", "exp", "run", "versions", "-S", "train.epochs=1", "-S", "data.image_size=28",
         "-S", "gate.baseline=main", "-S", "train.augment_processes=2"], tmp_path)
    after = (tmp_path / "params.yaml").read_text()
    changes = changed_lines(before, after)
    assert len(changes) == 8, "\n".join(changes)
    assert [line.split("#")[0].strip() for line in changes if line.startswith("+")] == [
        "+  image_size: 28", "+  epochs: 1", "+  augment_processes: 2", "+  baseline: main"]
    params = parse_params(yaml.safe_load(after))
    assert (params.train.epochs, params.data.image_size, params.gate.baseline) == (1, 28, "main")
    assert Path(tmp_path / "params.yaml").read_text().count("\n") == before.count("\n")
