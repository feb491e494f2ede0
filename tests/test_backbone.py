"""keras.applications backbones: params checks, weights from a local file only, the head contract, freeze then fine-tune, resume."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

from tests.helpers import kill_train_after_backup, tiny_params, tool_env, write_params
from trainwell.errors import ParamsError
from trainwell.params import BACKBONE_MIN_IMAGE_SIZE, TrainParams, parse_params
from trainwell.training.backbone import BACKBONES, backbone_of, make_backbone, weights_path
from trainwell.training.contract import check_contract
from trainwell.training.fit import training_stretches
from trainwell.training.model_files import load_model_file
from trainwell.training.network import build_network, model_for

BACKBONE = "MobileNetV3Small"  # the smallest: about 0.9 M weights at 32x32


def _params(**train) -> dict:
    params = tiny_params()
    params["train"].update(train)
    return params


def _saved_backbone(path: Path, *, seed: int = 1) -> list[np.ndarray]:
    """A backbone built with weights=None and saved to `path`; returns the arrays it saved."""
    keras.utils.set_random_seed(seed)
    backbone = keras.applications.MobileNetV3Small(include_top=False, weights=None, input_shape=(32, 32, 3))
    if path.name.endswith(".weights.h5"):
        backbone.save_weights(path)
    else:
        backbone.save(path)  # the legacy HDF5 model file: a model_config attribute plus model_weights
    return backbone.get_weights()


def test_every_backbone_params_allow_has_its_weights_published_and_a_minimum_size():
    assert set(BACKBONES) == set(BACKBONE_MIN_IMAGE_SIZE)
    for name, spec in BACKBONES.items():
        assert callable(getattr(keras.applications, spec.constructor)), name
        assert spec.weights_url.startswith("https://storage.googleapis.com/") and spec.weights_file.endswith(".h5")


def test_an_image_too_small_for_the_backbone_is_a_params_error():
    params = _params(model=BACKBONE)
    params["data"]["image_size"] = 24
    with pytest.raises(ParamsError, match=r"MobileNetV3Small needs images of at least 32x32 pixels, but "
                                          r"data\.image_size is 24"):
        parse_params(params)
    params["data"]["image_size"] = 32
    # The cnn's kernel check does not apply to a backbone: its conv_filters are unused.
    params["train"].update(kernel_size=32)
    assert parse_params(params).train.model == BACKBONE


@pytest.mark.parametrize(
    ("train", "message"),
    [
        ({"weights": "w.weights.h5"}, "train.weights applies to keras.applications backbones"),
        ({"frozen_epochs": 1}, "the cnn has none"),
        ({"model": BACKBONE, "frozen_epochs": 3}, r"frozen_epochs \(3\) is more than train.epochs \(2\)"),
        ({"model": "ResNet50"}, "Input should be 'cnn', 'MobileNetV3Small'"),
    ],
)
def test_backbone_settings_without_a_backbone_are_refused(train, message):
    with pytest.raises(ParamsError, match=message):
        parse_params(_params(**train))


def test_frozen_epochs_split_the_run_into_two_fits():
    stretches = training_stretches(TrainParams(model=BACKBONE, epochs=5, frozen_epochs=2, learning_rate=1e-3))
    assert [(s.first_epoch, s.end_epoch, s.frozen, s.learning_rate) for s in stretches] == [
        (0, 2, True, 1e-3), (2, 5, False, 1e-5)]
    assert len(training_stretches(TrainParams(model=BACKBONE, epochs=2, frozen_epochs=2))) == 1
    assert not training_stretches(TrainParams())[0].frozen


def test_a_missing_weights_file_says_where_to_put_it_and_where_to_get_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    missing = TrainParams(model=BACKBONE, weights="models/pretrained/mobilenet.h5")
    with pytest.raises(ParamsError) as raised:
        weights_path(missing)
    message = str(raised.value)
    assert "'models/pretrained/mobilenet.h5' does not exist" in message and str(tmp_path) in message
    assert "never downloads" in message and "train.weights: none" in message
    assert ("https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v3/"
            "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5") in message
    with pytest.raises(ParamsError) as raised:
        weights_path(TrainParams(model="EfficientNetV2B0", weights="imagenet"))
    assert "never downloads" in str(raised.value) and "efficientnet_v2/efficientnetv2-b0_notop.h5" in str(raised.value)
    (tmp_path / "model.keras").write_bytes(b"PK")
    with pytest.raises(ParamsError, match="not a weights file"):
        weights_path(TrainParams(model=BACKBONE, weights="model.keras"))
    (tmp_path / "folder.h5").mkdir()
    with pytest.raises(ParamsError, match="not a regular file"):
        weights_path(TrainParams(model=BACKBONE, weights="folder.h5"))
    assert weights_path(TrainParams(model=BACKBONE)) is None


def test_the_model_holds_exactly_the_weights_file(tmp_path):
    weights_file = tmp_path / "backbone.weights.h5"
    saved = _saved_backbone(weights_file)
    # The file, read without Keras, holds those arrays (as a multiset: Keras names them by path).
    with h5py.File(weights_file, "r") as handle:
        stored: list[np.ndarray] = []
        handle.visititems(lambda _, item: stored.append(item[()]) if isinstance(item, h5py.Dataset) else None)
    assert sorted(float(array.sum()) for array in stored) == sorted(float(array.sum()) for array in saved)

    train = TrainParams(model=BACKBONE, weights=str(weights_file))
    keras.utils.set_random_seed(0)  # another initialisation than the file's
    model = model_for(train, num_classes=5, image_size=32)
    loaded = backbone_of(model).get_weights()
    assert len(loaded) == len(saved) and all(np.array_equal(a, b) for a, b in zip(loaded, saved))
    keras.utils.set_random_seed(0)
    random_init = backbone_of(model_for(TrainParams(model=BACKBONE), num_classes=5, image_size=32)).get_weights()
    assert not all(np.array_equal(a, b) for a, b in zip(random_init, saved))


def test_a_weights_file_for_another_network_is_a_params_error(tmp_path):
    weights_file = tmp_path / "large.weights.h5"
    keras.applications.MobileNetV3Large(include_top=False, weights=None, input_shape=(32, 32, 3)).save_weights(
        weights_file)
    with pytest.raises(ParamsError, match=r"could not be loaded into MobileNetV3Small \(include_top=False\)"):
        make_backbone(BACKBONE, image_size=32, weights=weights_file)


def test_loading_an_h5_never_runs_the_code_its_config_carries(tmp_path):
    # A legacy HDF5 model file of the backbone whose model_config is swapped for one holding a
    # Lambda that creates a marker file: Keras' weights loader must take the arrays and never
    # deserialize that config.
    marker = tmp_path / "code_ran"
    marker_name = str(marker)  # the lambda's closure is saved with it, as JSON
    evil_input = keras.Input((4,))
    evil = keras.Model(evil_input, keras.layers.Lambda(lambda x: (open(marker_name, "w").close(), x)[1])(evil_input))
    evil.save(tmp_path / "evil.h5")
    marker.unlink()  # building the model ran the lambda once
    weights_file = tmp_path / "backbone.h5"
    saved = _saved_backbone(weights_file)
    with h5py.File(tmp_path / "evil.h5", "r") as source, h5py.File(weights_file, "r+") as target:
        target.attrs["model_config"] = source.attrs["model_config"]

    loaded = make_backbone(BACKBONE, image_size=32, weights=weights_file).get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(loaded, saved))
    assert not marker.exists()
    # The payload is live: loading the same file as a model with safe_mode off runs it.
    with pytest.raises(ValueError):
        keras.models.load_model(weights_file, safe_mode=False)
    assert marker.exists()


def test_backbone_head_keeps_the_contract_and_the_backbones_own_preprocessing():
    softmax = model_for(TrainParams(model=BACKBONE, augment_layers=[{"name": "RandomFlip"}]), num_classes=5,
                        image_size=32)
    assert softmax.input.dtype == "uint8" and softmax.output_shape == (None, 5)
    assert check_contract(model=softmax, loss="categorical_crossentropy", from_logits=False, num_classes=5,
                          label_encoding="one_hot") == []
    # The backbone gets [0, 255] pixels (its own Rescaling maps them to [-1, 1]); the augmentation
    # layers in between see [0, 1], as in the cnn.
    images = np.random.default_rng(0).integers(0, 256, size=(2, 32, 32, 3), dtype=np.uint8)
    features = keras.Model(softmax.input, softmax.get_layer("pool").output)(images, training=False)
    direct = keras.layers.GlobalAveragePooling2D()(backbone_of(softmax)(images.astype("float32"), training=False))
    np.testing.assert_allclose(np.asarray(features), np.asarray(direct), rtol=1e-4, atol=1e-4)

    sigmoid = model_for(TrainParams(model=BACKBONE, output_activation="sigmoid"), num_classes=5, image_size=32)
    problems = check_contract(model=sigmoid, loss="categorical_crossentropy", from_logits=False, num_classes=5,
                              label_encoding="one_hot")
    assert [problem.severity for problem in problems] == ["error"] and "sigmoid" in problems[0].message

    mixed = build_network(train=TrainParams(model=BACKBONE, mixed_precision="mixed_float16"), num_classes=5,
                          image_size=32)
    assert mixed.outputs[0].dtype == "float32" and backbone_of(mixed).get_layer("conv").compute_dtype == "float16"
    assert keras.mixed_precision.dtype_policy().name == "float32"


@pytest.mark.train
def test_frozen_then_fine_tuned_and_resumed_across_the_boundary(built, workdir):
    """Kill `trainwell train` after its frozen epoch, resume it, and compare with an uninterrupted run.

    The backup of the frozen epoch proves the backbone did not move while the head learnt; the
    resumed model proves fine-tuning moved it; the uninterrupted run proves resuming across the
    boundary (a new optimizer, the backbone released) changes nothing.
    """
    file_weights = _saved_backbone(workdir / "pretrained.weights.h5")
    params = _params(model=BACKBONE, weights="pretrained.weights.h5", epochs=2, frozen_epochs=1,
                     augment_layers=[{"name": "RandomFlip", "params": {"mode": "horizontal"}}])
    write_params(workdir, params)
    paths = params["paths"]
    backup_meta = workdir / paths["train_backup_dir"] / "meta.json"

    kill_train_after_backup(workdir, backup_meta)
    # Killed after the frozen epoch: compiling the fine-tuning step takes seconds, so epoch 2 never ended.
    assert json.loads(backup_meta.read_text())["epoch"] == 0
    assert not (workdir / paths["model"]).exists()

    model = model_for(TrainParams.model_validate(params["train"]), num_classes=5, image_size=32)
    with np.load(workdir / paths["train_backup_dir"] / "state.npz") as state:
        for index, variable in enumerate(model.variables):  # the backup starts with model.variables
            variable.assign(state[f"arr_{index}"])
    after_frozen_epoch = backbone_of(model).get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(after_frozen_epoch, file_weights))
    assert np.any(model.get_layer("class_scores").bias.numpy() != 0)  # the head learnt (it starts at 0)

    resumed = subprocess.run(["trainwell", "train"], cwd=workdir, env=tool_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after epoch 1" in resumed.stdout and "backbone released after 1 frozen epoch(s)" in resumed.stdout
    resumed_model = load_model_file(workdir / paths["model"])  # the loader evaluate uses: .keras, safe_mode
    fine_tuned = backbone_of(resumed_model)
    moved = [not np.array_equal(a, b) for a, b in zip(fine_tuned.get_weights(), file_weights)]
    assert any(moved)
    # Pretrained BatchNormalization statistics are kept while fine-tuning (inference mode).
    moving = [index for index, weight in enumerate(fine_tuned.weights) if "moving_" in weight.path]
    assert moving and not any(moved[index] for index in moving)

    (workdir / paths["model"]).unlink()
    fresh = subprocess.run(["trainwell", "train"], cwd=workdir, env=tool_env(), capture_output=True, text=True)
    assert fresh.returncode == 0 and "resuming" not in fresh.stdout, fresh.stderr
    fresh_weights = keras.models.load_model(workdir / paths["model"]).get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(resumed_model.get_weights(), fresh_weights))
    # One curve across both fits: epochs 1 and 2 at steps 0 and 1.
    curve = (workdir / paths["train_log_dir"] / "plots" / "metrics" / "validation" / "accuracy.tsv").read_text()
    assert [line.split("\t")[0] for line in curve.splitlines()] == ["step", "0", "1"]
    assert json.loads((workdir / paths["train_report_dir"] / "incidents.json").read_text()) == []
    assert os.listdir(workdir / "models") == ["model.keras"]
