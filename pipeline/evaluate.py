"""Stage `evaluate`: test-split accuracy, per-class precision/recall/F1 and a confusion matrix plot."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from pipeline.outputs import write_json
from pipeline.params import load_params

PREDICTIONS_FILE = "predictions.csv"


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


def write_predictions(path: str | Path, *, paths: list[str], labels: np.ndarray, predictions: np.ndarray, classes: list[str]) -> None:
    """One row per test image: the table DVC's confusion template draws from."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "actual", "predicted"])
        for file_path, label, prediction in zip(paths, labels, predictions):
            writer.writerow([file_path, classes[label], classes[prediction]])


def main(*, params_file: str = "params.yaml") -> int:
    import keras

    from pipeline.dataset import load_split, make_eval_dataset

    params = load_params(params_file)
    test = load_split(cache_dir=params.paths.cache_dir, split="test")
    model = keras.models.load_model(params.paths.model)
    data = make_eval_dataset(
        images=test.images, labels=test.labels, num_classes=test.num_classes, batch_size=params.evaluate.batch_size
    )
    probabilities = model.predict(data.map(lambda images, labels: images), verbose=0)
    predictions = np.argmax(probabilities, axis=1) if len(test.labels) else np.zeros((0,), dtype=np.int64)
    metrics = classification_metrics(labels=test.labels, predictions=predictions, classes=test.classes)
    write_json(params.paths.eval_metrics, metrics)
    write_predictions(
        Path(params.paths.eval_report_dir) / PREDICTIONS_FILE,
        paths=test.paths,
        labels=test.labels,
        predictions=predictions,
        classes=test.classes,
    )
    print(f"evaluate: accuracy {metrics['accuracy']:.4f} on {metrics['test_images']} test images")
    return 0
