"""Train and evaluate stages on tiny data with real TensorFlow: contract first, no NaN model ever saved."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import keras
import numpy as np
import pytest

from tests.helpers import tiny_params, write_params
from trainwell.errors import ContractError
from trainwell.params import load_params
from trainwell.stages import evaluate, report, train
from trainwell.training import evaluation, fit
from trainwell.training.guard import TrainingDiverged


def with_train(workdir: Path, **train_overrides) -> None:
    params = tiny_params()
    params["train"].update(train_overrides)
    write_params(workdir, params)


@pytest.mark.train
def test_train_then_evaluate(built, capsys):
    assert train.main() == 0
    paths = load_params().paths
    model = keras.models.load_model(paths.model)
    assert fit.weights_are_finite(model)
    assert model.output_shape == (None, 5)
    logged = json.loads((Path(paths.train_log_dir) / "metrics.json").read_text())
    assert logged["step"] == 1  # two epochs, both logged by dvclive
    assert {"accuracy", "loss"} <= set(logged["train"]) and {"accuracy", "loss"} <= set(logged["validation"])
    assert json.loads((Path(paths.train_report_dir) / "incidents.json").read_text()) == []
    assert "epochs 1-2 over 30 training and 15 validation images; 0 guard incident(s)" in capsys.readouterr().out
    assert not Path(paths.train_backup_dir).exists()  # scratch state removed once the model is safe

    assert evaluate.main() == 0
    metrics = json.loads(Path(paths.eval_metrics).read_text())
    # The metric file is the headline only (one row of `dvc exp show`); the details sit beside the plots.
    assert list(metrics) == ["test_images", "accuracy", "macro_f1", "expected_calibration_error"]
    assert metrics["test_images"] == 15  # the whole test split, no subsampling
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert 0.0 <= metrics["expected_calibration_error"] <= 1.0
    report_dir = Path(paths.eval_report_dir)
    per_class = json.loads((report_dir / evaluate.PER_CLASS_JSON).read_text())
    assert set(per_class["per_class"]) == {"circle", "cross", "ring", "square", "triangle"}
    assert np.mean([values["f1"] for values in per_class["per_class"].values()]) == pytest.approx(metrics["macro_f1"])
    confusion = json.loads((report_dir / evaluate.CONFUSION_FILE).read_text())
    assert confusion["classes"] == sorted(per_class["per_class"]) and sum(map(sum, confusion["matrix"])) == 15
    with (report_dir / evaluate.PREDICTIONS_FILE).open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 15 and list(rows[0]) == ["path", "actual", "predicted", "p_predicted", "p_actual"]
    accuracy = np.mean([row["actual"] == row["predicted"] for row in rows])
    assert accuracy == pytest.approx(metrics["accuracy"])
    assert all(float(row["p_actual"]) <= float(row["p_predicted"]) for row in rows)  # the prediction is the top class
    with (report_dir / evaluate.RELIABILITY_FILE).open() as handle:
        bins = list(csv.DictReader(handle))
    assert sum(int(row["count"]) for row in bins) == 15
    assert all(float(row["lower"]) <= float(row["confidence"]) <= float(row["upper"]) for row in bins)
    with (report_dir / evaluate.PER_CLASS_FILE).open() as handle:
        assert len(list(csv.DictReader(handle))) == 5

    # The report stage draws the site from those files: no label review or export here, so their numbers are dashes.
    assert report.main() == 0
    page = (report_dir / "index.html").read_text()
    mistakes = sum(row["actual"] != row["predicted"] for row in rows)
    assert f"of {mistakes} mistakes" in page or f"All {mistakes} mistakes" in page
    assert page.count('src="data:image/png;base64,') == min(24, mistakes) + min(24, 15 - mistakes)
    assert "<script" not in page and page.count("<svg") == 5
    index = Path("reports/index.html").read_text()
    assert f"{metrics['accuracy']:.4f}" in index and "label suspects" in index
    assert "epochs" in (Path(paths.train_report_dir) / "index.html").read_text()
    assert "Images per class" in Path("reports/split/index.html").read_text()


def test_sigmoid_head_is_refused_before_any_training_step(built):
    with_train(built, output_activation="sigmoid")
    with pytest.raises(ContractError, match="sigmoid"):
        train.main()
    paths = load_params().paths
    assert not Path(paths.model).exists()
    assert not Path(paths.train_log_dir).exists()  # fit() never started


@pytest.mark.train
def test_hopeless_divergence_gives_up_and_saves_no_model(built):
    # The largest step size params allow (10) sends the weights far past any minimum within a step;
    # lowering it by a tenth three times (to 7.29) cannot help.
    params = tiny_params()
    params["train"].update(learning_rate=10, epochs=2)
    params["train"]["guard"].update(max_rollbacks=3, lr_factor=0.9)
    write_params(built, params)
    with pytest.raises(TrainingDiverged, match="nothing was saved"):
        train.main()
    paths = load_params().paths
    assert not Path(paths.model).exists()
    # Giving up raises instead of stop_training, so the epoch-1 backup survives for a retry
    # (the Keras pitfall: TerminateOnNaN + BackupAndRestore deletes the backup on the way out).
    assert json.loads((Path(paths.train_backup_dir) / "meta.json").read_text())["epoch"] == 0
    incidents = json.loads((Path(paths.train_report_dir) / "incidents.json").read_text())
    assert len(incidents) == 4
    assert {incident["kind"] for incident in incidents} <= {"nan_loss", "inf_loss", "loss_explosion", "loss_spike", "nonfinite_weights"}
    # The whole offending batch, by path: 30 images in batches of 8, 8, 8, 6.
    assert all(len(incident["files"]) == min(8, 30 - 8 * incident["step"]) for incident in incidents)


@pytest.mark.train
def test_guard_recovers_from_a_diverging_learning_rate(built):
    # 10 (the largest step size params allow) diverges at once; each rollback divides the rate by
    # 10 until one trains. The stage must finish, record every incident, and save finite weights.
    params = tiny_params(epochs=12)
    params["train"].update(learning_rate=10)
    params["train"]["guard"].update(lr_factor=0.1, max_rollbacks=6)
    write_params(built, params)
    assert train.main() == 0
    paths = load_params().paths
    incidents = json.loads((Path(paths.train_report_dir) / "incidents.json").read_text())
    assert len(incidents) == 3
    known = set(json.loads((built / "data" / "cache" / "train" / "paths.json").read_text()))
    assert all(set(incident["files"]) <= known and incident["files"] for incident in incidents)
    model = keras.models.load_model(paths.model)
    assert fit.weights_are_finite(model)
    assert float(np.asarray(model.optimizer.learning_rate)) == pytest.approx(0.01)  # 10 lowered 3 times
    final = json.loads((Path(paths.train_log_dir) / "metrics.json").read_text())
    assert final["train"]["accuracy"] > 0.4  # chance is 0.2: it learned after the incidents


def test_metric_classification_report_is_exact():
    metrics = evaluation.classification_metrics(
        labels=np.array([0, 0, 1, 1, 2]), predictions=np.array([0, 1, 1, 1, 0]), classes=["a", "b", "c"]
    )
    assert metrics["accuracy"] == pytest.approx(0.6)
    assert metrics["per_class"]["a"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert metrics["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert metrics["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert metrics["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]


@pytest.mark.train
def test_two_runs_give_bit_identical_weights(built):
    train_params = load_params().train
    first, _ = fit.train_model(cache_dir=load_params().paths.cache_dir, train=train_params, log_dir=None)
    second, _ = fit.train_model(cache_dir=load_params().paths.cache_dir, train=train_params, log_dir=None)
    for a, b in zip(first.get_weights(), second.get_weights()):
        assert np.array_equal(a, b)
    other, _ = fit.train_model(
        cache_dir=load_params().paths.cache_dir, train=train_params.model_copy(update={"seed": 1}), log_dir=None
    )
    assert any(not np.array_equal(a, b) for a, b in zip(first.get_weights(), other.get_weights()))


def test_calibration_and_top_k_are_exact():
    probabilities = np.array([[0.9, 0.1, 0.0], [0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.05, 0.05, 0.9]])
    labels = np.array([0, 1, 1, 2])
    error, table = evaluation.calibration(probabilities=probabilities, labels=labels, bins=10)
    # Bins: 0.9 (right, x2: 0.9 and 0.9 -> conf 0.9, acc 1.0), 0.6 (wrong), 0.5 (right).
    assert [(row["count"], row["accuracy"]) for row in table] == [(1, 1.0), (1, 0.0), (2, 1.0)]
    assert error == pytest.approx((0.5 * 1 + 0.6 * 1 + 0.1 * 2) / 4)
    assert evaluation.top_k_accuracy(probabilities=probabilities, labels=labels, k=1) == 0.75
    assert evaluation.top_k_accuracy(probabilities=probabilities, labels=labels, k=2) == 1.0


def test_balanced_class_weights():
    weights = fit.balanced_class_weights(np.array([0, 0, 0, 1, 2, 2]), 4)
    assert weights == {0: pytest.approx(6 / 9), 1: pytest.approx(2.0), 2: pytest.approx(1.0), 3: 1.0}


@pytest.mark.train
def test_training_with_balanced_class_weights(built, capsys):
    with_train(built, class_weight="balanced")
    assert train.main() == 0
    out = capsys.readouterr().out
    assert "train: class weights circle 1.000" in out  # 6 images in each of 5 classes: all weights 1
    assert fit.weights_are_finite(keras.models.load_model(load_params().paths.model))
