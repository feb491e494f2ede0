"""The classifier network: the story's small CNN as a Keras 3 Functional model, built from params."""

from __future__ import annotations

from typing import TYPE_CHECKING

import keras

if TYPE_CHECKING:
    from pipeline.params import TrainParams


def build_model(
    *,
    num_classes: int,
    image_size: int,
    conv_filters: list[int],
    kernel_size: int,
    dense_units: int,
    output_activation: str = "softmax",
) -> keras.Model:
    """Conv2D/MaxPool blocks, Dense, and a num_classes-wide head; takes uint8 images.

    Normalisation to [0, 1] happens inside the model, so the input pipeline ships uint8
    (4x less to copy than float32) and the division runs on the accelerator. The head is
    float32 even under mixed precision so softmax probabilities stay exact.
    """
    if num_classes < 2:
        raise ValueError(f"need at least 2 classes to train a classifier, got {num_classes}")
    inputs = keras.Input(shape=(image_size, image_size, 3), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1.0 / 255.0, name="to_unit_range")(inputs)
    for block, filters in enumerate(conv_filters):
        x = keras.layers.Conv2D(filters, kernel_size, activation="relu", name=f"conv{block + 1}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{block + 1}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(dense_units, activation="relu", name="dense")(x)
    outputs = keras.layers.Dense(num_classes, activation=output_activation, dtype="float32", name="class_scores")(x)
    return keras.Model(inputs, outputs, name="trainwell_cnn")


def model_for(
    train: TrainParams, *, num_classes: int, image_size: int, output_activation: str | None = None
) -> keras.Model:
    """The network params' train section describes (output activation overridable, e.g. softmax
    for the label-review fold models)."""
    return build_model(
        num_classes=num_classes,
        image_size=image_size,
        conv_filters=train.conv_filters,
        kernel_size=train.kernel_size,
        dense_units=train.dense_units,
        output_activation=output_activation or train.output_activation,
    )
