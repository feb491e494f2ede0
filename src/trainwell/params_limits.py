"""Upper bounds for params: what one machine of trainwell's class (24 GiB of memory) can hold, per value and for the network they describe together.

Every size and count in params.yaml has an upper bound as it has a lower one, so a typo such as
`dense_units: 2147483648` is an error naming the key and the bound (exit 2), not a
ResourceExhaustedError traceback mid-training (exit 3). The bounds of single values are generous
(far past any model this package trains well); the sizes that multiply each other (image size,
filters, units, batch) are bounded together by an estimate of the memory they take.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # params imports this module; the types are only named here
    from trainwell.params import Params, TrainParams

GIB = 1 << 30
# The machine class: 24 GiB. The network, its gradients, Adam's two moments and a batch's
# activations may take 16 GiB of it; the rest is the input pipeline (train.memory_budget_mb),
# TensorFlow's runtime and the operating system.
MACHINE_BYTES = 24 * GIB
NETWORK_BYTES = 16 * GIB
# A cache shard (build.shard_size images) and the images calibrating int8 are held whole.
HELD_IMAGES_BYTES = 4 * GIB

MAX_IMAGES_PER_CLASS = 1_000_000  # demo: about 2 KB of JPEG each, 10 GB for five classes
MAX_PIXELS = 250_000_000  # a decode may take 16 bytes a pixel (data.decode.MAX_BYTES_PER_PIXEL): 4 GB
MAX_SIDE = 100_000  # pixels; larger than any side a JPEG (65,500) or GIF (65,535) can state
MAX_RATIO = 1_000_000.0  # aspect ratio or class imbalance: a ratio of sides or of file counts
# The Laplacian of 8-bit luma (3x3 kernel) lies in [-1020, 1020]: its variance cannot pass 1020^2.
MAX_LAPLACIAN_VARIANCE = 1020.0**2
MAX_Z = 1000.0  # robust z-scores and interquartile fences
MAX_WORKERS = 256  # processes or threads
MAX_TIMEOUT_S = 86_400.0  # one day; 1e10 s overflowed setitimer in every audit worker
MAX_SHARD_SIZE = 1 << 20  # images; bounded in bytes too, below
MAX_STEPS = 1_000_000  # epochs, guard check intervals: far past any run of a day
MAX_SPIKE_WINDOW = 100_000  # batch losses held for the running median
MAX_ROLLBACKS = 1000
MAX_FACTOR = 1_000_000.0  # the guard's spike factor
MAX_LEARNING_RATE = 10.0  # Adam's step size; past 1 every weight can jump by its own scale each step
MAX_BATCH = 65_536
MAX_FILTERS = 4096  # per Conv2D block; ResNet's widest have 2048
MAX_KERNEL = 1024  # no larger than the largest data.image_size
MAX_UNITS = 65_536  # the cnn's Dense layer
MAX_MEMORY_BUDGET_MB = 16_384  # train.memory_budget_mb: two thirds of the machine
MAX_STEPS_PER_EXECUTION = 100_000
MAX_REPRESENTATIVE_IMAGES = 100_000
MAX_TOP_K = 65_536
MAX_FOLDS = 100

# keras.applications backbones with include_top=False at 224x224, counted once from the built
# models (sum of every layer's output size): parameters, and activation values per input pixel.
BACKBONE_SIZES = {
    "MobileNetV3Small": (939_120, 106.7),
    "MobileNetV3Large": (2_996_352, 307.4),
    "EfficientNetV2B0": (5_919_312, 322.2),
    "EfficientNetV2B1": (6_931_124, 427.0),
    "EfficientNetV2B2": (8_769_374, 461.3),
    "EfficientNetV2B3": (12_930_622, 576.0),
}
BYTES_PER_VALUE = 4  # float32


@dataclass(frozen=True)
class NetworkSize:
    """Parameters of a network and the activation values one image takes through it."""

    parameters: int
    activations_per_image: int

    def training_bytes(self, batch_size: int) -> int:
        # Weights, gradients, Adam's two moments and the initialisers' temporaries (2.66 GiB measured for
        # 134M parameters, 2.68 estimated); every activation of the batch kept for the
        # backward pass, and its gradient.
        return BYTES_PER_VALUE * (5 * self.parameters + 2 * batch_size * self.activations_per_image)

    def inference_bytes(self, batch_size: int) -> int:
        return BYTES_PER_VALUE * (self.parameters + batch_size * self.activations_per_image)


def cnn_size(*, image_size: int, conv_filters: Sequence[int], kernel_size: int, dense_units: int,
             classes: int) -> NetworkSize:
    """The size of training.network.build_model's network: 'valid' Conv2D then MaxPooling2D(2) per
    block, Flatten, Dense, the class head."""
    side, channels = image_size, 3
    parameters, activations = 0, side * side * channels  # the input, rescaled to float
    for filters in conv_filters:
        convolved = max(side - kernel_size + 1, 0)
        parameters += kernel_size * kernel_size * channels * filters + filters
        side, channels = convolved // 2, filters
        activations += convolved * convolved * filters + side * side * filters
    features = side * side * channels
    parameters += features * dense_units + dense_units + dense_units * classes + classes
    return NetworkSize(parameters=parameters, activations_per_image=activations + dense_units + classes)


def backbone_size(*, model: str, image_size: int, classes: int) -> NetworkSize:
    parameters, per_pixel = BACKBONE_SIZES[model]
    return NetworkSize(parameters=parameters + 1536 * classes + classes,  # the head: pooled features (at most 1,536)
                       activations_per_image=int(per_pixel * image_size * image_size) + classes)


def network_problem(size: NetworkSize, *, training_batches: dict[str, int], inference_batches: dict[str, int],
                    keys: str) -> str | None:
    """Why this network does not fit the machine, naming the params to lower, or None."""
    needs = {key: size.training_bytes(batch) for key, batch in training_batches.items()}
    needs |= {key: size.inference_bytes(batch) for key, batch in inference_batches.items()}
    key, largest = max(needs.items(), key=lambda item: item[1])
    if largest <= NETWORK_BYTES:
        return None
    return (f"the network ({size.parameters:,} parameters, {size.activations_per_image:,} activation values an "
            f"image) would need about {largest / GIB:,.1f} GiB with {key} {training_batches.get(key) or inference_batches[key]}, "
            f"more than the {NETWORK_BYTES // GIB} GiB of a {MACHINE_BYTES // GIB} GiB machine it may take; lower "
            f"{keys} or {key}")


def held_images_problem(*, count: int, image_size: int, key: str) -> str | None:
    """Why `count` decoded images held at once (a cache shard, calibration images) do not fit, or None."""
    needed = count * image_size * image_size * 3
    if needed <= HELD_IMAGES_BYTES:
        return None
    return (f"{key} {count:,} images of {image_size}x{image_size} would hold {needed / GIB:,.1f} GiB at once, more "
            f"than {HELD_IMAGES_BYTES // GIB} GiB; lower {key} (at most {HELD_IMAGES_BYTES // (image_size * image_size * 3):,} "
            f"at this data.image_size)")


def network_size(train: TrainParams, *, image_size: int, classes: int) -> NetworkSize:
    if train.model == "cnn":
        return cnn_size(image_size=image_size, conv_filters=train.conv_filters, kernel_size=train.kernel_size,
                        dense_units=train.dense_units, classes=classes)
    return backbone_size(model=train.model, image_size=image_size, classes=classes)


def _keys(train: TrainParams) -> str:
    return "train.dense_units, train.conv_filters, data.image_size" if train.model == "cnn" else "data.image_size"


def params_problem(params: Params, *, classes: int) -> str | None:
    """Why the network params describe, for `classes` classes (at least 2: data.classes may be
    unset), would not fit the machine in training (train and label_review batches) or inference
    (evaluate and predict batches)."""
    size = network_size(params.train, image_size=params.data.image_size, classes=max(classes, 2))
    return network_problem(
        size, keys=_keys(params.train),
        training_batches={"train.batch_size": params.train.batch_size,
                          "label_review.batch_size": params.label_review.batch_size},
        inference_batches={"evaluate.batch_size": params.evaluate.batch_size,
                           "predict.batch_size": params.predict.batch_size})


def training_problem(train: TrainParams, *, image_size: int, classes: int, batch_size: int, batch_key: str) -> str | None:
    """The same, once the class count is known (the head grows with it), for one training batch size."""
    size = network_size(train, image_size=image_size, classes=classes)
    problem = network_problem(size, keys=_keys(train), training_batches={batch_key: batch_size}, inference_batches={})
    return problem and f"{problem} (with {classes:,} classes)"
