"""The divergence guard inside a real Keras fit(): NaN batches, resume after SIGKILL."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import kill_train_after_backup, tiny_params, tool_env, write_params
from trainwell.params import GuardParams
from trainwell.training.guard import BatchTrace, DivergenceGuard, LossWatch, RunningMean, all_finite


def separable_data(count: int = 256) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=count)
    centers = rng.normal(0, 3, size=(4, 6))
    features = (centers[labels] + rng.normal(0, 0.5, size=(count, 6))).astype(np.float32)
    return features, keras.utils.to_categorical(labels, 4).astype(np.float32)


@pytest.mark.train
def test_nan_batch_is_rolled_back_skipped_and_named():
    keras.utils.set_random_seed(0)
    features, labels = separable_data()
    batch_size, poisoned_step, epochs = 32, 3, 6
    steps = len(features) // batch_size

    def poison(index: tf.Tensor, batch: tuple[tf.Tensor, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        # One batch in the second epoch carries NaN features, as an unaudited float file would.
        is_poisoned = tf.equal(index, steps + poisoned_step)
        x, y = batch
        return tf.where(is_poisoned, tf.fill(tf.shape(x), math.nan), x), y

    dataset = (
        tf.data.Dataset.from_tensor_slices((features, labels)).batch(batch_size).repeat(epochs).enumerate().map(poison)
    )
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(4, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="categorical_crossentropy", metrics=["accuracy"])
    guard = DivergenceGuard(
        num_classes=4,
        policy=GuardParams(check_every=1, spike_factor=4.0, spike_window=20, lr_factor=0.5, max_rollbacks=3),
        trace=BatchTrace(sizes=lambda epoch: [batch_size] * steps,
                         files=lambda epoch, step: [f"epoch{epoch}/step{step}/example{i}" for i in range(batch_size)]),
    )
    history = model.fit(dataset, epochs=epochs, steps_per_epoch=steps, callbacks=[guard], verbose=0)

    assert len(guard.incidents) == 1
    incident = guard.incidents[0]
    # ReLU passes NaN inputs as zeros forward but NaN gradients back: the loss may stay finite
    # while the weights turn NaN, which the per-step weight check (check_every=1) catches.
    assert (incident["epoch"], incident["step"]) == (2, poisoned_step)
    assert incident["kind"] in {"nan_loss", "nonfinite_weights"}
    assert incident["since_step"] == poisoned_step - 1
    assert incident["files"][0] == f"epoch1/step{poisoned_step}/example0"
    assert all_finite(model.weights)
    assert float(np.asarray(model.optimizer.learning_rate)) == pytest.approx(0.005)
    pre_incident = history.history["accuracy"][0]
    assert history.history["accuracy"][-1] > pre_incident
    assert model.evaluate(features, labels, verbose=0)[1] > 0.9


@pytest.mark.train
def test_untouched_run_has_no_incidents_and_same_weights_as_without_guard():
    features, labels = separable_data()

    def fit(with_guard: bool) -> list[np.ndarray]:
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(4, activation="softmax")])
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss="categorical_crossentropy")
        callbacks = []
        if with_guard:
            callbacks.append(DivergenceGuard(num_classes=4, policy=GuardParams(check_every=3, spike_window=10,
                                                                              max_rollbacks=3)))
        model.fit(features, labels, batch_size=32, epochs=3, shuffle=False, callbacks=callbacks, verbose=0)
        assert not with_guard or callbacks[0].incidents == []
        return model.get_weights()

    for a, b in zip(fit(True), fit(False)):
        assert np.array_equal(a, b)  # watching costs no change in the result


def test_loss_watch_classifies_without_keras():
    """The classifier alone: non-finite, far above chance, a spike against a warm median, else healthy."""
    watch = LossWatch(spike_factor=4.0, spike_window=10, chance_loss=math.log(5))
    assert watch.classify(float("nan")) == "nan_loss"
    assert watch.classify(float("inf")) == "inf_loss"
    assert watch.classify(4.0 * math.log(5) + 0.01) == "loss_explosion"
    assert watch.classify(1.7) is None  # above chance, but no history yet: not a spike
    for _ in range(5):
        watch.accept(0.3)
    assert watch.classify(1.7) == "loss_spike"  # 5.7x the median and above ln 5 (the story's collapse)
    assert watch.classify(1.0) is None  # 3.3x the median: below spike_factor
    assert watch.classify(1.5) is None  # 5x the median but below chance level: ordinary late-training noise


def test_running_mean_recovers_each_batch_loss_from_keras_running_average():
    running, losses, sizes = RunningMean(), [0.9, 0.5, 2.0, 0.1], [32, 32, 32, 7]
    total = seen = 0.0
    for loss, size in zip(losses, sizes):
        total, seen = total + loss * size, seen + size
        reported = total / seen  # what Keras logs: the size-weighted mean so far
        assert running.batch_loss(reported, size) == pytest.approx(loss)
        running.accept(reported, size)


@pytest.mark.train
def test_sigterm_mid_training_stops_with_143_and_keeps_the_backup(built, workdir):
    params = tiny_params(epochs=40)
    write_params(workdir, params)
    backup_meta = workdir / params["paths"]["train_backup_dir"] / "meta.json"
    process = kill_train_after_backup(workdir, backup_meta, signal_number=signal.SIGTERM)
    assert process.returncode == 143, process.stderr_text
    assert "stopped by SIGTERM" in process.stderr_text and "resumes from its last epoch backup" in process.stderr_text
    assert json.loads(backup_meta.read_text())["epoch"] >= 0  # the backup is kept, whole
    assert not (workdir / params["paths"]["model"]).exists()


@pytest.mark.train
def test_sigkill_mid_training_resumes_to_identical_weights(built, workdir, tmp_path):
    # Killed as soon as the first epoch's backup exists: 20 tiny epochs (~0.1 s each) leave it time.
    params = tiny_params(epochs=20)
    write_params(workdir, params)
    backup_meta = workdir / params["paths"]["train_backup_dir"] / "meta.json"

    process = kill_train_after_backup(workdir, backup_meta)
    assert process.returncode == -signal.SIGKILL
    killed_after = json.loads(backup_meta.read_text())["epoch"] + 1
    assert 1 <= killed_after < 20
    assert not (workdir / params["paths"]["model"]).exists()

    resumed = subprocess.run(["trainwell", "train"], cwd=workdir, env=tool_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming after epoch {killed_after}" in resumed.stdout
    resumed_weights = keras.models.load_model(workdir / params["paths"]["model"]).get_weights()

    # An uninterrupted run in a fresh process reaches the same weights, bit for bit. (Two fresh
    # processes agreeing on every output, logged metrics included, is test_install's dvc.lock check.)
    os.remove(workdir / params["paths"]["model"])
    fresh = subprocess.run(["trainwell", "train"], cwd=workdir, env=tool_env(), capture_output=True, text=True)
    assert fresh.returncode == 0 and "resuming" not in fresh.stdout, fresh.stderr
    fresh_weights = keras.models.load_model(workdir / params["paths"]["model"]).get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(resumed_weights, fresh_weights))
