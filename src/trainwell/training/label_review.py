"""Label review: k-fold out-of-fold probabilities and embeddings from small models, ranked by cleanlab into likely label errors and outliers."""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainwell.console import say
from trainwell.data.cache import ShardedSplit, combine_splits, open_split, read_cache_manifest, source_side
from trainwell.errors import DataError
from trainwell.params import LabelReviewParams, TrainParams
from trainwell.training.distribute import configure_cpu_devices, make_strategy, seed_everything
from trainwell.training.fold_models import (
    FoldModels,
    epoch_steps,
    fold_steps_per_execution,
    gather_images,
    review_side,
)
from trainwell.training.inputs import InMemoryInput, SplitInput, choose_split_input
from trainwell.training.outliers import outlier_scores

# Every split is reviewed, test included: a wrong test label makes the reported accuracy wrong.
REVIEWED_SPLITS = ("train", "val", "test")
TEST = REVIEWED_SPLITS.index("test")


def stratified_folds(labels: np.ndarray, *, folds: int, seed: int) -> np.ndarray:
    """A fold number per example: each class dealt round-robin over the folds after a seeded shuffle."""
    assignment = np.empty(len(labels), dtype=np.int64)
    rng = np.random.default_rng(seed)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        assignment[members] = np.arange(len(members)) % folds
    return assignment


def assign_folds(labels: np.ndarray, *, is_test: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold numbers for train+val and, dealt separately, for test.

    How test gets out-of-sample probabilities, and why this way: fold k's model trains on the
    train+val images outside fold k only, and predicts its held-out train+val images plus the
    test images dealt to fold k. So every image, test or not, is scored by exactly one model
    that never saw it, trained on the same amount of data (the scores are comparable), and no
    model ever trains on a test image, so no test label can shape the suggestions for the
    training data (putting test into the training folds would let it). Averaging all k models
    over test would give test sharper, ensemble scores unlike the others'. Dealing test on its
    own also leaves train+val's folds exactly as before test was reviewed.
    """
    assignment = np.empty(len(labels), dtype=np.int64)
    assignment[~is_test] = stratified_folds(labels[~is_test], folds=folds, seed=seed)
    assignment[is_test] = stratified_folds(labels[is_test], folds=folds, seed=seed)
    return assignment


@dataclass
class LabelReview:
    """The review of every split: one row per cached image, train then val then test, in cache order."""

    split: ShardedSplit  # the splits end to end (images are read from it on demand)
    split_of: np.ndarray  # index into REVIEWED_SPLITS, per row
    probabilities: np.ndarray  # (N, classes), each row from the one model that never saw it
    outlier_scores: np.ndarray  # (N,), cleanlab's, in [0, 1]: lower is less like the rest
    # (N,), log distance past the Q3 of its class's, in that class's IQRs (flagged: > outlier_fence)
    outlier_excess: np.ndarray
    outliers: list[int]  # rows flagged as outliers, farthest past their class's fence first
    suspects: list[tuple[int, float]]  # (row, p(given label)) of likely label errors, most suspicious first


def rank_label_issues(
    *, labels: np.ndarray, probabilities: np.ndarray, filter_by: str = "low_self_confidence",
    estimation_method: str = "off_diagonal_calibrated", issue_share: float = 1.0,
) -> list[tuple[int, float]]:
    """(index, self-confidence) of likely label errors, most suspicious first, by confident learning.

    For low_self_confidence and low_normalized_margin, cleanlab flags as many images as it
    estimates are mislabelled, those its score ranks lowest; `estimation_method` is how it counts
    (cleanlab.count.num_label_issues). find_label_issues counts the confident joint's off-diagonal
    as it is ("off_diagonal"); calibrated first, so that its rows sum to the given labels' counts
    ("off_diagonal_calibrated"), the count is closer to the truth for a model as sure of itself as
    these fold models get: with 257 of 5,131 real digits flipped, 212 were flagged one way
    (precision 0.995, recall 0.821) and 250 the other (0.968 / 0.942), from the same probabilities.

    `issue_share` of them are kept, most suspicious first. Cheap fold models (a few epochs) rank
    the flips as well as long-trained ones but doubt a few more right labels, and the calibrated
    count takes those in: on real digits it overshot the 257 flips by 3-15 in every run measured
    (3 draws, docs/label-review.md); the least suspicious 5% of what it counts is where they sit.
    """
    from cleanlab.count import num_label_issues
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores, order_label_issues

    if len(labels) == 0:
        return []
    if filter_by in ("low_self_confidence", "low_normalized_margin"):
        count = round(issue_share * num_label_issues(labels=labels, pred_probs=probabilities,
                                                     estimation_method=estimation_method))
        scores = get_label_quality_scores(labels, probabilities, method=filter_by.removeprefix("low_"))
        flagged = np.zeros(len(labels), dtype=bool)
        flagged[np.argsort(scores, kind="stable")[:count]] = True
        ranked = order_label_issues(label_issues_mask=flagged, labels=labels, pred_probs=probabilities,
                                    rank_by="self_confidence")
    else:
        ranked = find_label_issues(labels=labels, pred_probs=probabilities, filter_by=filter_by,
                                   return_indices_ranked_by="self_confidence")
        ranked = ranked[:round(issue_share * len(ranked))]
    return [(int(index), float(probabilities[index, labels[index]])) for index in ranked]


def review_labels(*, cache_dir: str | Path, review: LabelReviewParams, train: TrainParams,
                  memory_budget_bytes: int) -> LabelReview:
    """k fold models over every split, under train.strategy, at the data's native side; label issues and outliers.

    The images are resized once for every fold and held while IN_MEMORY_COST x their size fits the
    budget; past it each fold streams its selection from the cache shards, resized on the way.
    """
    # Devices and the strategy before any other TensorFlow op, as `train` sets them up.
    configure_cpu_devices(train.cpu_devices, strategy=train.strategy)
    strategy = make_strategy(train.strategy)
    seed_everything(review.seed)
    parts = [open_split(cache_dir=cache_dir, split=name) for name in REVIEWED_SPLITS]
    split = combine_splits(parts, folder=str(cache_dir))
    split_of = np.repeat(np.arange(len(parts)), [len(part.labels) for part in parts])
    is_test = split_of == TEST
    labels = split.labels.astype(np.int64)
    if int((~is_test).sum()) < review.folds:
        raise DataError(f"label_review.folds is {review.folds} but train+val hold {int((~is_test).sum())} images; "
                        "lower label_review.folds or add data")
    folds = assign_folds(labels, is_test=is_test, folds=review.folds, seed=review.seed)
    side = review_side(review=review, train=train, cached_side=split.image_shape[0],
                       source_side=source_side(read_cache_manifest(cache_dir)))
    pool = gather_images(split, side=side, memory_budget_bytes=memory_budget_bytes)
    say(f"label_review: {review.folds} fold models of {review.epochs_per_fold} epochs at {side}x{side}"
        + (f", the last {min(review.average_epochs, review.epochs_per_fold)} averaged"
           if min(review.average_epochs, review.epochs_per_fold) > 1 else "")
        + (f" (the sources' own size; cached at {split.image_shape[0]}x{split.image_shape[0]})"
           if side < split.image_shape[0] else "")
        + ("" if pool is not None else "; each fold streams its images from the cache shards (held, they would "
           "take more than train.memory_budget_mb)"))
    training_rows = [np.flatnonzero(~is_test & (folds != fold)) for fold in range(review.folds)]
    reference_rows = [np.flatnonzero(~is_test & (folds == fold)) for fold in range(review.folds)]
    steps_per_execution = fold_steps_per_execution([
        count for fold in range(review.folds) if (folds == fold).any()
        for count in epoch_steps(review=review, strategy=strategy, training=_counted(split, training_rows[fold], pool),
                                 held_out=_counted(split, reference_rows[fold], pool))], strategy=train.strategy)
    models = FoldModels(train=train, review=review, num_classes=split.num_classes, side=side, strategy=strategy,
                        steps_per_execution=steps_per_execution)
    probabilities = np.zeros((len(labels), split.num_classes), dtype=np.float32)
    scores = np.ones(len(labels), dtype=np.float64)
    excess = np.full(len(labels), -np.inf)
    fences = np.zeros(len(labels), dtype=bool)
    for fold in range(review.folds):
        rows = np.flatnonzero(folds == fold)
        if not len(rows):  # every class smaller than the fold number: nothing to hold out
            continue
        started = time.monotonic()
        # Outliers by embedding, among this fold's held-out train+val images (one model's space,
        # none of them seen by it); test images are scored against those, never the other way,
        # so test images never decide which training images are outliers (nor when a fold stops).
        reference, queries = reference_rows[fold], rows[is_test[rows]]
        models.restart(review.seed + fold)
        scored = _view(split, rows, pool)
        epochs, snapshots = models.fit(training=_view(split, training_rows[fold], pool),
                                       held_out=_view(split, reference, pool), scored=scored, fold=fold)
        gc.collect()  # a streamed fold's training images go before its held-out ones are read
        probabilities[rows], embeddings = models.predict(scored, snapshots=snapshots)
        found = outlier_scores(reference=embeddings[~is_test[rows]], queries=embeddings[is_test[rows]],
                               reference_labels=labels[reference], query_labels=labels[queries],
                               fence=review.outlier_fence, seed=review.seed + fold)
        scores[reference], scores[queries] = found.reference_scores, found.query_scores
        excess[reference], excess[queries] = found.reference_excess, found.query_excess
        fences[reference], fences[queries] = found.reference_flagged, found.query_flagged
        say(f"label_review: fold {fold + 1}/{review.folds}: {epochs} epoch(s), {len(rows)} held-out images scored, "
            f"{time.monotonic() - started:.1f} s")
    # Ranked within train+val and within test, each from its own labels only: test labels never
    # change which training images are flagged (cleanlab's thresholds are per-class averages).
    suspects = []
    for members in (np.flatnonzero(~is_test), np.flatnonzero(is_test)):
        suspects += [(int(members[index]), score) for index, score in rank_label_issues(
            labels=labels[members], probabilities=probabilities[members], filter_by=review.filter_by,
            estimation_method=review.estimation_method, issue_share=review.issue_share)]
    suspects.sort(key=lambda item: item[1])  # stable: cleanlab's order within equal scores
    # Strangest first: farthest past its own class's fence, in that class's spreads.
    outliers = sorted(np.flatnonzero(fences).tolist(), key=lambda row: -excess[row])
    return LabelReview(split=split, split_of=split_of, probabilities=probabilities, outlier_scores=scores,
                       outlier_excess=excess, outliers=outliers, suspects=suspects)


def _counted(split: ShardedSplit, rows: np.ndarray, pool: np.ndarray | None) -> SplitInput:
    """The view _view gives, for its step counts only: a held pool's rows are not copied (an
    in-memory view's steps count its labels, never its images)."""
    if pool is None:
        return _view(split, rows, pool)
    return InMemoryInput(split=split.select(rows), images=pool)


def _view(split: ShardedSplit, rows: np.ndarray, pool: np.ndarray | None) -> SplitInput:
    """Some rows of the reviewed splits: their images from the pool, or streamed (memory budget 0:
    the pool did not fit, so neither does any fold's share of it)."""
    view = split.select(rows)
    if pool is None:
        return choose_split_input(view, memory_budget_bytes=0)
    return InMemoryInput(split=view, images=pool[rows])
