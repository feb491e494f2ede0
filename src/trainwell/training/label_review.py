"""Label review: k-fold out-of-fold probabilities and embeddings from small models, ranked by cleanlab into likely label errors and outliers."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from trainwell.console import say
from trainwell.data.cache import ShardedSplit, combine_splits, open_split
from trainwell.errors import DataError
from trainwell.params import LabelReviewParams, TrainParams
from trainwell.training.inputs import SplitInput, plan_split
from trainwell.training.network import model_for

# Every split is reviewed, test included: a wrong test label makes the reported accuracy wrong.
REVIEWED_SPLITS = ("train", "val", "test")
TEST = REVIEWED_SPLITS.index("test")
# The embedding outliers are found in: the last convolution block's output (the input of the
# network's "flatten" layer), max-pooled over positions, i.e. how strongly each learned pattern
# appears anywhere in the image. Not the penultimate (dense) layer: a classifier trains that one to
# pull every image into some class's cluster, strays included. On the demo set with 50 planted
# out-of-class images, the dense layer ranked 12% of them in its top 50, the pooled block 84%.
FEATURE_LAYER = "flatten"
PREDICT_BATCH = 256
OUTLIER_NEIGHBOURS = 10  # cleanlab Datalab's outlier issue's k
# Neighbours are looked for among at most this many of a fold's held-out train+val images (a
# seeded sample); the others are scored against that sample as test images are. The search
# compares each scored image with every reference image: with all of them, the stage's cost per
# image grew with the dataset (2 folds of 1 epoch: 0.94 s per 1,000 images at 10k, 3.9 s at 100k,
# 3.7 GiB peak) and a million images would have spent hours there. Below the cap nothing changes.
OUTLIER_REFERENCE_CAP = 10_000
SCORE_CHUNK = 50_000  # images scored against the reference at once (bounded memory)


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


class FoldProgress(keras.callbacks.Callback):
    """One line per fold epoch (fold k/K, epoch e/E, loss, seconds) through the console: hidden by -q."""

    def __init__(self, *, fold: int, folds: int, epochs: int) -> None:
        super().__init__()
        self.fold, self.folds, self.epochs = fold, folds, epochs
        self.started = time.monotonic()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.started = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss", float("nan"))
        say(f"label_review: fold {self.fold + 1}/{self.folds}, epoch {epoch + 1}/{self.epochs}, loss {loss:.4f} "
            f"({time.monotonic() - self.started:.1f} s)")


def _fit_fold_model(*, training: SplitInput, fold: int, image_size: int, review: LabelReviewParams,
                    train: TrainParams) -> keras.Model:
    """A fresh small model fitted on one fold's training view (held in memory or streamed)."""
    num_classes = training.split.num_classes
    model = model_for(train, num_classes=num_classes, image_size=image_size, output_activation="softmax",
                      augment=False)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=review.learning_rate), loss="categorical_crossentropy")
    data = training.train_dataset(seed=review.seed + fold, first_epoch=0, epochs=review.epochs_per_fold,
                                  num_classes=num_classes, batch_size=review.batch_size)
    with _quiet_retracing():
        model.fit(data, epochs=review.epochs_per_fold, shuffle=False,  # the dataset's seeded order is the order
                  steps_per_epoch=training.steps(batch_size=review.batch_size), verbose=0,
                  callbacks=[FoldProgress(fold=fold, folds=review.folds, epochs=review.epochs_per_fold)])
    return model


@contextmanager
def _quiet_retracing() -> Iterator[None]:
    """Every fold is a new model with new train and predict functions, which TensorFlow's retracing
    heuristic reports as "excessive retracing" from the third fold on: expected, not a problem."""
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        yield
    finally:
        logger.setLevel(level)


def _predict(model: keras.Model, held_out: SplitInput) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, embeddings) of every example of a view, in its order, from one pass."""
    pooled = keras.layers.GlobalMaxPooling2D(name="embedding")(model.get_layer(FEATURE_LAYER).input)
    both = keras.Model(model.inputs, [model.outputs[0], pooled])
    data = held_out.eval_dataset(num_classes=held_out.split.num_classes, batch_size=PREDICT_BATCH)
    with _quiet_retracing():
        probabilities, embeddings = both.predict(data.map(lambda images, labels: images), verbose=0)
    return np.asarray(probabilities, np.float32), np.asarray(embeddings, np.float32)


def outlier_scores(*, reference: np.ndarray, queries: np.ndarray, fence: float, seed: int = 0,
                   reference_cap: int = OUTLIER_REFERENCE_CAP) -> tuple[np.ndarray, np.ndarray, float]:
    """cleanlab outlier scores in [0, 1] (lower: less like the rest) of `reference` embeddings
    among themselves (each without itself) and of `queries` against the reference, plus the
    score below which an example is an outlier.

    Scored as cleanlab Datalab's outlier issue scores (mean cosine distance to the k = 10 nearest
    neighbours, through OutOfDistribution); an outlier is a mean distance above Q3 + fence x IQR
    of the reference's (Datalab's fence is 1.7 IQR; see label_review.outlier_fence). Past
    `reference_cap` reference images, neighbours come from a seeded sample of that many.
    """
    from cleanlab.outlier import OutOfDistribution

    neighbours = min(OUTLIER_NEIGHBOURS, len(reference) - 1)
    if neighbours < 1:  # nothing to compare with: nobody is an outlier
        return np.ones(len(reference)), np.ones(len(queries)), 0.0
    sampled = np.ones(len(reference), dtype=bool)
    if len(reference) > reference_cap:
        sampled[:] = False
        sampled[np.random.default_rng(seed).choice(len(reference), reference_cap, replace=False)] = True
    estimator = OutOfDistribution(params={"k": neighbours})
    # float64: a stray far from everything has exp(-distance / scale) below float32's range.
    reference_scores = np.ones(len(reference), dtype=np.float64)
    reference_scores[sampled] = estimator.fit_score(features=reference[sampled].astype(np.float64), verbose=False)
    reference_scores[~sampled] = _scored(estimator, reference[~sampled])
    query_scores = _scored(estimator, queries)
    # cleanlab's score is exp(-distance / scale), scale the median mean distance: back to distances
    # for the fence, then the fence back to a score.
    scale = float(estimator.params["scaling_factor"])
    distances = -scale * np.log(np.maximum(reference_scores, np.finfo(np.float64).tiny))
    q1, q3 = np.percentile(distances, [25, 75])
    return reference_scores, query_scores, float(np.exp(-(q3 + fence * (q3 - q1)) / scale))


def _scored(estimator: Any, features: np.ndarray) -> np.ndarray:
    """A fitted OutOfDistribution's scores of `features`, SCORE_CHUNK rows at a time."""
    if not len(features):
        return np.ones(0)
    return np.concatenate([estimator.score(features=features[start:start + SCORE_CHUNK].astype(np.float64))
                           for start in range(0, len(features), SCORE_CHUNK)])


@dataclass
class LabelReview:
    """The review of every split: one row per cached image, train then val then test, in cache order."""

    split: ShardedSplit  # the splits end to end (images are read from it on demand)
    split_of: np.ndarray  # index into REVIEWED_SPLITS, per row
    probabilities: np.ndarray  # (N, classes), each row from the one model that never saw it
    outlier_scores: np.ndarray  # (N,), cleanlab's, in [0, 1]: lower is less like the rest
    outliers: list[int]  # rows flagged as outliers, least like the rest first
    suspects: list[tuple[int, float]]  # (row, p(given label)) of likely label errors, most suspicious first


def rank_label_issues(
    *, labels: np.ndarray, probabilities: np.ndarray, filter_by: str = "low_self_confidence"
) -> list[tuple[int, float]]:
    """(index, self-confidence) of likely label errors, most suspicious first, by confident learning."""
    from cleanlab.filter import find_label_issues

    if len(labels) == 0:
        return []
    ranked = find_label_issues(labels=labels, pred_probs=probabilities, filter_by=filter_by,
                               return_indices_ranked_by="self_confidence")
    return [(int(index), float(probabilities[index, labels[index]])) for index in ranked]


def review_labels(*, cache_dir: str | Path, review: LabelReviewParams, train: TrainParams,
                  memory_budget_bytes: int) -> LabelReview:
    """k fold models over every split, read shard by shard past the memory budget; label issues and outliers."""
    parts = [open_split(cache_dir=cache_dir, split=name) for name in REVIEWED_SPLITS]
    split = combine_splits(parts, folder=str(cache_dir))
    split_of = np.repeat(np.arange(len(parts)), [len(part.labels) for part in parts])
    is_test = split_of == TEST
    labels = split.labels.astype(np.int64)
    if int((~is_test).sum()) < review.folds:
        raise DataError(f"label_review.folds is {review.folds} but train+val hold {int((~is_test).sum())} images; "
                        "lower label_review.folds or add data")
    folds = assign_folds(labels, is_test=is_test, folds=review.folds, seed=review.seed)
    probabilities = np.zeros((len(labels), split.num_classes), dtype=np.float32)
    scores = np.ones(len(labels), dtype=np.float64)
    flagged = np.zeros(len(labels), dtype=bool)
    announced = False
    for fold in range(review.folds):
        rows = np.flatnonzero(folds == fold)
        if not len(rows):  # every class smaller than the fold number: nothing to hold out
            continue
        keras.utils.set_random_seed(review.seed + fold)
        # A view of this fold's training images: held in memory within the budget, else streamed.
        training = plan_split(split.select(np.flatnonzero(~is_test & (folds != fold))),
                              memory_budget_bytes=memory_budget_bytes)
        if training.streaming and not announced:
            announced = True
            say(f"label_review: streaming each fold's training images from {len(training.split.counts)} shards "
                f"({training.split.image_bytes / 2**20:.0f} MiB > train.memory_budget_mb)")
        model = _fit_fold_model(training=training, fold=fold, image_size=split.image_shape[0], review=review,
                                train=train)
        del training
        gc.collect()  # the fold's training images go before its held-out ones are read
        held_out = plan_split(split.select(rows), memory_budget_bytes=memory_budget_bytes)
        probabilities[rows], embeddings = _predict(model, held_out)
        del held_out
        # Outliers by embedding, among this fold's held-out train+val images (one model's space,
        # none of them seen by it); test images are scored against those, never the other way,
        # so test images never decide which training images are outliers.
        reference, queries = rows[~is_test[rows]], rows[is_test[rows]]
        scores[reference], scores[queries], limit = outlier_scores(
            reference=embeddings[~is_test[rows]], queries=embeddings[is_test[rows]], fence=review.outlier_fence,
            seed=review.seed + fold)
        flagged[rows] = scores[rows] < limit
        keras.backend.clear_session()
    # Ranked within train+val and within test, each from its own labels only: test labels never
    # change which training images are flagged (cleanlab's thresholds are per-class averages).
    suspects = []
    for members in (np.flatnonzero(~is_test), np.flatnonzero(is_test)):
        suspects += [(int(members[index]), score) for index, score in rank_label_issues(
            labels=labels[members], probabilities=probabilities[members], filter_by=review.filter_by)]
    suspects.sort(key=lambda item: item[1])  # stable: cleanlab's order within equal scores
    outliers = sorted(np.flatnonzero(flagged).tolist(), key=lambda row: scores[row])
    return LabelReview(split=split, split_of=split_of, probabilities=probabilities, outlier_scores=scores,
                       outliers=outliers, suspects=suspects)
