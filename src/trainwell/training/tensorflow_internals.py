"""The private TensorFlow functions trainwell calls, behind a fence on the TensorFlow version they were written for.

`tensorflow.python` is not TensorFlow's public API: a release may move or drop what is used
here. Like `keras_backports`, this module refuses to load on a TensorFlow it was not tested
with, with a message saying what to do, instead of failing somewhere inside a training run.
"""

from __future__ import annotations

import tensorflow as tf

from trainwell.errors import TrainwellError

# The TensorFlow release trainwell pins (pyproject.toml) and tests this with (tests/test_train.py).
WRITTEN_FOR = ("2.16.",)

if not tf.__version__.startswith(WRITTEN_FOR):
    raise TrainwellError(
        f"trainwell turns TensorFlow's op determinism off (for train.jit_compile: true) and sets a multi-worker "
        f"cluster's heartbeat through private functions tested with TensorFlow "
        f"{' and '.join(v + 'x' for v in WRITTEN_FOR)}, not {tf.__version__}; install the TensorFlow version "
        "trainwell pins (pip install -e . or pip install trainwell), or set train.jit_compile: false and "
        "train.strategy: default"
    )


def disable_op_determinism() -> None:
    """Undo tf.config.experimental.enable_op_determinism: the switch is process-wide and TF exports no
    public way back (an earlier run in the same process, e.g. a test, may have turned it on)."""
    from tensorflow.python.framework import config as tf_config

    tf_config.disable_op_determinism()


def configure_cluster_heartbeat(*, heartbeat_timeout_s: float) -> None:
    """Configure the coordination service as MultiWorkerMirroredStrategy would, with a longer heartbeat timeout.

    The strategy configures the service only when nothing has (collective_all_reduce_strategy.py),
    with TensorFlow's 10 s heartbeat timeout: a worker whose CPU is busy for 10 s (two workers and
    their input pipelines on two cores) is declared dead and the run fails with "heartbeat timeout".
    Call before constructing the strategy, with TF_CONFIG set.
    """
    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.python.eager import context
    from tensorflow.tsl.protobuf import coordination_config_pb2

    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    cluster_spec = resolver.cluster_spec()
    if context.context().coordination_service is not None or resolver.task_type not in ("chief", "worker"):
        return
    jobs = [coordination_config_pb2.CoordinatedJob(name=job, num_tasks=cluster_spec.num_tasks(job))
            for job in ("chief", "worker") if job in cluster_spec.jobs]
    context.context().configure_coordination_service(
        service_type="standalone", service_leader=multi_worker_util.coordination_leader(cluster_spec),
        coordinated_jobs=jobs, heartbeat_timeout_in_ms=int(heartbeat_timeout_s * 1000))
