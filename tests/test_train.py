"""Train and evaluate stages on tiny data with real TensorFlow: contract first, no NaN model ever saved."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import keras
import numpy as np
import pytest

from pipeline import audit, build, evaluate, split, train
from pipeline.errors import ContractError
from pipeline.params import load_params
from tests.conftest import tiny_params, write_params


@pytest.fixture
def built(demo_copy: Path, workdir: Path) -> Path:
    """workdir with the tiny demo set audited, split and cached."""
    assert audit.main() == 0 and split.main() == 0 and build.main() == 0
    return workdir


def with_train(workdir: Path, **train_overrides) -> None:
    params = tiny_params()
    params["train"].update(train_overrides)
    write_params(workdir, params)


def test_train_then_evaluate(built, capsys):
    assert train.main() == 0
    paths = load_params().paths
    model = keras.models.load_model(paths.model)
    assert train.weights_are_finite(model)
    assert model.output_shape == (None, 5)
    logged = json.loads((Path(paths.train_log_dir) / "metrics.json").read_text())
    assert logged["step"] == 1  # two epochs, both logged by dvclive
    assert {"accuracy", "loss"} <= set(logged["train"]) and {"accuracy", "loss"} <= set(logged["eval"])
    assert json.loads((Path(paths.train_report_dir) / "incidents.json").read_text()) == []
    assert "2 epochs over 30 training and 15 validation images" in capsys.readouterr().out

    assert evaluate.main() == 0
    metrics = json.loads(Path(paths.eval_metrics).read_text())
    assert metrics["test_images"] == 15  # the whole test split, no subsampling
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert set(metrics["per_class"]) == {"circle", "cross", "ring", "square", "triangle"}
    assert sum(sum(row) for row in metrics["confusion_matrix"]) == 15
    with (Path(paths.eval_report_dir) / evaluate.PREDICTIONS_FILE).open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 15 and set(rows[0]) == {"path", "actual", "predicted"}
    accuracy = np.mean([row["actual"] == row["predicted"] for row in rows])
    assert accuracy == pytest.approx(metrics["accuracy"])


def test_sigmoid_head_is_refused_before_any_training_step(built):
    with_train(built, output_activation="sigmoid")
    with pytest.raises(ContractError, match="sigmoid"):
        train.main()
    paths = load_params().paths
    assert not Path(paths.model).exists()
    assert not Path(paths.train_log_dir).exists()  # fit() never started


def test_diverged_training_saves_no_model(built):
    # A step size this large overflows float32 weights within a few steps.
    with_train(built, learning_rate=1e30, epochs=2)
    with pytest.raises(train.TrainingDiverged, match="NOT saved"):
        train.main()
    paths = load_params().paths
    assert not Path(paths.model).exists()
    incidents = json.loads((Path(paths.train_report_dir) / "incidents.json").read_text())
    assert incidents and incidents[0]["action"] == "stopped"


def test_metric_classification_report_is_exact():
    metrics = evaluate.classification_metrics(
        labels=np.array([0, 0, 1, 1, 2]), predictions=np.array([0, 1, 1, 1, 0]), classes=["a", "b", "c"]
    )
    assert metrics["accuracy"] == pytest.approx(0.6)
    assert metrics["per_class"]["a"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert metrics["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert metrics["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert metrics["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]


def test_two_runs_give_bit_identical_weights(built):
    train_params = load_params().train
    first, _ = train.train_model(cache_dir=load_params().paths.cache_dir, train=train_params, log_dir=None)
    second, _ = train.train_model(cache_dir=load_params().paths.cache_dir, train=train_params, log_dir=None)
    for a, b in zip(first.get_weights(), second.get_weights()):
        assert np.array_equal(a, b)
    other, _ = train.train_model(
        cache_dir=load_params().paths.cache_dir, train=train_params.model_copy(update={"seed": 1}), log_dir=None
    )
    assert any(not np.array_equal(a, b) for a, b in zip(first.get_weights(), other.get_weights()))
