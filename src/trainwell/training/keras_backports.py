"""Backports of Keras fixes not yet released (as of Keras 3.15.1) for multi-worker training on TensorFlow 2.16.

They patch private `keras.src` functions process-wide, so this module refuses to load on a Keras
version it was not tested with: a newer Keras may have the fixes already or have moved the
functions. It is imported only when a real tf.distribute strategy is in use.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from trainwell.errors import TrainwellError

# The Keras releases these patches were tested with (tests/test_distribute.py): 3.15 on Python
# 3.11+, 3.12 on Python 3.10 (Keras 3.13 and later need Python 3.11).
WRITTEN_FOR = ("3.12.", "3.15.")

if not keras.__version__.startswith(WRITTEN_FOR):
    raise TrainwellError(
        f"trainwell's Keras backports for tf.distribute were tested with Keras {' and '.join(v + 'x' for v in WRITTEN_FOR)} "
        f"and refuse to patch Keras {keras.__version__}; install the Keras version trainwell pins "
        "(pip install -e . or pip install trainwell) or train with train.strategy: default"
    )


def apply_distribution_fixes() -> None:
    """Under MultiWorkerMirroredStrategy Keras averages the per-step metrics with
    strategy.reduce("MEAN", value, axis=0), which fails on scalar losses ("Invalid reduction
    dimension 0 for input with 0 dimensions"); reduce with axis=None instead. Applied once.

    (Keras 3.8 also needed fit() to accept what distribute_datasets_from_function returns;
    Keras 3.9 and later do, so that patch is gone.)
    """
    from keras.src.backend.tensorflow import trainer as tf_trainer

    reduce_per_replica = tf_trainer.reduce_per_replica
    if getattr(reduce_per_replica, "reduces_scalars", False):
        return

    def reduce_scalars_across_workers(values: object, strategy: tf.distribute.Strategy, reduction: str) -> object:
        if (reduction in ("auto", "mean") and isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
                and strategy.extended._in_multi_worker_mode()):
            return tf.nest.map_structure(lambda value: strategy.reduce("MEAN", value, axis=None), values)
        return reduce_per_replica(values, strategy, reduction)

    reduce_scalars_across_workers.reduces_scalars = True  # type: ignore[attr-defined]
    tf_trainer.reduce_per_replica = reduce_scalars_across_workers


def build_from_local_batch(model: keras.Model, strategy: tf.distribute.Strategy) -> None:
    """Let fit() learn input shapes from this worker's own batch under multi-worker training.

    Keras (3.8 to 3.15) reads one batch before training only to build the model symbolically, and
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
            for step in iterator:  # (step, iterator) up to Keras 3.10; (begin, end, iterator) from 3.11
                data_batch = tf.nest.map_structure(first_local, next(step[-1]))
                break
        with strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    model._maybe_symbolic_build = maybe_symbolic_build
