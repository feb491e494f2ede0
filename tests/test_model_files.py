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


@pytest.fixture(scope="module")
def layered_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model of several layer kinds, its optimizer built so its state is saved too."""
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(4, 3)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.DepthwiseConv2D(3)(x)
    x = keras.layers.LayerNormalization()(keras.layers.Flatten()(x))
    outputs = keras.layers.Dense(5, activation="softmax")(keras.layers.Dense(6)(x))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)
    path = tmp_path_factory.mktemp("layered") / "layered.keras"
    model.save(path)
    return path


def test_models_of_every_layer_kind_load_with_their_weights(layered_model, saved_model):
    """No false refusal: each variable Keras asks for is an array the file holds, optimizer state included."""
    for path in (layered_model, saved_model):
        reference = keras.models.load_model(path)
        loaded = load_model_file(path)
        assert [weight.tolist() for weight in loaded.get_weights()] == [w.tolist() for w in reference.get_weights()]


LOAD_LIES = """
import contextlib, io, json, os, resource, sys
from trainwell.cli import main
from trainwell.errors import UsageError
from trainwell.training.model_files import load_model_file
load_model_file(sys.argv[1])  # a good model first: what follows is the refusals alone
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
outcomes = {}
for name, path in json.loads(sys.argv[2]).items():
    try:
        load_model_file(path)
        outcomes[name] = "loaded"
    except UsageError as error:
        outcomes[name] = str(error)
# The issue's own example, through the command: `trainwell doctor --model FILE`.
os.chdir(sys.argv[3])
stderr = io.StringIO()
with contextlib.redirect_stderr(stderr):
    code = main(["doctor", "--model", sys.argv[4]])
outcomes["doctor"] = {"exit": code, "stderr": stderr.getvalue()}
print(json.dumps({"outcomes": outcomes, "growth_mib": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024}))
"""


@pytest.mark.tf_process  # every lie is loaded in one fresh child interpreter, which imports TensorFlow
def test_files_whose_config_or_hdf5_lies_about_sizes_are_refused_before_allocating(saved_model, layered_model, tmp_path):
    """Generated lies, loaded in a fresh process whose peak memory is measured: each is a UsageError
    (exit 2), and none allocates what it declares. Among them the issue's 17 KB file (2.5 million
    Dense units: `trainwell doctor` reached 6.7 GB) and gzip inside the HDF5 (7 GB)."""
    from tests import model_fuzzing
    from trainwell.data.cache import CACHE_FORMAT

    (tmp_path / "layered").mkdir()
    lies = {**model_fuzzing.config_lies(saved_model, tmp_path, 8, seed=1),
            **model_fuzzing.config_lies(layered_model, tmp_path / "layered", 8, seed=2),
            **model_fuzzing.hdf5_lies(layered_model, tmp_path)}
    config = json.loads(zipfile.ZipFile(layered_model).read("config.json"))
    dense = next(layer for layer in config["config"]["layers"] if layer["config"].get("units") == 6)
    dense["config"]["units"] = 2_500_000  # after 256 features: a 2.56 GB kernel
    issue = rewrite(layered_model, tmp_path / "issue.keras", config=lambda _: config)
    assert issue.stat().st_size < 100_000
    project = tmp_path / "project"
    (project / "data" / "cache").mkdir(parents=True)
    (project / "data" / "cache" / "manifest.json").write_text(
        json.dumps({"format": CACHE_FORMAT, "classes": ["a", "b"], "image_shape": [8, 8, 3]}))
    result = subprocess.run([sys.executable, "-c", LOAD_LIES, str(saved_model), json.dumps({k: str(v) for k, v in lies.items()}),
                             str(project), str(issue)], capture_output=True, text=True, env=tool_env(), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout)
    doctor = measured["outcomes"].pop("doctor")
    assert doctor["exit"] == 2 and "(256, 2500000)" in doctor["stderr"] and "does not hold" in doctor["stderr"], doctor
    for name, outcome in measured["outcomes"].items():
        assert outcome.startswith("'") and ("was not loaded" in outcome or "could not be loaded" in outcome), (name, outcome)
        if ".units=" in name or ".build_config." in name:  # a variable asked for: refused before it exists
            assert "that its weights file does not hold" in outcome, (name, outcome)
    hdf5 = {name: outcome for name, outcome in measured["outcomes"].items() if name.startswith("hdf5-")}
    assert "declares 268,435,456 bytes" in hdf5["hdf5-gzip"] and "gzip compression" in hdf5["hdf5-gzip"]
    assert "stores 0" in hdf5["hdf5-unallocated"]
    assert "stored in other files" in hdf5["hdf5-external-raw-data"]
    assert "links" in hdf5["hdf5-external-link"] and "links" in hdf5["hdf5-soft-link"]
    assert "not numbers" in hdf5["hdf5-strings"] and "not numbers" in hdf5["hdf5-objects"]
    assert "chunks" in hdf5["hdf5-chunk-larger-than-array"]
    assert ".npz" in measured["outcomes"]["npz-weights"]
    # TensorFlow's runtime is loaded before the baseline; unguarded, the doctor alone took 2.56 GB more.
    assert measured["growth_mib"] < 64, measured["growth_mib"]
