"""Stage `evaluate`: the test split's headline metrics, and the per-class, confusion and calibration details behind them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trainwell.console import say, warn
from trainwell.data.cache import read_cache_manifest
from trainwell.errors import DataError
from trainwell.outputs import guard_stage, guarded, write_json, write_rows, write_table
from trainwell.params import load_params
from trainwell.training.evaluation import (
    CONFUSION_FILE,
    PER_CLASS_FILE,
    PER_CLASS_JSON,
    PREDICTIONS_FILE,
    RELIABILITY_FILE,
    calibration,
    classification_metrics,
    top_k_accuracy,
)

# metrics/eval.json holds only these (plus top-5 accuracy past 5 classes): a row of `dvc exp show`, not a table.
HEADLINE = ("test_images", "accuracy", "macro_f1", "expected_calibration_error")


@guarded
def main(*, params_file: str = "params.yaml") -> int:
    params = load_params(params_file)
    guard_stage("evaluate", params=params, params_file=params_file)
    # What is missing is said before TensorFlow's seconds of start-up.
    read_cache_manifest(params.paths.cache_dir)
    if not Path(params.paths.model).exists():
        raise DataError(f"model '{params.paths.model}' is missing; run `dvc repro train` first")
    from trainwell.training.inputs import BatchSpec, plan_inputs
    from trainwell.training.model_files import load_model_file

    # Held in memory within train.memory_budget_mb, streamed shard by shard past it.
    test_input = plan_inputs(cache_dir=params.paths.cache_dir, splits=["test"],
                             memory_budget_bytes=params.train.memory_budget_mb << 20)["test"]
    test = test_input.split
    # Inference only: compile=False skips restoring the optimizer, whose state a mixed-precision
    # run saves in a form plain loading warns about ("Skipping variable loading for optimizer").
    model = load_model_file(params.paths.model, compile=False)
    if test_input.streaming:
        say(f"evaluate: streaming the test split from {len(test.counts)} shards "
              f"({test.image_bytes / 2**20:.0f} MiB > train.memory_budget_mb)")
    data = test_input.eval_dataset(BatchSpec(num_classes=test.num_classes, batch_size=params.evaluate.batch_size))
    probabilities = model.predict(data.map(lambda images, labels: images), verbose=0)
    predictions = np.argmax(probabilities, axis=1) if len(test.labels) else np.zeros((0,), dtype=np.int64)
    metrics = classification_metrics(labels=test.labels, predictions=predictions, classes=test.classes)
    ece, reliability = calibration(probabilities=probabilities, labels=test.labels)
    headline = {key: metrics[key] for key in HEADLINE if key in metrics} | {"expected_calibration_error": ece}
    if test.num_classes > 5:
        headline["top_5_accuracy"] = top_k_accuracy(probabilities=probabilities, labels=test.labels, k=5)
    write_json(params.paths.eval_metrics, headline)
    report_dir = Path(params.paths.eval_report_dir)
    write_json(report_dir / PER_CLASS_JSON, {"per_class": metrics["per_class"],
                                             **{key: metrics[key] for key in ("macro_precision", "macro_recall")}})
    write_json(report_dir / CONFUSION_FILE, {"classes": test.classes, "rows": "actual", "columns": "predicted",
                                             "matrix": metrics["confusion_matrix"]})
    write_rows(report_dir / RELIABILITY_FILE, reliability,
               fields=["bin", "lower", "upper", "confidence", "accuracy", "count"])
    write_rows(report_dir / PER_CLASS_FILE, [{"class": name, **values} for name, values in metrics["per_class"].items()])
    # One row per test image, in the cache's order: the table DVC's confusion template draws from, and
    # what the report's gallery of mistakes is picked from (6 decimals: stable bytes, finer than any ranking needs).
    # Tuples, not a dict per row (a million test rows as dicts took hundreds of MB).
    write_table(report_dir / PREDICTIONS_FILE, ["path", "actual", "predicted", "p_predicted", "p_actual"], (
        (path, test.classes[label], test.classes[prediction], f"{probabilities[row, prediction]:.6f}",
         f"{probabilities[row, label]:.6f}")
        for row, (path, label, prediction) in enumerate(zip(test.paths, test.labels.tolist(), predictions.tolist()))))
    untested = [name for name, values in metrics["per_class"].items() if not values["support"]]
    if untested:
        warn(f"evaluate: classes {untested} have no test images: each counts as F1 0 in macro F1 "
             f"({metrics['macro_f1']:.4f}) and accuracy says nothing about them. Add images to them (the split stage "
             "refuses this unless split.min_images_per_class is 0)")
    say(
        f"evaluate: accuracy {metrics['accuracy']:.4f} on {metrics['test_images']} test images; "
        f"expected calibration error {ece:.4f}"
    )
    return 0
