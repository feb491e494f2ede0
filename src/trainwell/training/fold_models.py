"""Label review's fold models: one network traced once and re-initialised per fold, at the data's native size, under train.strategy."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace

import keras
import numpy as np
import tensorflow as tf

from trainwell import storage
from trainwell.console import say
from trainwell.data.cache import ShardedSplit
from trainwell.params import SEED_CNN, LabelReviewParams, TrainParams
from trainwell.training.batch_plan import fitting_steps_per_execution
from trainwell.training.distribute import build_from_local_batch, distribute_dataset, input_pipelines
from trainwell.training.inputs import IN_MEMORY_COST, BatchSpec, SplitInput
from trainwell.training.network import model_for

# The embedding outliers are found in: the last convolution block's output (the input of the
# network's "flatten" layer), max-pooled over positions, i.e. how strongly each learned pattern
# appears anywhere in the image. Not the penultimate (dense) layer: a classifier trains that one to
# pull every image into some class's cluster, strays included. On the demo set with 50 planted
# out-of-class images, the dense layer ranked 12% of them in its top 50, the pooled block 84%.
FEATURE_LAYER = "flatten"
PREDICT_BATCH = 256
RESIZE_CHUNK = 4096  # images resized at once when the review's images are gathered
# The smallest side the fold models are given when the sources are smaller (see review_side).
SMALLEST_REVIEW_SIDE = 32
# Batches per compiled call, at most (FoldModels.steps_per_execution): the fold models have no
# per-batch callback, and each call costs ~4 ms of dispatch on CPU whatever its batch holds (the
# default network at 32x32: 13.8 ms per step of 32 images one by one, 9.8 ms in calls of 16).
FOLD_STEPS_PER_EXECUTION = 16


def smallest_side(train: TrainParams) -> int:
    """The smallest input side the network accepts: each cnn block's convolution (kernel_size) and
    2x2 pooling must leave at least one pixel; a backbone's own minimum (docs/training.md)."""
    if train.model != SEED_CNN:
        from trainwell.params import BACKBONE_MIN_IMAGE_SIZE

        return BACKBONE_MIN_IMAGE_SIZE[train.model]
    side = 1
    for _ in train.conv_filters:  # undo each block, last first: pool (x2, +1 for odd), then the convolution
        side = side * 2 + train.kernel_size - 1
    return side


def review_side(*, review: LabelReviewParams, train: TrainParams, cached_side: int, source_side: int | None) -> int:
    """The fold models' input side: label_review.image_size when set; else the sources' own side
    (90th percentile, as build recorded it), but at least SMALLEST_REVIEW_SIDE; never above the
    cache's side nor below what the network accepts.

    Images upscaled to data.image_size hold no detail a smaller input lacks, and a fold model's
    cost grows with its pixels (the default network's convolutions: about 2.5x fewer operations at
    32x32 than at 48x48). But not down to any size: at 28x28 (its last block's map 2x2, against
    3x3 at 32) the fold models doubt more. On 5,131 real 28x28 digits (cached at 48x48) with 5% of
    labels flipped, three flip draws, 5 folds at 1e-3 (the defaults): precision / recall 0.961 / 0.953,
    0.964 / 0.946 and 0.965 / 0.953 at 32; at 2e-3 for at most 8 epochs, 0.943 at 28 on the second
    draw (CHANGELOG.md, 0.2.0, Changed).
    """
    wanted = review.image_size if review.image_size is not None else max(source_side or cached_side,
                                                                         SMALLEST_REVIEW_SIDE)
    return max(min(wanted, cached_side), min(smallest_side(train), cached_side))


def resized(images: tf.Tensor, side: int) -> tf.Tensor:
    """uint8 images resized to side x side by area averaging (the right filter for shrinking), uint8 again."""
    if images.shape[1] == side and images.shape[2] == side:
        return images
    shrunk = tf.image.resize(images, (side, side), method="area")
    return tf.cast(tf.clip_by_value(tf.round(shrunk), 0, 255), tf.uint8)


def gather_images(split: ShardedSplit, *, side: int, memory_budget_bytes: int) -> np.ndarray | None:
    """Every image of `split` at side x side, read shard by shard, when IN_MEMORY_COST x that fits
    the budget (None otherwise: each fold then streams its images from the shards).

    Decoded and resized once for all folds: every fold trains on 4/5 of the same images."""
    count = len(split.labels)
    if IN_MEMORY_COST * count * side * side * 3 > memory_budget_bytes:
        return None
    pool = np.empty((count, side, side, 3), dtype=np.uint8)
    start = 0
    for shard, path in enumerate(split.image_files):
        rows = storage.load_npy(path)[split.shard_rows(shard)]
        for offset in range(0, len(rows), RESIZE_CHUNK):
            chunk = rows[offset:offset + RESIZE_CHUNK]
            pool[start:start + len(chunk)] = resized(tf.convert_to_tensor(chunk), side).numpy()
            start += len(chunk)
    return pool


def stops_early(review: LabelReviewParams, held_out: SplitInput) -> bool:
    """Whether a fold stops on its held-out loss: early stopping on, and held-out images to watch."""
    return bool(review.early_stopping_patience and len(held_out.split.labels))


def epoch_steps(*, review: LabelReviewParams, strategy: tf.distribute.Strategy, training: SplitInput,
                held_out: SplitInput) -> list[int]:
    """Steps of one fold epoch over `training`, and of its validation pass when it stops early."""
    replicas, workers = strategy.num_replicas_in_sync, input_pipelines(strategy)
    steps = [training.steps(batch_size=review.batch_size, replicas=replicas, workers=workers)]
    if stops_early(review, held_out):
        steps.append(held_out.steps(batch_size=review.batch_size, replicas=min(replicas, len(held_out.split.labels))))
    return steps


def fold_steps_per_execution(step_counts: list[int], *, strategy: str) -> int:
    """Batches per compiled call for folds whose epochs (and validation passes) take these many
    steps: the most, up to FOLD_STEPS_PER_EXECUTION, that divides every one, so that no call pulls
    batches of the next epoch (batch_plan.fitting_steps_per_execution). Folds of equal size share their
    step count; 1 when the counts share no divisor.

    Several batches a call on one device only (`strategy`: train.strategy): under a distribution
    strategy Keras' multi-step call over a distributed dataset failed here (TensorFlow 2.16, Keras 3;
    "You must feed a value for placeholder tensor ... while/cond"), and a device per replica has its
    own dispatch to hide."""
    if strategy != "default":
        return 1
    return fitting_steps_per_execution(FOLD_STEPS_PER_EXECUTION, *step_counts)


class FoldProgress(keras.callbacks.Callback):
    """One line per fold epoch (fold k/K, epoch e/E, loss, seconds) through the console: hidden by -q."""

    def __init__(self, *, fold: int, folds: int, epochs: int) -> None:
        super().__init__()
        self.fold, self.folds, self.epochs = fold, folds, epochs
        self.started = time.monotonic()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.started = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        held_out = f", held-out loss {logs['val_loss']:.4f}" if "val_loss" in logs else ""
        say(f"label_review: fold {self.fold + 1}/{self.folds}, epoch {epoch + 1}/{self.epochs}, "
            f"loss {logs.get('loss', float('nan')):.4f}{held_out} ({time.monotonic() - self.started:.1f} s)")


class Snapshots(keras.callbacks.Callback):
    """The scored images' probabilities after each of `epochs` (0-based), the last `keep` kept.

    A snapshot ensemble of one model's last epochs: its epoch-to-epoch swings (a few right labels
    doubted one epoch, others the next) average out. On real digits with 5% of labels flipped, 3
    folds of 6 epochs at 3e-3: precision 0.937-0.961 from the last epoch alone over three flip
    draws, 0.947-0.961 from the mean of the last 3 (docs/label-review.md, "Cost and defaults").
    """

    def __init__(self, *, score: Callable[[], np.ndarray], epochs: range, keep: int) -> None:
        super().__init__()
        self.score, self.epochs, self.keep = score, epochs, keep
        self.by_epoch: dict[int, np.ndarray] = {}

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if epoch not in self.epochs:
            return
        self.by_epoch[epoch] = self.score()
        for old in [kept for kept in self.by_epoch if kept <= epoch - self.keep]:
            del self.by_epoch[old]


@contextmanager
def quiet_retracing() -> Iterator[None]:
    """TensorFlow reports new datasets through an already traced function as "excessive
    retracing" from the third fold on: expected, not a problem."""
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        yield
    finally:
        logger.setLevel(level)


class FoldModels:
    """The fold model, compiled once under the strategy; each fold restarts it from fresh seeded
    weights and a fresh optimizer state, so no fold pays for building and tracing a new model
    (that was most of the seconds between folds), and no fold inherits another's training.

    Held-out images are scored by a twin outside the strategy that takes each fold's weights:
    every worker of a multi-worker run then scores every held-out image, not only its share.
    """

    def __init__(self, *, train: TrainParams, review: LabelReviewParams, num_classes: int, side: int,
                 strategy: tf.distribute.Strategy, steps_per_execution: int = 1) -> None:
        self.train, self.review, self.num_classes, self.side = train, review, num_classes, side
        self.strategy = strategy
        with strategy.scope():
            self.model = self._network()
            self.model.compile(optimizer=keras.optimizers.Adam(learning_rate=review.learning_rate),
                               loss="categorical_crossentropy", steps_per_execution=steps_per_execution)
            self.model.optimizer.build(self.model.trainable_variables)
        self._optimizer_start = [np.asarray(variable) for variable in self.model.optimizer.variables]
        build_from_local_batch(self.model, strategy)
        twin = self._network()
        pooled = keras.layers.GlobalMaxPooling2D(name="embedding")(twin.get_layer(FEATURE_LAYER).input)
        self.twin, self.scorer = twin, keras.Model(twin.inputs, [twin.outputs[0], pooled])

    def _network(self) -> keras.Model:
        return model_for(self.train, num_classes=self.num_classes, image_size=self.side, output_activation="softmax",
                         augment=False)

    def restart(self, seed: int) -> None:
        """Fresh weights as a new model seeded with `seed` would have them, and Adam's state at zero."""
        keras.utils.set_random_seed(seed)
        self.model.set_weights(self._network().get_weights())
        for variable, value in zip(self.model.optimizer.variables, self._optimizer_start):
            variable.assign(value)

    def _images(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
        """A streamed view's batches arrive at the cache's side: resized on the way."""
        return dataset.map(lambda images, *rest: (resized(images, self.side), *rest))

    def fit(self, *, training: SplitInput, held_out: SplitInput, scored: SplitInput,
            fold: int) -> tuple[int, list[np.ndarray]]:
        """The fold's epochs over `training` (held at the review's side, or streamed and resized),
        stopped early when the loss on `held_out` stops falling (when early stopping is on).
        Returns the epochs run and `scored`'s probabilities after each epoch before the kept one
        that predict averages in (label_review.average_epochs).

        Early stopping keeps the weights of the epoch with the lowest held-out loss (the fold's own
        held-out train+val images, never test ones), so each fold gets as many epochs as its model
        needs: a model trained past that point grows sure of itself on images it never saw, and
        cleanlab's count of label issues grows with it.
        """
        review = self.review
        spec = BatchSpec(num_classes=self.num_classes, batch_size=review.batch_size, seed=review.seed + fold,
                         epochs=review.epochs_per_fold)
        data = distribute_dataset(self.strategy, lambda **shard: self._images(training.train_dataset(
            replace(spec, **shard))))
        progress = FoldProgress(fold=fold, folds=review.folds, epochs=review.epochs_per_fold)
        callbacks: list[keras.callbacks.Callback] = [progress]
        validation, validation_steps = None, None
        stopping: keras.callbacks.EarlyStopping | None = None
        steps = epoch_steps(review=review, strategy=self.strategy, training=training, held_out=held_out)
        if stops_early(review, held_out):
            # Repeated, as train's validation data: one full pass of validation_steps batches each epoch.
            validation = distribute_dataset(self.strategy, lambda **shard: self._images(held_out.eval_dataset(
                replace(spec, **shard)).repeat()))
            validation_steps = steps[1]
            stopping = keras.callbacks.EarlyStopping(monitor="val_loss", patience=review.early_stopping_patience,
                                                     restore_best_weights=True)
            callbacks.append(stopping)
        patience = review.early_stopping_patience if stopping is not None else 0
        # Without early stopping the averaged epochs are known (the last one predict scores);
        # with it, any epoch may turn out the best.
        epochs = review.epochs_per_fold
        snapshots = Snapshots(score=lambda: self._probabilities(scored), keep=review.average_epochs + patience,
                              epochs=range(0, epochs) if patience else range(epochs - review.average_epochs, epochs - 1))
        callbacks.append(snapshots)
        with quiet_retracing():
            history = self.model.fit(
                data, epochs=review.epochs_per_fold, shuffle=False,  # the dataset's seeded order is the order
                steps_per_epoch=steps[0],
                validation_data=validation, validation_steps=validation_steps, verbose=0, callbacks=callbacks)
        run = len(history.history.get("loss", []))
        # The weights kept are the best epoch's (early stopping) or the last's: the window ends there.
        last = stopping.best_epoch if stopping is not None else run - 1
        return run, [snapshots.by_epoch[epoch] for epoch in range(last - review.average_epochs + 1, last)
                     if epoch in snapshots.by_epoch]

    def _inputs(self, view: SplitInput) -> tf.data.Dataset:
        data = self._images(view.eval_dataset(BatchSpec(num_classes=self.num_classes, batch_size=PREDICT_BATCH)))
        return data.map(lambda images, labels: images)

    def _probabilities(self, view: SplitInput) -> np.ndarray:
        """The fold model's probabilities for every image of a view now, through the twin."""
        self.twin.set_weights(self.model.get_weights())
        with quiet_retracing():
            return np.asarray(self.twin.predict(self._inputs(view), verbose=0), np.float32)

    def predict(self, held_out: SplitInput, *, snapshots: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, embeddings) of every image of a view, in its order, from one pass of the
        twin with the fold's final weights; the probabilities averaged with the fit's `snapshots`."""
        self.twin.set_weights(self.model.get_weights())
        with quiet_retracing():
            probabilities, embeddings = self.scorer.predict(self._inputs(held_out), verbose=0)
        probabilities = np.mean([*snapshots, np.asarray(probabilities, np.float32)], axis=0, dtype=np.float32)
        return probabilities, np.asarray(embeddings, np.float32)
