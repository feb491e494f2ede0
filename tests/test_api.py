"""The library API the README documents: the same objects the commands use, reachable from `import trainwell`."""

from __future__ import annotations

import json
import subprocess
import sys

import keras
import numpy as np
import pytest

import trainwell
from tests import faults


def test_import_trainwell_is_cheap_and_loads_names_on_first_use():
    code = ("import sys, trainwell; assert 'tensorflow' not in sys.modules, 'import trainwell started TensorFlow'; "
            "print(trainwell.__version__, sorted(trainwell.__all__))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(trainwell.__version__)
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        trainwell.nothing_here  # noqa: B018


def test_audit_folder_returns_a_report_with_json_and_html(demo_copy):
    faults.write(demo_copy / "ring" / "half.jpg", faults.truncated_jpeg())
    report = trainwell.audit_folder(demo_copy)
    assert isinstance(report, trainwell.AuditReport)
    assert not report.policy_holds
    assert [(issue.path, issue.kind, issue.severity) for issue in report.issues] == [("ring/half.jpg", "truncated", "error")]
    assert json.loads(report.to_json())["quarantined"] == ["ring/half.jpg"]
    page = report.to_html()
    assert "ring/half.jpg" in page and "<script" not in page


def test_check_model_on_a_users_compiled_model():
    def model(activation: str) -> keras.Model:
        inputs = keras.Input((8,))
        built = keras.Model(inputs, keras.layers.Dense(5, activation=activation)(inputs))
        built.compile(loss="categorical_crossentropy")
        return built

    assert trainwell.check_model(model("softmax"), num_classes=5) == []
    problems = trainwell.check_model(model("sigmoid"), num_classes=5)
    assert any(problem.severity == "error" and "softmax" in problem.message for problem in problems)
    uncompiled = keras.Sequential([keras.Input((8,)), keras.layers.Dense(5, activation="softmax")])
    with pytest.raises(trainwell.ContractError, match="compile"):
        trainwell.check_model(uncompiled, num_classes=5)


@pytest.mark.train
def test_divergence_guard_in_a_plain_fit():
    keras.utils.set_random_seed(0)
    features = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    labels = keras.utils.to_categorical(np.arange(64) % 3, 3)
    features[5, 0] = np.nan  # one poisoned example: its batch's loss is NaN
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    guard = trainwell.DivergenceGuard(num_classes=3)
    model.fit(features, labels, batch_size=16, epochs=2, shuffle=False, callbacks=[guard], verbose=0)
    assert {incident["kind"] for incident in guard.incidents} <= {"nan_loss", "nonfinite_weights"}
    assert len(guard.incidents) == 2  # the poisoned batch, once per epoch, rolled back each time
    assert all(np.isfinite(weight).all() for weight in model.get_weights())
