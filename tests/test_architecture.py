"""The layout is the architecture: the import rule, and DVC stage dependencies that cover every module a stage runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.architecture import (
    LAYERS,
    PACKAGE_ROOT,
    PEERS,
    all_modules,
    closure,
    imports_of,
    layer_of,
    module_path,
    stage_module,
)
from tests.helpers import REPO_ROOT

STAGE_PREFIX = "trainwell.stages."


def test_every_module_sits_in_a_layer_and_opens_with_a_docstring():
    for name in all_modules():
        layer_of(name)  # raises for a module outside every layer
        path = module_path(name)
        assert path is not None
        text = path.read_text(encoding="utf-8")
        if text.strip():
            assert text.lstrip().startswith('"""'), f"{path} must open with a one-line docstring"


def test_lower_layers_never_import_higher_ones():
    upward = [
        f"{name} ({LAYERS[layer_of(name)[0]][0]}) imports {target} ({LAYERS[layer_of(target)[0]][0]})"
        for name in all_modules()
        for target in imports_of(name)
        if layer_of(target)[0] > layer_of(name)[0]
    ]
    assert upward == []


def test_audit_and_training_do_not_import_each_other():
    crossing = [
        f"{name} imports {target}"
        for left, right in PEERS
        for name in all_modules()
        for target in imports_of(name)
        if (name.startswith(left) and target.startswith(right)) or (name.startswith(right) and target.startswith(left))
    ]
    assert crossing == []


def test_nothing_imports_a_stage_and_stages_do_not_import_each_other():
    # The CLI loads stages by name (importlib), so even it holds no import statement of one.
    importers = [f"{name} imports {target}" for name in all_modules() for target in imports_of(name)
                 if target.startswith(STAGE_PREFIX) and target != name]
    assert importers == []


def _source_deps(stage: dict) -> list[str]:
    return [dep for dep in stage.get("deps", []) if isinstance(dep, str) and dep.startswith("src/")]


def test_each_dvc_stage_depends_on_every_module_it_imports():
    """A change in any module a stage runs must re-run that stage (the repo's own dvc.yaml)."""
    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    missing = {}
    for name, stage in stages.items():
        covered = [REPO_ROOT / dep for dep in _source_deps(stage)]
        files = sorted(path for module in closure(stage_module(stage["cmd"]))
                       if (path := module_path(module)) is not None)
        uncovered = [str(path.relative_to(REPO_ROOT)) for path in files
                     if not any(path == dep or dep in path.parents for dep in covered)]
        if uncovered:
            missing[name] = uncovered
    assert missing == {}, f"add these to the stages' deps in dvc.yaml: {missing}"


def test_repo_dvc_yaml_is_the_init_template_plus_source_folders():
    from trainwell.stages.init import template

    ours = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())
    for stage in ours["stages"].values():
        stage["deps"] = [dep for dep in stage.get("deps", []) if dep not in _source_deps(stage)]
        if not stage["deps"]:
            del stage["deps"]
    assert ours == yaml.safe_load(template("dvc.yaml.in"))


@pytest.mark.parametrize("path", sorted(PACKAGE_ROOT.rglob("*.py")), ids=lambda path: str(path.relative_to(PACKAGE_ROOT)))
def test_no_module_grows_past_500_lines(path: Path):
    """A soft bound on module size: past 500 lines a module is cut along its seams."""
    assert len(path.read_text(encoding="utf-8").splitlines()) <= 500, f"{path} has grown past 500 lines; split it"
