"""Backports of later Keras fixes into Keras 3.8, the newest Keras 3 that runs on TensorFlow 2.16.

They patch private `keras.src` functions process-wide, so this module refuses to load on any
other Keras version: a newer Keras either has the fixes already or has moved the functions.
It is imported only when a real tf.distribute strategy is in use.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from trainwell.errors import TrainwellError

WRITTEN_FOR = "3.8."

if not keras.__version__.startswith(WRITTEN_FOR):
    raise TrainwellError(
        f"trainwell's Keras backports for tf.distribute were written for Keras {WRITTEN_FOR}x and refuse to patch "
        f"Keras {keras.__version__}; install the Keras version trainwell pins (pip install 'keras=={WRITTEN_FOR}0') "
        "or train with train.strategy: default"
    )


def apply_distribution_fixes() -> None:
    """Two backports from later Keras into Keras 3.8 (the newest that runs on TF 2.16), applied
    once and only when a real strategy is in use:

    - fit() rejects what distribute_datasets_from_function returns ("Unrecognized data type")
      although its TF adapter handles every tf.distribute.DistributedDataset: widen the check.
    - Under MultiWorkerMirroredStrategy the per-step metrics are averaged with
      strategy.reduce("MEAN", value, axis=0), which fails on scalar losses ("Invalid reduction
      dimension 0"); later Keras reduces with axis=None, which is what this does.
    """
    from keras.src.backend.tensorflow import trainer as tf_trainer
    from keras.src.trainers import data_adapters

    original = data_adapters.is_tf_dataset
    if getattr(original, "accepts_distributed", False):
        return

    def is_tf_dataset(value: object) -> bool:
        return isinstance(value, tf.distribute.DistributedDataset) or original(value)

    is_tf_dataset.accepts_distributed = True  # type: ignore[attr-defined]
    data_adapters.is_tf_dataset = is_tf_dataset

    reduce_per_replica = tf_trainer.reduce_per_replica

    def reduce_scalars_across_workers(values: object, strategy: tf.distribute.Strategy, reduction: str) -> object:
        if (reduction in ("auto", "mean") and isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
                and strategy.extended._in_multi_worker_mode()):
            return tf.nest.map_structure(lambda value: strategy.reduce("MEAN", value, axis=None), values)
        return reduce_per_replica(values, strategy, reduction)

    tf_trainer.reduce_per_replica = reduce_scalars_across_workers


def build_from_local_batch(model: keras.Model, strategy: tf.distribute.Strategy) -> None:
    """Let fit() learn input shapes from this worker's own batch under multi-worker training.

    Keras 3.8 reads one batch before training only to build the model symbolically, and
    first averages that batch over all replicas with strategy.reduce: across workers that is
    a collective on uint8 images, which fails ("Attempt to convert a value (PerReplica ...)").
    The shapes are the same on every replica, so the first local one is taken instead.
    """
    def first_local(value: object) -> object:
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    def maybe_symbolic_build(iterator: Any = None, data_batch: Any = None) -> None:
        if iterator is not None:
            for _, batches in iterator:
                data_batch = tf.nest.map_structure(first_local, next(batches))
                break
        with strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    model._maybe_symbolic_build = maybe_symbolic_build
