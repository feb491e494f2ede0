"""Model files are hostile until checked: no code from a config, no zip bombs, only .keras archives without --trust-model."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import keras
import pytest

from tests.helpers import tool_env
from trainwell.errors import UsageError
from trainwell.training.model_files import check_keras_archive, load_model_file


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    inputs = keras.Input((8,))
    model = keras.Model(inputs, keras.layers.Dense(5, activation="softmax")(keras.layers.Dense(4)(inputs)))
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    path = tmp_path_factory.mktemp("models") / "good.keras"
    model.save(path)
    return path


def rewrite(source: Path, target: Path, *, config=None, extra: dict[str, bytes] | None = None) -> Path:
    """A copy of a .keras archive with its config.json edited and members added (deflated)."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as out:
        for info in original.infolist():
            data = original.read(info)
            if info.filename == "config.json" and config is not None:
                data = json.dumps(config(json.loads(data))).encode()
            out.writestr(info.filename, data)
        for name, data in (extra or {}).items():
            out.writestr(name, data)
    return target


def test_a_good_archive_loads(saved_model):
    check_keras_archive(saved_model)
    assert load_model_file(saved_model).output_shape == (None, 5)


def test_a_config_naming_an_importable_function_is_refused_unread(saved_model, tmp_path):
    """CVE-2025-1550's shape: a 'layer' whose module is os and class a function, called at load."""
    marker = tmp_path / "PWNED"

    def inject(config: dict) -> dict:
        config["config"]["layers"].append({
            "module": "os", "class_name": "function", "config": "system", "registered_name": "function",
            "name": "evil", "inbound_nodes": [{"args": [f"touch {marker}"], "kwargs": {}}]})
        return config

    evil = rewrite(saved_model, tmp_path / "evil.keras", config=inject)
    with pytest.raises(UsageError, match="Python function"):
        load_model_file(evil)
    assert not marker.exists()


@pytest.mark.parametrize("module", ["builtins", "subprocess", "numpy", "tensorflow.python.ops", "kerasx.evil"])
def test_objects_from_outside_keras_are_refused(saved_model, tmp_path, module):
    def swap(config: dict) -> dict:
        config["config"]["layers"][-1]["module"] = module
        return config

    with pytest.raises(UsageError, match=f"module '{module}'"):
        check_keras_archive(rewrite(saved_model, tmp_path / "other.keras", config=swap))


@pytest.mark.parametrize("member", ["config.json", "model.weights.h5", "assets/blob"])
def test_zip_bombs_are_refused_before_unpacking(saved_model, tmp_path, member):
    bomb = tmp_path / "bomb.keras"
    with zipfile.ZipFile(saved_model) as original, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as out:
        for info in original.infolist():
            if info.filename != member:
                out.writestr(info.filename, original.read(info))
        out.writestr(member, b" " * (64 << 20))  # 64 MiB of one byte: a few kilobytes compressed
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(UsageError, match="zip bomb"):
        load_model_file(bomb)


@pytest.mark.parametrize("make", ["not_a_zip", "directory", "missing"])
def test_not_an_archive_is_a_usage_error(tmp_path, make):
    path = tmp_path / "x.keras"
    if make == "not_a_zip":
        path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    elif make == "directory":
        path.mkdir()
    with pytest.raises(UsageError):
        load_model_file(path)


@pytest.mark.parametrize("name", ["../escape.txt", "/etc/evil", "assets/../../up", "a\\..\\b"])
def test_members_pointing_outside_the_archive_are_refused(saved_model, tmp_path, name):
    with pytest.raises(UsageError, match="outside the archive"):
        check_keras_archive(rewrite(saved_model, tmp_path / "traversal.keras", extra={name: b"x"}))


@pytest.mark.tf_process
def test_the_same_weights_save_to_the_same_bytes(saved_model, tmp_path):
    import time

    from trainwell.training.model_files import save_model_file

    model = load_model_file(saved_model)
    save_model_file(model, tmp_path / "first.keras")
    time.sleep(1.1)  # Keras writes the save time, to the second, into the archive
    # ... and id() of shared objects (the dtype policy): another process, other addresses.
    code = ("import sys; from trainwell.training.model_files import load_model_file, save_model_file; "
            "save_model_file(load_model_file(sys.argv[1]), sys.argv[2])")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "first.keras"), str(tmp_path / "second.keras")],
                   check=True, env=tool_env(), capture_output=True)
    assert (tmp_path / "first.keras").read_bytes() == (tmp_path / "second.keras").read_bytes()
    reloaded = load_model_file(tmp_path / "second.keras")
    assert [weight.tolist() for weight in reloaded.get_weights()] == [weight.tolist() for weight in model.get_weights()]
