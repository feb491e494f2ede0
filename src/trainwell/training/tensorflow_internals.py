"""The one private TensorFlow function trainwell calls, behind a fence on the TensorFlow version it was written for.

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
        f"trainwell turns TensorFlow's op determinism off (for train.jit_compile: true) through a private "
        f"function tested with TensorFlow {' and '.join(v + 'x' for v in WRITTEN_FOR)}, not {tf.__version__}; "
        "install the TensorFlow version trainwell pins (pip install -e . or pip install trainwell) "
        "or set train.jit_compile: false"
    )


def disable_op_determinism() -> None:
    """Undo tf.config.experimental.enable_op_determinism: the switch is process-wide and TF exports no
    public way back (an earlier run in the same process, e.g. a test, may have turned it on)."""
    from tensorflow.python.framework import config as tf_config

    tf_config.disable_op_determinism()
