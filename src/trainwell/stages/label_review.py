"""Stage `label_review`: out-of-fold predictions on train+val, ranked by cleanlab into likely label errors."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from trainwell.console import say
from trainwell.data.cache import load_split
from trainwell.outputs import write_bytes_atomically, write_json, write_rows, write_text_atomically
from trainwell.params import load_params
from trainwell.training.label_review import out_of_fold_probabilities, rank_label_issues

SUSPECTS_FILE = "suspects.csv"
SUGGESTED_FILE = "suggested_labels.csv"


def main(*, params_file: str = "params.yaml") -> int:
    params = load_params(params_file)
    paths, review = params.paths, params.label_review
    parts = [load_split(cache_dir=paths.cache_dir, split=name) for name in ("train", "val")]
    images = np.concatenate([part.images for part in parts])
    labels = np.concatenate([part.labels for part in parts]).astype(np.int64)
    file_paths = [path for part in parts for path in part.paths]
    classes = parts[0].classes
    probabilities = out_of_fold_probabilities(images=images, labels=labels, num_classes=len(classes),
                                              review=review, train=params.train)
    suspects = rank_label_issues(labels=labels, probabilities=probabilities, filter_by=review.filter_by)
    report_dir = Path(paths.label_report_dir)
    # Kept for anyone who wants to re-rank with other cleanlab settings without retraining.
    buffer = io.BytesIO()
    np.save(buffer, probabilities)
    write_bytes_atomically(report_dir / "out_of_fold_probabilities.npy", buffer.getvalue())
    suggested = probabilities.argmax(axis=1)
    write_rows(report_dir / SUSPECTS_FILE, [
        {"path": file_paths[index], "given_label": classes[labels[index]],
         "suggested_label": classes[suggested[index]], "score": f"{score:.6f}"}
        for index, score in suspects
    ], fields=["path", "given_label", "suggested_label", "score"])
    # A manifest a user may adopt (data.manifest): every file, flagged ones relabelled. Never applied here.
    flagged = {index for index, _ in suspects}
    write_rows(report_dir / SUGGESTED_FILE, [
        {"path": path, "label": classes[suggested[index] if index in flagged else labels[index]]}
        for index, path in enumerate(file_paths)
    ], fields=["path", "label"])
    from trainwell.reports.labels_page import render_suspects

    write_text_atomically(report_dir / "index.html", render_suspects(
        suspects=[(file_paths[i], classes[labels[i]], classes[suggested[i]], score, images[i]) for i, score in suspects],
        reviewed=len(labels)))
    accuracy = float((suggested == labels).mean()) if len(labels) else math.nan
    write_json(paths.label_metrics, {"files_reviewed": len(labels), "suspects": len(suspects),
                                     "out_of_fold_accuracy": accuracy})
    say(f"label_review: {len(suspects)} likely label errors among {len(labels)} train+val images "
          f"(out-of-fold accuracy {accuracy:.4f}); see {report_dir / SUSPECTS_FILE}")
    return 0
