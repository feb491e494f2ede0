"""Classification metrics for a trained model: accuracy, per-class precision/recall/F1, calibration, top-k."""

from __future__ import annotations

import numpy as np

CALIBRATION_BINS = 15

# What the evaluate stage writes under paths.eval_report_dir (the card and report stages read them too).
# The CSV files are also DVC plots.
PREDICTIONS_FILE = "predictions.csv"  # one row per test image: path, actual, predicted, p_predicted, p_actual
RELIABILITY_FILE = "reliability.csv"  # the calibration bins
PER_CLASS_FILE = "per_class.csv"
PER_CLASS_JSON = "per_class.json"     # per-class precision/recall/F1/support and the macro averages
CONFUSION_FILE = "confusion.json"     # classes and the matrix, rows actual, columns predicted


def calibration(*, probabilities: np.ndarray, labels: np.ndarray, bins: int = CALIBRATION_BINS) -> tuple[float, list[dict]]:
    """Expected calibration error (confidence = top probability, equal-width bins) and the
    reliability table behind it: per non-empty bin, its edges, mean confidence, accuracy and count."""
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
        table.append({"bin": index, "lower": float(edges[index]), "upper": float(edges[index + 1]),
                      "confidence": mean_confidence, "accuracy": accuracy, "count": count})
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
    total = len(labels)
    return {
        "test_images": total,
        "accuracy": float((labels == predictions).mean()) if total else 0.0,
        "macro_precision": float(np.mean([m["precision"] for m in per_class.values()])),
        "macro_recall": float(np.mean([m["recall"] for m in per_class.values()])),
        "macro_f1": float(np.mean([m["f1"] for m in per_class.values()])),
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
    }
