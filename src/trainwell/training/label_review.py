"""Label review: k-fold out-of-fold probabilities from small models, ranked by cleanlab into likely label errors."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from trainwell.console import warn
from trainwell.params import LabelReviewParams, TrainParams
from trainwell.training.inputs import make_eval_dataset, make_train_dataset, steps_per_epoch
from trainwell.training.network import model_for


def stratified_folds(labels: np.ndarray, *, folds: int, seed: int) -> np.ndarray:
    """A fold number per example: each class dealt round-robin over the folds after a seeded shuffle."""
    assignment = np.empty(len(labels), dtype=np.int64)
    rng = np.random.default_rng(seed)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        assignment[members] = np.arange(len(members)) % folds
    return assignment


def out_of_fold_probabilities(
    *, images: np.ndarray, labels: np.ndarray, num_classes: int, review: LabelReviewParams, train: TrainParams
) -> np.ndarray:
    """(N, num_classes) probabilities, each row from a model that never saw that example.

    Columns follow the label indices (class order of the cache manifest), as cleanlab requires.
    """
    folds = stratified_folds(labels, folds=review.folds, seed=review.seed)
    probabilities = np.zeros((len(labels), num_classes), dtype=np.float32)
    for fold in range(review.folds):
        keras.utils.set_random_seed(review.seed + fold)
        held_out, kept = folds == fold, folds != fold
        model = model_for(train, num_classes=num_classes, image_size=images.shape[1], output_activation="softmax",
                          augment=False)
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=review.learning_rate),
                      loss="categorical_crossentropy")
        count = int(kept.sum())
        data = make_train_dataset(images=images[kept], labels=labels[kept], num_classes=num_classes,
                                  batch_size=review.batch_size, seed=review.seed + fold, first_epoch=0,
                                  epochs=review.epochs_per_fold)
        model.fit(data, epochs=review.epochs_per_fold, shuffle=False,  # the dataset's seeded order is the order
                  steps_per_epoch=steps_per_epoch(count=count, batch_size=review.batch_size), verbose=0)
        evaluation = make_eval_dataset(images=images[held_out], labels=labels[held_out], num_classes=num_classes,
                                       batch_size=256)
        # Every fold is a new model with a new predict function, which TensorFlow's retracing
        # heuristic reports as "excessive retracing" from the third fold on: expected, not a problem.
        logger = tf.get_logger()
        level = logger.level
        logger.setLevel("ERROR")
        try:
            probabilities[held_out] = model.predict(evaluation.map(lambda x, y: x), verbose=0)
        finally:
            logger.setLevel(level)
        warn(f"label_review: fold {fold + 1}/{review.folds} done ({int(held_out.sum())} held-out images)")
    return probabilities


def rank_label_issues(
    *, labels: np.ndarray, probabilities: np.ndarray, filter_by: str = "low_self_confidence"
) -> list[tuple[int, float]]:
    """(index, self-confidence) of likely label errors, most suspicious first, by confident learning."""
    from cleanlab.filter import find_label_issues

    ranked = find_label_issues(labels=labels, pred_probs=probabilities, filter_by=filter_by,
                               return_indices_ranked_by="self_confidence")
    return [(int(index), float(probabilities[index, labels[index]])) for index in ranked]
