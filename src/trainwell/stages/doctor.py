"""`trainwell doctor`: run the model contract check alone, on our model or a user's Keras file."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from trainwell.data.cache import read_manifest
from trainwell.errors import ContractError
from trainwell.params import load_params
from trainwell.training.contract import check_contract, raise_on_errors


def main(*, params_file: str = "params.yaml", model_file: str | None = None) -> int:
    import keras

    from trainwell.training.network import compile_model, model_for

    params = load_params(params_file)
    manifest = read_manifest(params.paths.cache_dir)
    num_classes = len(manifest["classes"])
    train = params.train
    if model_file is None:
        model = model_for(train, num_classes=num_classes, image_size=manifest["image_shape"][0])
        compile_model(model=model, train=train)
        loss, from_logits = train.loss, train.from_logits
        label_encoding = "sparse" if train.loss == "sparse_categorical_crossentropy" else "one_hot"
    else:
        if not Path(model_file).is_file():
            raise ContractError(f"model file '{model_file}' does not exist; pass the path of a saved .keras model")
        with warnings.catch_warnings():
            # Loading restores the optimizer too; doctor never trains, so a saved optimizer that was
            # never built (or one wrapped for mixed precision) is no concern of its.
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            model = keras.models.load_model(model_file)
        if getattr(model, "loss", None) is None:
            raise ContractError(f"'{model_file}' was saved without a compiled loss; compile it before saving")
        loss, from_logits = model.loss, None
        # trainwell's pipeline feeds one-hot labels to any loss but the sparse one.
        label_encoding = "sparse" if "sparse" in str(getattr(loss, "name", loss)) else "one_hot"
    problems = check_contract(
        model=model, loss=loss, from_logits=from_logits, num_classes=num_classes, label_encoding=label_encoding
    )
    for warning in raise_on_errors(problems):
        print(f"doctor: WARNING {warning.message}", file=sys.stderr)
    print(f"doctor: model, loss and {num_classes}-class single-label data agree")
    return 0
