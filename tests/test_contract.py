"""The model contract check, starting with the exact model from the story that diverged to NaN."""

from __future__ import annotations

import keras
import pytest

from trainwell.errors import ContractError
from trainwell.training.contract import check_contract, check_coverage, output_activation, raise_on_errors
from trainwell.training.network import build_model


def story_model(activation: str) -> keras.Model:
    """The original post's network, layer for layer (Sequential, 2x2 kernels, 75x75x3 input)."""
    model = keras.Sequential(
        [
            keras.Input(shape=(75, 75, 3)),
            keras.layers.Conv2D(16, (2, 2), activation="relu"),
            keras.layers.MaxPooling2D((2, 2)),
            keras.layers.Conv2D(16, (2, 2), activation="relu"),
            keras.layers.MaxPooling2D((2, 2)),
            keras.layers.Conv2D(32, (2, 2), activation="relu"),
            keras.layers.MaxPooling2D((2, 2)),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(5, activation=activation),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-4), loss="categorical_crossentropy", metrics=["acc"])
    return model


def errors(**kwargs) -> list[str]:
    return [problem.message for problem in check_contract(**kwargs) if problem.severity == "error"]


def test_story_model_with_sigmoid_is_rejected_naming_sigmoid_and_softmax():
    model = story_model("sigmoid")
    problems = errors(model=model, loss=model.loss, from_logits=None, num_classes=5, label_encoding="one_hot")
    assert len(problems) == 1
    message = problems[0]
    assert "sigmoid" in message and "softmax" in message and "categorical_crossentropy" in message
    assert "1.61" in message  # ln(5): the loss the story's run collapsed to
    with pytest.raises(ContractError, match="sigmoid"):
        raise_on_errors(check_contract(model=model, loss=model.loss, from_logits=None, num_classes=5, label_encoding="one_hot"))


def test_story_model_with_softmax_passes():
    model = story_model("softmax")
    assert check_contract(model=model, loss=model.loss, from_logits=None, num_classes=5, label_encoding="one_hot") == []


def test_loss_object_is_understood():
    model = story_model("sigmoid")
    loss = keras.losses.CategoricalCrossentropy()
    assert errors(model=model, loss=loss, from_logits=None, num_classes=5, label_encoding="one_hot")
    # from_logits=True read from the loss object: applying it after a sigmoid is still wrong.
    logits_loss = keras.losses.CategoricalCrossentropy(from_logits=True)
    assert any("twice" in m for m in
               errors(model=model, loss=logits_loss, from_logits=None, num_classes=5, label_encoding="one_hot"))


def test_builder_model_passes_and_reports_softmax():
    model = build_model(num_classes=5, image_size=32, conv_filters=[16, 16, 32], kernel_size=2, dense_units=128)
    assert output_activation(model) == "softmax"
    assert model.output_shape == (None, 5)
    assert check_contract(model=model, loss="categorical_crossentropy", from_logits=False, num_classes=5,
                          label_encoding="one_hot") == []


def test_width_mismatch():
    model = story_model("softmax")
    assert any("6 classes" in message for message in
               errors(model=model, loss="categorical_crossentropy", from_logits=False, num_classes=6, label_encoding="one_hot"))


def test_linear_head_without_from_logits_and_softmax_with_from_logits():
    linear = story_model("linear")
    assert any("from_logits=True" in m for m in
               errors(model=linear, loss="categorical_crossentropy", from_logits=False, num_classes=5, label_encoding="one_hot"))
    assert errors(model=linear, loss="categorical_crossentropy", from_logits=True, num_classes=5, label_encoding="one_hot") == []
    softmax = story_model("softmax")
    assert any("twice" in m for m in
               errors(model=softmax, loss="categorical_crossentropy", from_logits=True, num_classes=5, label_encoding="one_hot"))


def test_label_encoding_must_match_loss():
    model = story_model("softmax")
    assert any("integer" in m for m in
               errors(model=model, loss="categorical_crossentropy", from_logits=False, num_classes=5, label_encoding="sparse"))
    assert any("one-hot" in m for m in
               errors(model=model, loss="sparse_categorical_crossentropy", from_logits=False, num_classes=5,
                      label_encoding="one_hot"))


def test_multi_label_data_rejects_softmax():
    model = story_model("softmax")
    messages = errors(model=model, loss="binary_crossentropy", from_logits=False, num_classes=5,
                      label_encoding="one_hot", multi_label=True)
    assert any("sigmoid" in m and "binary_crossentropy" in m for m in messages)
    assert errors(model=story_model("sigmoid"), loss="binary_crossentropy", from_logits=False, num_classes=5,
                  label_encoding="one_hot", multi_label=True) == []


def test_binary_crossentropy_on_exclusive_classes_is_rejected():
    assert errors(model=story_model("sigmoid"), loss="binary_crossentropy", from_logits=False, num_classes=5,
                  label_encoding="one_hot")


def test_coverage_catches_truncated_epochs():
    # The story: steps_per_epoch=100 and validation_steps=25 with batch 20 on bigger splits.
    problems = check_coverage(train_count=2500, val_count=800, batch_size=20, steps_per_epoch=100, validation_steps=25)
    messages = [p.message for p in problems]
    assert len(messages) == 2
    assert "500 are silently dropped" in messages[0] and "raise it to 125" in messages[0]
    assert "300 are silently dropped" in messages[1]
    assert check_coverage(train_count=2500, val_count=800, batch_size=20) == []
    assert check_coverage(train_count=2500, val_count=800, batch_size=20, steps_per_epoch=125, validation_steps=40) == []
