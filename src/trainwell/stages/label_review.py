"""Stage `label_review`: out-of-fold predictions on every split, ranked by cleanlab into likely label errors and outliers."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from trainwell.console import say
from trainwell.data.cache import read_cache_manifest
from trainwell.outputs import (
    guard_stage,
    guarded,
    write_bytes_atomically,
    write_json,
    write_rows,
    write_text_atomically,
)
from trainwell.params import load_params
from trainwell.reports.labels_page import MAX_CARDS, render_review
from trainwell.reports.site import site_locations

SUSPECTS_FILE = "suspects.csv"
OUTLIERS_FILE = "outliers.csv"
SUGGESTED_FILE = "suggested_labels.csv"
# Rows of the .npy file: train, val, then test, each in cache order (data/cache/<split>/paths.json; a
# seeded shuffle of the split list, see data.cache.shuffle_rows). The outlier scores of every file
# are not written: they are nearest-neighbour distances whose last bits come from the machine's BLAS,
# and a file DVC hashes must be the same bytes on any machine (the fold models' probabilities are).
PROBABILITIES_FILE = "out_of_fold_probabilities.npy"
# Significant digits of a flagged outlier's score (its distance past the fence keeps 3 decimals): a
# few rows, far from the kernels' ~1e-7 noise.
SCORE_DIGITS = ".4g"


def _save_npy(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array)
    write_bytes_atomically(path, buffer.getvalue())


@guarded
def main(*, params_file: str = "params.yaml") -> int:
    params = load_params(params_file)
    guard_stage("label_review", params=params, params_file=params_file)
    paths = params.paths
    read_cache_manifest(paths.cache_dir)  # a missing cache is said before TensorFlow's seconds of start-up
    from trainwell.training.label_review import REVIEWED_SPLITS, review_labels

    review = review_labels(cache_dir=paths.cache_dir, review=params.label_review, train=params.train,
                           memory_budget_bytes=params.train.memory_budget_mb << 20)
    split, labels = review.split, review.split.labels
    classes, file_paths = split.classes, split.paths
    split_names = [REVIEWED_SPLITS[index] for index in review.split_of]
    suggested = review.probabilities.argmax(axis=1)
    report_dir = Path(paths.label_report_dir)
    # Kept for anyone who wants to re-rank with other cleanlab settings without retraining.
    _save_npy(report_dir / PROBABILITIES_FILE, review.probabilities)
    suspects = [
        {"index": index, "path": file_paths[index], "split": split_names[index], "given_label": classes[labels[index]],
         "suggested_label": classes[suggested[index]], "score": score}
        for index, score in review.suspects
    ]
    outliers = [
        {"index": index, "path": file_paths[index], "split": split_names[index], "label": classes[labels[index]],
         "score": float(review.outlier_scores[index]), "past_fence": f"{review.outlier_excess[index]:.3f}"}
        for index in review.outliers
    ]
    # A wrong label or a stray image in the test split changes the accuracy evaluate reports.
    for row in suspects + outliers:
        row["affects_reported_accuracy"] = "true" if row["split"] == "test" else "false"
    # Outlier scores of strays far from everything are tiny (exp(-distance / scale)): significant digits.
    for file_name, rows, fields, number_format in (
        (SUSPECTS_FILE, suspects, ["path", "split", "given_label", "suggested_label", "score",
                                   "affects_reported_accuracy"], ".6f"),
        (OUTLIERS_FILE, outliers, ["path", "split", "label", "score", "past_fence", "affects_reported_accuracy"],
         SCORE_DIGITS),
    ):
        write_rows(report_dir / file_name, [{**{field: row[field] for field in fields},
                                             "score": format(row["score"], number_format)} for row in rows],
                   fields=fields)
    # A manifest a user may adopt (data.manifest): every file, flagged ones relabelled. Never applied here.
    # Train, val, then test, each by path as the split lists are, not in the cache's shuffled order:
    # the file then reads, and diffs, row for row against the data's own listing.
    flagged = {index for index, _ in review.suspects}
    listing_order = sorted(range(len(file_paths)), key=lambda index: (int(review.split_of[index]), file_paths[index]))
    write_rows(report_dir / SUGGESTED_FILE, [
        {"path": file_paths[index], "label": classes[suggested[index] if index in flagged else labels[index]]}
        for index in listing_order
    ], fields=["path", "label"])
    # The pages' thumbnails, read in row order so each shard is read once.
    wanted = sorted({row["index"] for row in suspects[:MAX_CARDS] + outliers[:MAX_CARDS]})
    thumbnails = {index: split.image(index) for index in wanted}
    counts = {name: int((review.split_of == number).sum()) for number, name in enumerate(REVIEWED_SPLITS)}
    write_text_atomically(report_dir / "index.html", render_review(
        suspects=suspects, outliers=outliers, image=thumbnails.__getitem__, reviewed=len(labels), counts=counts,
        locations=site_locations(paths)))
    test_suspects = sum(row["split"] == "test" for row in suspects)
    accuracy = float((suggested == labels).mean()) if len(labels) else math.nan
    # Headline numbers only: each key is a column of `dvc exp show`.
    write_json(paths.label_metrics, {"files_reviewed": len(labels), "suspects": len(suspects),
                                     "test_suspects": test_suspects, "outliers": len(outliers),
                                     "out_of_fold_accuracy": accuracy})
    say(f"label_review: {len(suspects)} likely label errors among {len(labels)} images, {test_suspects} of them in "
        f"the test split (they skew its reported accuracy); {len(outliers)} outliers; out-of-fold accuracy "
        f"{accuracy:.4f}; see {report_dir / SUSPECTS_FILE} and {report_dir / OUTLIERS_FILE}")
    return 0
