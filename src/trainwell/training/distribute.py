"""tf.distribute plumbing for train and label review: device set-up, the strategy from params, seeds, per-pipeline datasets."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import keras
import tensorflow as tf

from trainwell.console import say, warn
from trainwell.errors import ParamsError

# How long (seconds) a worker may go without a heartbeat before the cluster calls it dead.
# TensorFlow's 10 s failed a two-worker run on two busy cores; a dead peer now stops the run
# 2 minutes later instead of 10 s, which a multi-hour job does not notice.
HEARTBEAT_TIMEOUT_S = 120.0


def configure_cpu_devices(count: int, *, strategy: str = "mirrored") -> None:
    """Split the first CPU into `count` logical devices (must run before TensorFlow initialises)."""
    if count > 0 and strategy == "multi_worker":
        # MultiWorkerMirroredStrategy takes one device per worker on a CPU-only machine: the
        # logical devices would be made and never used.
        raise ParamsError(f"train.cpu_devices={count} splits one machine's CPU for the mirrored strategy; under "
                          "multi_worker each worker trains on one device (its GPUs when it has them, else its CPU). "
                          "Set train.cpu_devices: 0, or train.strategy: mirrored to use them on this machine")
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
                "see docs/scale.md, 'Scaling out'"
            )
        return _multi_worker_strategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "default":
        # A one-device strategy on the GPU makes the input pipeline prefetch onto the device
        # (distributed datasets copy the next batch while the current one trains).
        return tf.distribute.OneDeviceStrategy(gpus[0].name) if gpus else tf.distribute.get_strategy()
    if name == "mirrored":
        devices = [device.name for device in gpus or tf.config.list_logical_devices("CPU")]
        if len(devices) == 1:
            warn(f"train.strategy is mirrored, but this machine has one device ({devices[0]}): it trains as the "
                 "default strategy does, with the cost of a distributed one. For mirrored on a CPU set "
                 "train.cpu_devices: 2 or more; on GPUs, make them visible (CUDA_VISIBLE_DEVICES)")
        return tf.distribute.MirroredStrategy(devices=devices)
    raise ParamsError(f"train.strategy '{name}' is not one of default, mirrored, multi_worker")


def _multi_worker_strategy() -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy, once TF_CONFIG checks out and every peer answers (said while waiting)."""
    from trainwell.training import peers

    task = peers.read_tf_config(os.environ["TF_CONFIG"])
    peers.wait_for_peers(task, timeout_s=peers.timeout_from_environment(), say=say)
    from trainwell.training.tensorflow_internals import configure_cluster_heartbeat

    configure_cluster_heartbeat(heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S)
    before = signal.getsignal(signal.SIGTERM)
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    if callable(before):
        # TensorFlow's preemption notifier takes SIGTERM and only logs it: the command's own
        # handler (trainwell.stopping) is put back, so `kill` and a cancelled CI job stop the worker.
        signal.signal(signal.SIGTERM, before)
    return strategy


def seed_everything(seed: int, *, deterministic_ops: bool = True) -> None:
    """Python, numpy and TF seeds plus deterministic TF ops: same inputs, same weights, bit for bit."""
    keras.utils.set_random_seed(seed)
    if deterministic_ops:
        tf.config.experimental.enable_op_determinism()
    else:
        from trainwell.training.tensorflow_internals import disable_op_determinism

        disable_op_determinism()


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
    from trainwell.training import keras_backports

    keras_backports.apply_distribution_fixes()
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


def build_from_local_batch(model: keras.Model, strategy: tf.distribute.Strategy) -> None:
    """Let fit() learn input shapes from this worker's own batch under multi-worker training (a backport for Keras up to 3.15)."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        from trainwell.training import keras_backports

        keras_backports.build_from_local_batch(model, strategy)
