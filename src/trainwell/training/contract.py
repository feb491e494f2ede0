"""Contract checks: do the model's head, its loss, the labels and the epoch plan agree before training?"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import keras

from trainwell.errors import ContractError

PROBABILITY_LOSSES = ("categorical_crossentropy", "sparse_categorical_crossentropy", "binary_crossentropy")
# How labels reach the loss: one float vector per image, or one integer class index per image.
LabelEncoding = Literal["one_hot", "sparse"]


@dataclass(frozen=True)
class Problem:
    severity: str  # "error" stops training; "warning" is printed
    message: str


def output_activation(model: keras.Model) -> str:
    """Name of the activation that produces the model's output ('linear' when none)."""
    layer = model.layers[-1]
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    activation = getattr(layer, "activation", None)
    if activation is None:
        return "linear"
    return getattr(activation, "__name__", str(activation))


def loss_name_and_logits(loss: object, from_logits: bool | None = None) -> tuple[str, bool]:
    """Normalise a loss given as a string, function or Keras Loss object to (snake_case name, from_logits)."""
    if isinstance(loss, str):
        return loss, bool(from_logits)
    if isinstance(loss, keras.losses.Loss):
        config = loss.get_config()
        name = config.get("name") or type(loss).__name__
        return _snake(name), bool(config.get("from_logits", False) if from_logits is None else from_logits)
    name = getattr(loss, "__name__", type(loss).__name__)
    return _snake(name), bool(from_logits)


def label_encoding_for(loss: object) -> LabelEncoding:
    """The label encoding a loss takes: class indices for a sparse loss, one-hot vectors for any other.

    The one place this is decided: the input pipelines encode labels by it, and the contract check
    tests the loss against it. A new kind of label (several per image) starts here.
    """
    return "sparse" if "sparse" in loss_name_and_logits(loss)[0] else "one_hot"


def _snake(name: str) -> str:
    out = []
    for index, char in enumerate(name):
        if char.isupper() and index and not name[index - 1].isupper():
            out.append("_")
        out.append(char.lower())
    return "".join(out)


def check_contract(
    *,
    model: keras.Model,
    loss: object,
    from_logits: bool | None,
    num_classes: int,
    label_encoding: str,
    multi_label: bool = False,
) -> list[Problem]:
    """Every disagreement between head, loss and labels, each with the fix. Pure: raises nothing."""
    activation = output_activation(model)
    loss_name, logits = loss_name_and_logits(loss, from_logits)
    width = model.output_shape[-1]
    problems: list[Problem] = []

    if width != num_classes and not (num_classes == 2 and width == 1):
        problems.append(
            Problem("error", f"the model outputs {width} scores but the data has {num_classes} classes; "
                    f"make the last Dense layer {num_classes} units wide")
        )
    output_dtype = getattr(model.outputs[0], "dtype", "float32") if model.outputs else "float32"
    if str(output_dtype) not in ("float32", "float64"):
        problems.append(
            Problem("error", f"the model outputs {output_dtype} scores; under mixed precision the last layer must "
                    "compute in float32 (Dense(..., dtype='float32')), or softmax rounds small probabilities to 0 "
                    "and the loss to Inf")
        )
    if loss_name not in PROBABILITY_LOSSES:
        problems.append(Problem("warning", f"loss '{loss_name}' is not a classification loss trainwell knows; "
                                "checks on it are skipped"))
        return problems

    if multi_label:
        if activation == "softmax":
            problems.append(Problem("error", "the labels are multi-label (an image may carry several classes) but the "
                                    "output is softmax, which forces the classes to compete; use a sigmoid output "
                                    "with binary_crossentropy"))
        elif loss_name != "binary_crossentropy":
            problems.append(Problem("error", f"multi-label data needs binary_crossentropy, not {loss_name}"))
        return problems

    exclusive = num_classes > 2 or width > 1
    if exclusive and loss_name in ("categorical_crossentropy", "sparse_categorical_crossentropy"):
        if activation == "sigmoid" and not logits:
            problems.append(Problem(
                "error",
                f"output activation is sigmoid but the loss is {loss_name} on {num_classes} mutually exclusive "
                "classes. Sigmoid scores each class on its own, so the outputs do not sum to 1; the loss renormalises "
                "them and its gradient pushes the wrong-class scores nowhere. Training looks fine for a while, then "
                f"the loss jumps to ln({num_classes}) = {math.log(num_classes):.2f} (chance) and the weights become "
                "NaN. Fix: use activation='softmax' on the last layer (train.output_activation: softmax), or a linear "
                "output with from_logits=True.",
            ))
        elif activation == "linear" and not logits:
            problems.append(Problem("error", f"the last layer outputs raw logits (no activation) but {loss_name} "
                                    "expects probabilities; set from_logits=True or use a softmax output"))
    if exclusive and loss_name == "binary_crossentropy" and num_classes > 2:
        problems.append(Problem("error", f"binary_crossentropy treats {num_classes} mutually exclusive classes as "
                                "independent yes/no questions; use softmax with categorical_crossentropy "
                                "(or mark the data multi-label if an image can carry several classes)"))
    if logits and activation in ("softmax", "sigmoid"):
        problems.append(Problem("error", f"from_logits=True but the output already applies {activation}: the loss "
                                f"would apply it twice; set from_logits=False or make the last layer linear"))

    if loss_name == "sparse_categorical_crossentropy" and label_encoding != "sparse":
        problems.append(Problem("error", "sparse_categorical_crossentropy expects integer labels but the labels are "
                                "one-hot; use categorical_crossentropy"))
    if loss_name == "categorical_crossentropy" and label_encoding != "one_hot":
        problems.append(Problem("error", "categorical_crossentropy expects one-hot labels but the labels are integer "
                                "class indices; use sparse_categorical_crossentropy"))
    return problems


def check_coverage(
    *,
    train_count: int,
    val_count: int,
    batch_size: int,
    steps_per_epoch: int | None = None,
    validation_steps: int | None = None,
) -> list[Problem]:
    """An epoch must see every training image and validation every validation image."""
    problems = []
    for split, count, steps in (("training", train_count, steps_per_epoch), ("validation", val_count, validation_steps)):
        if steps is None:
            continue
        seen = steps * batch_size
        if seen < count:
            problems.append(Problem("error", f"{split} uses {steps} steps x batch {batch_size} = {seen} images of "
                                    f"{count}: {count - seen} are silently dropped every epoch; remove the step "
                                    f"limit or raise it to {math.ceil(count / batch_size)}"))
    return problems


def raise_on_errors(problems: list[Problem]) -> list[Problem]:
    """Raise ContractError listing every error; return the warnings for the caller to print."""
    errors = [problem.message for problem in problems if problem.severity == "error"]
    if errors:
        raise ContractError("model contract check failed:", details=[f"- {error}" for error in errors])
    return [problem for problem in problems if problem.severity != "error"]


def check_model(model: keras.Model, *, num_classes: int, label_encoding: str | None = None,
                multi_label: bool = False) -> list[Problem]:
    """The contract check on a compiled Keras model of anyone's: its own loss against its head and the labels.

    `label_encoding` ("one_hot" or "sparse") defaults to what the loss implies; pass it when you
    know how your labels are stored. Raises ContractError when the model was never compiled.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"check_model takes a keras.Model, got {type(model).__name__}; load a file with "
                        "keras.models.load_model first")
    loss = getattr(model, "loss", None)
    if loss is None:
        raise ContractError("the model has no compiled loss; call model.compile(loss=...) before checking it")
    if label_encoding is None:
        label_encoding = label_encoding_for(loss)
    return check_contract(model=model, loss=loss, from_logits=None, num_classes=num_classes,
                          label_encoding=label_encoding, multi_label=multi_label)
