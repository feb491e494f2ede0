"""Shared fixtures: tiny params (few small images, 1-2 epochs) with every output under tmp_path."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.helpers import (
    CLASSES,
    EXPORT_MAX_IMAGE_BYTES,
    EXPORT_MAX_PIXELS,
    run,
    save_export_model,
    tiny_params,
    write_params,
)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


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
