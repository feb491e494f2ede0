"""Stage `evaluate`: test-split accuracy, per-class precision/recall/F1 and a confusion matrix plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.errors import DataError
from pipeline.outputs import write_json, write_rows
from pipeline.params import load_params

PREDICTIONS_FILE = "predictions.csv"
RELIABILITY_FILE = "reliability.csv"
PER_CLASS_FILE = "per_class.csv"
HTML_FILE = "index.html"
CALIBRATION_BINS = 15


def calibration(*, probabilities: np.ndarray, labels: np.ndarray, bins: int = CALIBRATION_BINS) -> tuple[float, list[dict]]:
    """Expected calibration error (confidence = top probability, equal-width bins) and the
    reliability table behind it: per non-empty bin, mean confidence, accuracy and count."""
    if len(labels) == 0:
        return 0.0, []
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    error, table = 0.0, []
    for index in range(bins):
        members = which == index
        count = int(members.sum())
        if not count:
            continue
        mean_confidence, accuracy = float(confidence[members].mean()), float(correct[members].mean())
        error += abs(accuracy - mean_confidence) * count / len(labels)
        table.append({"bin": index, "confidence": mean_confidence, "accuracy": accuracy, "count": count})
    return float(error), table


def top_k_accuracy(*, probabilities: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of examples whose true class is among the k most probable."""
    if len(labels) == 0:
        return 0.0
    top = np.argsort(-probabilities, axis=1)[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean())


def classification_metrics(*, labels: np.ndarray, predictions: np.ndarray, classes: list[str]) -> dict:
    """Accuracy, per-class precision/recall/F1/support and macro averages (0 where undefined)."""
    labels = np.asarray(labels)
    predictions = np.asarray(predictions)
    num_classes = len(classes)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels, predictions), 1)
    per_class = {}
    for index, name in enumerate(classes):
        true_positive = confusion[index, index]
        predicted = confusion[:, index].sum()
        actual = confusion[index, :].sum()
        precision = true_positive / predicted if predicted else 0.0
        recall = true_positive / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": float(precision), "recall": float(recall), "f1": float(f1), "support": int(actual)}
    total = int(len(labels))
    return {
        "test_images": total,
        "accuracy": float((labels == predictions).mean()) if total else 0.0,
        "macro_precision": float(np.mean([m["precision"] for m in per_class.values()])),
        "macro_recall": float(np.mean([m["recall"] for m in per_class.values()])),
        "macro_f1": float(np.mean([m["f1"] for m in per_class.values()])),
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
    }


def main(*, params_file: str = "params.yaml") -> int:
    import keras

    from pipeline.dataset import plan_inputs

    params = load_params(params_file)
    # Held in memory within train.memory_budget_mb, streamed shard by shard past it.
    test_input = plan_inputs(cache_dir=params.paths.cache_dir, splits=["test"],
                             memory_budget_bytes=params.train.memory_budget_mb << 20)["test"]
    test = test_input.split
    if not Path(params.paths.model).exists():
        raise DataError(f"model '{params.paths.model}' is missing; run `dvc repro train` first")
    # Inference only: compile=False skips restoring the optimizer, whose state a mixed-precision
    # run saves in a form plain loading warns about ("Skipping variable loading for optimizer").
    model = keras.models.load_model(params.paths.model, compile=False)
    if test_input.streaming:
        print(f"evaluate: streaming the test split from {len(test.counts)} shards "
              f"({test.image_bytes / 2**20:.0f} MiB > train.memory_budget_mb)")
    data = test_input.eval_dataset(num_classes=test.num_classes, batch_size=params.evaluate.batch_size)
    probabilities = model.predict(data.map(lambda images, labels: images), verbose=0)
    predictions = np.argmax(probabilities, axis=1) if len(test.labels) else np.zeros((0,), dtype=np.int64)
    metrics = classification_metrics(labels=test.labels, predictions=predictions, classes=test.classes)
    metrics["expected_calibration_error"], reliability = calibration(probabilities=probabilities, labels=test.labels)
    if test.num_classes > 5:
        metrics["top_5_accuracy"] = top_k_accuracy(probabilities=probabilities, labels=test.labels, k=5)
    write_json(params.paths.eval_metrics, metrics)
    report_dir = Path(params.paths.eval_report_dir)
    write_rows(report_dir / RELIABILITY_FILE, reliability)
    write_rows(report_dir / PER_CLASS_FILE, [{"class": name, **values} for name, values in metrics["per_class"].items()])
    from pipeline.eval_html import render_evaluation

    (report_dir / HTML_FILE).write_text(render_evaluation(
        image=test.image if test_input.streaming else test_input.images.__getitem__, labels=test.labels,
        probabilities=probabilities, paths=test.paths, classes=test.classes,
        metrics=metrics))
    # One row per test image: the table DVC's confusion template draws from.
    write_rows(report_dir / PREDICTIONS_FILE, [
        {"path": path, "actual": test.classes[label], "predicted": test.classes[prediction]}
        for path, label, prediction in zip(test.paths, test.labels, predictions)
    ], fields=["path", "actual", "predicted"])
    print(
        f"evaluate: accuracy {metrics['accuracy']:.4f} on {metrics['test_images']} test images; "
        f"expected calibration error {metrics['expected_calibration_error']:.4f}"
    )
    return 0
