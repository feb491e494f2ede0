"""Stage `report`: the report site's overview, split, training and evaluation pages, drawn from the other stages' outputs.

The last stage of the pipeline and a cheap one (no model is loaded, no TensorFlow imported): it
reads metrics, split counts, training curves, evaluation details and the few test images the
gallery shows from the decoded cache, and writes static pages whose charts are inline SVG, so
the whole site opens offline. The audit and label review pages are written by their own stages,
with the same navigation bar.
"""

from __future__ import annotations

import csv
import html
from pathlib import Path

import numpy as np

from trainwell import storage
from trainwell.console import say, shown
from trainwell.data.cache import open_split
from trainwell.data.splits import CLASSES_FILE, COUNTS_FILE, SPLIT_NAMES
from trainwell.errors import DataError
from trainwell.outputs import guard_stage, guarded, read_rows, write_text_atomically
from trainwell.params import load_params
from trainwell.reports.curve_files import read_curves
from trainwell.reports.evaluation_page import Example, pick_examples, render_evaluation
from trainwell.reports.gate import evaluate_checks, split_metric
from trainwell.reports.index_page import headlines, render_index
from trainwell.reports.run_pages import render_split, render_training
from trainwell.reports.site import PAGES, page, site_locations
from trainwell.training.evaluation import CONFUSION_FILE, PER_CLASS_JSON, PREDICTIONS_FILE, RELIABILITY_FILE

# The train params shown on the training page, when present.
TRAINING_SETTINGS = ("epochs", "batch_size", "learning_rate", "seed", "conv_filters", "kernel_size", "dense_units",
                     "output_activation", "loss", "class_weight", "augment", "augment_layers", "strategy",
                     "mixed_precision")


# The stages' outputs this one reads are a few kB to a few MB; past this a file is not one of them.
MAX_INPUT_BYTES = 256 << 20


def _json(path: str | Path) -> object:
    """A JSON file another stage wrote (storage.read_json_or_none, bounded by MAX_INPUT_BYTES)."""
    return storage.read_json_or_none(path, max_bytes=MAX_INPUT_BYTES)


def _dict(path: str | Path) -> dict | None:
    return storage.read_json_object_or_none(path, max_bytes=MAX_INPUT_BYTES)


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _not_run(*, current: str, locations: dict[str, str], what: str) -> str:
    return page(title=f"trainwell: {PAGES[current].lower()}", current=current, locations=locations,
                body=f"<h1>{PAGES[current]}</h1><p>Nothing to show yet: {html.escape(what)}. Run <code>dvc repro</code>.</p>")


def _split_counts(receipt: dict) -> dict[str, dict[str, int]] | None:
    """split name -> class -> images from counts.json, or None when it holds anything else."""
    counts = {}
    for name, shown_name in SPLIT_NAMES.items():
        entry = receipt.get(name)
        if entry is None:
            continue
        per_class = entry.get("per_class") if isinstance(entry, dict) else None
        if not isinstance(per_class, dict) or not all(_number(count) for count in per_class.values()):
            return None
        counts[shown_name] = {str(label): int(count) for label, count in per_class.items()}
    return counts


def split_page(*, splits_dir: str, split_metrics: dict | None, locations: dict[str, str]) -> str:
    receipt, classes = _dict(Path(splits_dir) / COUNTS_FILE) or {}, _json(Path(splits_dir) / CLASSES_FILE)
    counts = _split_counts(receipt) if receipt else None
    if counts is None or not isinstance(classes, list):
        return _not_run(current="split", locations=locations,
                        what=f"no readable {COUNTS_FILE} and {CLASSES_FILE} in {splits_dir}")
    metrics = split_metrics or {}
    return render_split(classes=[str(name) for name in classes], counts=counts,
                        excluded=metrics.get("files_excluded_by_audit", receipt.get("files_excluded_by_audit")),
                        groups_kept_together=metrics.get("groups_kept_together", receipt.get("groups_kept_together")),
                        locations=locations)


def _per_class(document: dict | None) -> dict[str, dict] | None:
    """class -> {precision, recall, f1, support} from per_class.json, or None when it holds anything else."""
    rows = document.get("per_class") if document is not None else None
    if not isinstance(rows, dict) or not all(
            isinstance(values, dict) and all(_number(values.get(key)) for key in ("precision", "recall", "f1", "support"))
            for values in rows.values()):
        return None
    return rows


def _confusion(document: dict | None) -> tuple[list[str], list[list[int]]] | None:
    """(classes, square matrix of counts) from confusion.json, or None when it holds anything else."""
    classes, matrix = (document.get("classes"), document.get("matrix")) if document is not None else (None, None)
    if not isinstance(classes, list) or not isinstance(matrix, list) or len(matrix) != len(classes) or not all(
            isinstance(row, list) and len(row) == len(classes) and all(_number(count) for count in row)
            for row in matrix):
        return None
    return [str(name) for name in classes], [[int(count) for count in row] for row in matrix]


def _tables(report_dir: Path) -> tuple[list[dict], list[dict[str, str]]] | None:
    """The reliability bins and the per-image predictions, numbers checked, or None when either does
    not hold what evaluate writes (a missing file, other columns, a cell that is not a number)."""
    try:
        reliability = [{key: float(value) if key in ("lower", "upper", "confidence", "accuracy") else int(value)
                        for key, value in row.items()}
                       for row in read_rows(report_dir / RELIABILITY_FILE,
                                            columns=["bin", "lower", "upper", "confidence", "accuracy", "count"])]
        predictions = read_rows(report_dir / PREDICTIONS_FILE, columns=["path", "actual", "predicted", "p_predicted",
                                                                         "p_actual"])
        for row in predictions:
            float(row["p_predicted"]), float(row["p_actual"])
    except (OSError, ValueError, TypeError, csv.Error):
        return None
    return reliability, predictions


def evaluation_page(*, report_dir: Path, cache_dir: str, evaluation: dict | None,
                    curves: dict, locations: dict[str, str]) -> str:
    per_class, confusion = _per_class(_dict(report_dir / PER_CLASS_JSON)), _confusion(_dict(report_dir / CONFUSION_FILE))
    tables = _tables(report_dir) if (report_dir / PREDICTIONS_FILE).exists() else None
    if evaluation is None or per_class is None or confusion is None or tables is None:
        return _not_run(current="evaluation", locations=locations,
                        what="the evaluate stage has not written its results (or they are not what it writes)")
    reliability, predictions = tables
    confidence = np.array([float(row["p_predicted"]) for row in predictions])
    correct = np.array([row["actual"] == row["predicted"] for row in predictions], dtype=bool)
    mistakes, unsure = pick_examples(confidence=confidence, correct=correct)
    # The gallery shows the pixels the model saw: the test split's decoded cache, in the predictions' order.
    test = open_split(cache_dir=cache_dir, split="test")
    if test.paths != [row["path"] for row in predictions]:
        raise DataError(f"{report_dir / PREDICTIONS_FILE} does not list the cached test split's images; run "
                        "`dvc repro evaluate` (or `trainwell evaluate`) again")
    pictures = {index: test.image(index) for index in sorted({*mistakes, *unsure})}  # index order: each shard read once

    def examples(indices: list[int]) -> list[Example]:
        return [Example(path=predictions[index]["path"], actual=predictions[index]["actual"],
                        predicted=predictions[index]["predicted"], p_predicted=float(predictions[index]["p_predicted"]),
                        p_actual=float(predictions[index]["p_actual"]), image=pictures[index]) for index in indices]

    return render_evaluation(
        evaluation=evaluation, per_class=per_class, classes=confusion[0],
        confusion=confusion[1], reliability=reliability, curves=curves, mistakes=examples(mistakes),
        mistakes_total=int((~correct).sum()), unsure=examples(unsure), correct_total=int(correct.sum()),
        locations=locations)


@guarded
def main(*, params_file: str = "params.yaml") -> int:
    params = load_params(params_file)
    guard_stage("report", params=params, params_file=params_file)
    paths = params.paths
    locations = site_locations(paths)
    evaluation = _dict(paths.eval_metrics)
    checks = params.gate.checks
    # Thresholds only: comparing with a git revision would make this stage's output depend on git history.
    gate_rows = evaluate_checks(checks=checks, current={file: _dict(file) for file in
                                                        sorted({split_metric(check.metric)[0] for check in checks})},
                                baseline=None)
    numbers = headlines(evaluation=evaluation, audit=_dict(paths.audit_metrics), labels=_dict(paths.label_metrics),
                        export=_dict(paths.export_metrics))
    curves = read_curves(paths.train_log_dir, max_bytes=MAX_INPUT_BYTES)
    train = params.train.model_dump(mode="json")
    incidents = _json(Path(paths.train_report_dir) / "incidents.json")
    incidents = [entry for entry in incidents if isinstance(entry, dict)] if isinstance(incidents, list) else None
    pages = {
        "index": render_index(numbers=numbers, gate_rows=gate_rows, gate_configured=bool(checks),
                              test_images=(evaluation or {}).get("test_images"), locations=locations),
        "split": split_page(splits_dir=paths.splits_dir, split_metrics=_dict(paths.split_metrics), locations=locations),
        "training": render_training(curves=curves, settings={key: train[key] for key in TRAINING_SETTINGS if key in train},
                                    incidents=incidents, locations=locations),
        "evaluation": evaluation_page(report_dir=Path(paths.eval_report_dir), cache_dir=paths.cache_dir,
                                      evaluation=evaluation, curves=curves, locations=locations),
    }
    for key, text in pages.items():
        write_text_atomically(locations[key], text)
    failed = sum(not row.passed for row in gate_rows)
    say(f"report: {shown(locations['index'])} (and the split, training and evaluation pages); gate "
        + (f"{failed} of {len(gate_rows)} checks FAIL" if failed else f"passes ({len(gate_rows)} checks)"))
    return 0
