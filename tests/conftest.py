"""Shared fixtures: tiny params (few small images, 1-2 epochs) with every output under tmp_path; the tier guard."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import (
    CLASSES,
    EXPORT_MAX_IMAGE_BYTES,
    EXPORT_MAX_PIXELS,
    copy_project,
    make_project,
    pipeline_params,
    run,
    save_export_model,
    tiny_params,
    user_env,
    write_params,
)
from tests.tier_guard import trainwell_tier_guard as tier_guard
from trainwell.cli import set_tensorflow_defaults

# As the command line runs TensorFlow (oneDNN kernels on), so what a test trains in this process equals what
# `trainwell train` trains; before anything imports TensorFlow.
set_tensorflow_defaults(quiet=True)


def pytest_configure(config: pytest.Config) -> None:
    """Watch this process, and every child Python through sitecustomize on PYTHONPATH, for costly work."""
    guard_folder = str(Path(tier_guard.__file__).parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [guard_folder, os.environ.get("PYTHONPATH")]))
    os.environ[tier_guard.RECORD_VARIABLE] = os.path.join(tempfile.mkdtemp(prefix="tier-guard-"), "uses")
    tier_guard.install(child=False)


def pytest_unconfigure(config: pytest.Config) -> None:
    """The guard's record folder (made by pytest_configure) goes with the run."""
    record = os.environ.pop(tier_guard.RECORD_VARIABLE, None)
    if record:
        shutil.rmtree(os.path.dirname(record), ignore_errors=True)


# Session fixtures worth minutes, by the pytest-xdist group whose tests share one worker (`make test` runs
# two, --dist loadgroup): any other split would build the fixture once per worker. A module-scoped
# fixture's tests are grouped by their module for the same reason (test_quiet's runs every command).
SHARED_FIXTURE_GROUPS = {"reproduced": "pipeline", "experimented": "pipeline", "exported": "exported"}


def _xdist_groups(item: pytest.Item) -> set[str]:
    """The xdist groups of the shared fixtures this test uses."""
    definitions = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
    groups = set()
    for name in getattr(item, "fixturenames", ()):
        if name in SHARED_FIXTURE_GROUPS:
            groups.add(SHARED_FIXTURE_GROUPS[name])
        elif name in definitions and definitions[name][-1].scope == "module":
            groups.add(item.nodeid.split("::")[0])
    return groups


@pytest.hookimpl(tryfirst=True)  # before -m deselects, and before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every cost marker implies `slow`: the fast tier is `-m "not slow"`. Tests sharing an expensive
    fixture run on one xdist worker; slow tests are handed out first."""
    for item in items:
        if any(item.get_closest_marker(cost) for cost in tier_guard.COSTS):
            item.add_marker(pytest.mark.slow)
        groups = _xdist_groups(item)
        if groups and not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group(min(groups)))
    # The slow tests first (stable: modules keep their order within each tier), so the two xdist
    # workers do not end on one worker running a minutes-long test while the other idles.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """While a test (and its fixtures) runs, its processes know which costs its markers allow."""
    os.environ[tier_guard.ALLOWED_VARIABLE] = ",".join(sorted({marker.name for marker in item.iter_markers()}
                                                              & set(tier_guard.COSTS)))
    try:
        return (yield)
    finally:
        os.environ.pop(tier_guard.ALLOWED_VARIABLE, None)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """A phase that did work its markers do not allow fails, naming the marker, even if a child hid the error."""
    report = yield
    record = os.environ[tier_guard.RECORD_VARIABLE]
    uses = tier_guard.read_uses(record)
    if os.path.exists(record):
        os.remove(record)
    allowed = tier_guard.allowed_costs({marker.name for marker in item.iter_markers()})
    unmarked = [tier_guard.message(cost, what) for cost, what in uses if cost not in allowed]
    if unmarked:
        report.outcome = "failed"
        report.longrepr = "\n".join(dict.fromkeys(unmarked)) + (f"\n\n{report.longrepr}" if report.longrepr else "")
    return report


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary project folder with tiny params.yaml; the test runs inside it."""
    write_params(tmp_path, tiny_params())
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def demo_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny demo dataset (12 images a class, 32x32), generated once per session; treat as read-only."""
    from trainwell.data.demo import generate
    from trainwell.params import DemoParams

    root = tmp_path_factory.mktemp("demo") / "demo"
    generate(out_dir=root, demo=DemoParams(classes=CLASSES, images_per_class=12, image_size=32, seed=0))
    return root


@pytest.fixture
def demo_copy(demo_set: Path, workdir: Path) -> Path:
    """A private copy of the demo set at workdir/data/demo, free to damage."""
    target = workdir / "data" / "demo"
    shutil.copytree(demo_set, target)
    return target


@pytest.fixture(scope="session")
def predict_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """For `trainwell predict`: a folder with params, a saved (untrained) model of the tiny size and the class list: all predict needs."""
    from trainwell.training.model_files import save_model_file
    from trainwell.training.network import build_model

    folder = tmp_path_factory.mktemp("predict-project")
    write_params(folder, tiny_params())
    keras_model = build_model(num_classes=len(CLASSES), image_size=32, conv_filters=[4], kernel_size=3,
                              dense_units=8)
    (folder / "models").mkdir()
    save_model_file(keras_model, folder / "models" / "model.keras")
    (folder / "data" / "splits").mkdir(parents=True)
    (folder / "data" / "splits" / "classes.json").write_text(json.dumps(CLASSES))
    return folder


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny project run through demo_data, audit, split, build and export (real stages), with an
    untrained model saved and the served limits set low (tests/helpers.py); treat as read-only."""
    folder = tmp_path_factory.mktemp("export")
    params = tiny_params()
    params["audit"]["max_pixels"] = EXPORT_MAX_PIXELS
    params["export"]["max_image_bytes"] = EXPORT_MAX_IMAGE_BYTES
    write_params(folder, params)
    for stage in ("demo-data", "audit", "split", "build"):
        run(["trainwell", stage], folder)
    save_export_model(folder / "models" / "model.keras")
    run(["trainwell", "export"], folder)
    return folder


@pytest.fixture(scope="session")
def built_project(demo_set: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny demo set audited, split and cached by the real stages with tiny params, once a run; read-only."""
    from trainwell.stages import audit, build, split

    folder = tmp_path_factory.mktemp("built")
    write_params(folder, tiny_params())
    shutil.copytree(demo_set, folder / "data" / "demo")
    before = Path.cwd()
    os.chdir(folder)
    try:
        assert audit.main() == 0 and split.main() == 0 and build.main() == 0
    finally:
        os.chdir(before)
    return folder


@pytest.fixture
def built(built_project: Path, workdir: Path) -> Path:
    """workdir holding a private copy of built_project (data/demo, splits, cache), free to change; the test runs inside it."""
    return copy_project(built_project, workdir)


@dataclass(frozen=True)
class Pipeline:
    folder: Path  # the project
    output: str  # what the dvc command printed on stdout
    errors: str = ""  # and on stderr (its stages' commands write to both)


@pytest.fixture(scope="session")
def reproduced(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    """A `trainwell init` project after one `dvc repro` with pipeline_params(): every stage ran once a test run.

    Read-only (a no-op `dvc repro` is fine): copy it with helpers.copy_project to change anything.
    Tests using it train and run dvc: mark them so. Run in a user's environment (no
    TF_CPP_MIN_LOG_LEVEL), so test_quiet reads what each stage printed from it.
    """
    folder = make_project(tmp_path_factory.mktemp("reproduced"), pipeline_params())
    done = run(["dvc", "repro"], folder, env=user_env())
    return Pipeline(folder=folder, output=done.stdout, errors=done.stderr)


@pytest.fixture(scope="session")
def experimented(reproduced: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    """A copy of `reproduced` committed as the baseline, then `dvc exp run -S train.epochs=1`; read-only."""
    folder = copy_project(reproduced.folder, tmp_path_factory.mktemp("experimented"))
    run(["git", "add", "-A"], folder)
    run(["git", "commit", "-q", "-m", "baseline"], folder)
    return Pipeline(folder=folder, output=run(["dvc", "exp", "run", "-S", "train.epochs=1"], folder).stdout)
