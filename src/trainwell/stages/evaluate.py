"""Stage `evaluate`: test-split accuracy, per-class precision/recall/F1, calibration and a confusion matrix plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trainwell.console import say
from trainwell.errors import DataError
from trainwell.outputs import write_json, write_rows, write_table, write_text_atomically
from trainwell.params import load_params
from trainwell.training.evaluation import calibration, classification_metrics, top_k_accuracy

PREDICTIONS_FILE = "predictions.csv"
RELIABILITY_FILE = "reliability.csv"
PER_CLASS_FILE = "per_class.csv"
HTML_FILE = "index.html"


def main(*, params_file: str = "params.yaml") -> int:
    from trainwell.training.inputs import plan_inputs
    from trainwell.training.model_files import load_model_file

    params = load_params(params_file)
    # Held in memory within train.memory_budget_mb, streamed shard by shard past it.
    test_input = plan_inputs(cache_dir=params.paths.cache_dir, splits=["test"],
                             memory_budget_bytes=params.train.memory_budget_mb << 20)["test"]
    test = test_input.split
    if not Path(params.paths.model).exists():
        raise DataError(f"model '{params.paths.model}' is missing; run `dvc repro train` first")
    # Inference only: compile=False skips restoring the optimizer, whose state a mixed-precision
    # run saves in a form plain loading warns about ("Skipping variable loading for optimizer").
    model = load_model_file(params.paths.model, compile=False)
    if test_input.streaming:
        say(f"evaluate: streaming the test split from {len(test.counts)} shards "
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
    from trainwell.reports.evaluation_page import render_evaluation

    write_text_atomically(report_dir / HTML_FILE, render_evaluation(
        image=test_input.image, labels=test.labels, probabilities=probabilities, paths=test.paths,
        classes=test.classes, metrics=metrics))
    # One row per test image: the table DVC's confusion template draws from.
    write_table(report_dir / PREDICTIONS_FILE, ["path", "actual", "predicted"], (
        (path, test.classes[label], test.classes[prediction])
        for path, label, prediction in zip(test.paths, test.labels.tolist(), predictions.tolist())))
    say(
        f"evaluate: accuracy {metrics['accuracy']:.4f} on {metrics['test_images']} test images; "
        f"expected calibration error {metrics['expected_calibration_error']:.4f}"
    )
    return 0
