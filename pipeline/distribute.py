"""tf.distribute plumbing for train: device set-up, the strategy from params, per-pipeline datasets."""

from __future__ import annotations

import os
from collections.abc import Callable

import tensorflow as tf

from pipeline.errors import ParamsError


def configure_cpu_devices(count: int) -> None:
    """Split the first CPU into `count` logical devices (must run before TensorFlow initialises)."""
    if count <= 0:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is not None and len(current) == count:
        return
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError:
        raise ParamsError(
            f"train.cpu_devices={count} must be applied before TensorFlow starts, but it is already running "
            f"with {len(tf.config.list_logical_devices('CPU'))} CPU device(s); set it in params.yaml and run "
            "`trainwell train` in a fresh process"
        ) from None


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The strategy train.strategy names; `default` is one device (GPU 0 when there is one)."""
    if name == "multi_worker":
        # Before anything else touches TensorFlow: listing logical devices starts the runtime,
        # and collective ops must be configured before it starts.
        if "TF_CONFIG" not in os.environ:
            raise ParamsError(
                "train.strategy=multi_worker needs the TF_CONFIG environment variable on every worker, e.g. "
                '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}; '
                "see README 'Scaling out'"
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "default":
        # A one-device strategy on the GPU makes the input pipeline prefetch onto the device
        # (distributed datasets copy the next batch while the current one trains).
        return tf.distribute.OneDeviceStrategy(gpus[0].name) if gpus else tf.distribute.get_strategy()
    if name == "mirrored":
        devices = [device.name for device in gpus or tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    raise ParamsError(f"train.strategy '{name}' is not one of default, mirrored, multi_worker")


def input_pipelines(strategy: tf.distribute.Strategy) -> int:
    """How many input pipelines distribute_dataset builds: one per worker of a multi-worker cluster."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        spec = strategy.cluster_resolver.cluster_spec()
        return sum(spec.num_tasks(job) for job in ("chief", "worker") if job in spec.jobs) or 1
    return 1


def distribute_dataset(
    strategy: tf.distribute.Strategy, build: Callable[..., tf.data.Dataset]
) -> tf.data.Dataset | tf.distribute.DistributedDataset:
    """build(replicas=, pipeline=, pipelines=) per input pipeline, as the strategy wants it.

    On the default strategy this is just build(); otherwise every worker builds its own
    pipeline holding only its replicas' slices of each global batch.
    """
    if not tf.distribute.has_strategy() and strategy is tf.distribute.get_strategy():
        return build(replicas=1, pipeline=0, pipelines=1)
    _backport_keras_distribution_fixes()
    replicas, planned = strategy.num_replicas_in_sync, input_pipelines(strategy)

    def for_pipeline(context: tf.distribute.InputContext) -> tf.data.Dataset:
        if context.num_input_pipelines != planned:  # the step counts fit() gets were planned for `planned`
            raise RuntimeError(f"tf.distribute asks for {context.num_input_pipelines} input pipelines; "
                               f"trainwell planned {planned}")
        dataset = build(replicas=replicas, pipeline=context.input_pipeline_id, pipelines=context.num_input_pipelines)
        options = tf.data.Options()
        # Sharding is done by build (by batch slice, or by shard for a streamed training split);
        # TF must not shard again by element.
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        return dataset.with_options(options)

    return strategy.distribute_datasets_from_function(for_pipeline)


def _backport_keras_distribution_fixes() -> None:
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


def build_from_local_batch(model: object, strategy: tf.distribute.Strategy) -> None:
    """Let fit() learn input shapes from this worker's own batch under multi-worker training.

    Keras 3.8 reads one batch before training only to build the model symbolically, and
    first averages that batch over all replicas with strategy.reduce: across workers that is
    a collective on uint8 images, which fails ("Attempt to convert a value (PerReplica ...)").
    The shapes are the same on every replica, so the first local one is taken instead.
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return

    def first_local(value: object) -> object:
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    def maybe_symbolic_build(iterator: object = None, data_batch: object = None) -> None:
        if iterator is not None:
            for _, batches in iterator:
                data_batch = tf.nest.map_structure(first_local, next(batches))
                break
        with strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    model._maybe_symbolic_build = maybe_symbolic_build
