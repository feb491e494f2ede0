"""The classifier network from params: the small CNN (Conv2D blocks, Dense, softmax head) or a keras.applications backbone."""

from __future__ import annotations

import keras

from trainwell.errors import ParamsError
from trainwell.params import SEED_CNN, TrainParams
from trainwell.params_limits import training_problem
from trainwell.training.backbone import build_backbone_classifier, weights_path


def build_model(
    *,
    num_classes: int,
    image_size: int,
    conv_filters: list[int],
    kernel_size: int,
    dense_units: int,
    output_activation: str = "softmax",
    augment_layers: list[keras.layers.Layer] | None = None,
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
    # Keras preprocessing layers augment on the accelerator during fit() and pass images
    # through unchanged at inference.
    for layer in augment_layers or []:
        x = layer(x)
    for block, filters in enumerate(conv_filters):
        x = keras.layers.Conv2D(filters, kernel_size, activation="relu", name=f"conv{block + 1}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{block + 1}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(dense_units, activation="relu", name="dense")(x)
    outputs = keras.layers.Dense(num_classes, activation=output_activation, dtype="float32", name="class_scores")(x)
    return keras.Model(inputs, outputs, name="trainwell_cnn")


def augment_layers_for(train: TrainParams) -> list[keras.layers.Layer]:
    """train.augment_layers as Keras layers, each seeded from train.seed and its position."""
    layers = []
    for number, step in enumerate(train.augment_layers, start=1):
        layer_class = getattr(keras.layers, step.name, None)
        if not step.name.startswith("Random") or not isinstance(layer_class, type):
            allowed = ", ".join(name for name in dir(keras.layers) if name.startswith("Random"))
            raise ParamsError(f"train.augment_layers step {number}: '{step.name}' is not a Keras random "
                              f"preprocessing layer; use one of {allowed}")
        try:
            layers.append(layer_class(**step.params, seed=train.seed + number, name=f"augment{number}"))
        except (TypeError, ValueError) as exc:
            raise ParamsError(f"train.augment_layers step {number} ({step.name}): invalid params {step.params}: "
                              f"{exc}") from None
    return layers


def model_for(
    train: TrainParams,
    *,
    num_classes: int,
    image_size: int,
    output_activation: str | None = None,
    augment: bool = True,
) -> keras.Model:
    """The network params' train section describes (output activation overridable, e.g. softmax
    for the label-review fold models, which also leave out the augmentation layers).

    A backbone comes with every layer trainable; fit.py freezes it for train.frozen_epochs.
    Refused before a weight is allocated when it would not fit the machine with this many classes
    (params can only check the class count data.classes names).
    """
    problem = training_problem(train, image_size=image_size, classes=num_classes, batch_size=train.batch_size,
                               batch_key="train.batch_size")
    if problem:
        raise ParamsError(problem)
    if train.model != SEED_CNN:
        return build_backbone_classifier(
            model=train.model,
            num_classes=num_classes,
            image_size=image_size,
            weights=weights_path(train),
            head_dropout=train.head_dropout,
            output_activation=output_activation or train.output_activation,
            seed=train.seed,
            augment_layers=augment_layers_for(train) if augment else [],
        )
    return build_model(
        augment_layers=augment_layers_for(train) if augment else [],
        num_classes=num_classes,
        image_size=image_size,
        conv_filters=train.conv_filters,
        kernel_size=train.kernel_size,
        dense_units=train.dense_units,
        output_activation=output_activation or train.output_activation,
    )


def build_network(*, train: TrainParams, num_classes: int, image_size: int) -> keras.Model:
    """The network under train.mixed_precision; the global dtype policy is restored afterwards."""
    previous = keras.mixed_precision.dtype_policy()
    if train.mixed_precision != "float32":
        keras.mixed_precision.set_dtype_policy(train.mixed_precision)
    try:
        return model_for(train, num_classes=num_classes, image_size=image_size)
    finally:
        keras.mixed_precision.set_dtype_policy(previous)


LOSS_CLASSES = {
    "categorical_crossentropy": keras.losses.CategoricalCrossentropy,
    "sparse_categorical_crossentropy": keras.losses.SparseCategoricalCrossentropy,
    "binary_crossentropy": keras.losses.BinaryCrossentropy,
}


def compile_model(*, model: keras.Model, train: TrainParams, steps_per_execution: int = 1,
                  learning_rate: float | None = None) -> None:
    """Adam at learning_rate (default train.learning_rate), the loss params name, accuracy; XLA and steps per call from params."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=train.learning_rate if learning_rate is None else learning_rate),
        loss=LOSS_CLASSES[train.loss](from_logits=train.from_logits),
        metrics=["accuracy"],
        jit_compile=train.jit_compile,
        steps_per_execution=steps_per_execution,
    )
