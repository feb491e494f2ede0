"""`trainwell doctor`: run the model contract check alone, on our model or a user's Keras file."""

from __future__ import annotations

import warnings
from pathlib import Path

from trainwell.console import say, warn
from trainwell.data.cache import read_manifest
from trainwell.errors import ContractError, UsageError
from trainwell.params import load_params
from trainwell.training.contract import check_contract, check_model, raise_on_errors


def main(*, params_file: str = "params.yaml", model_file: str | None = None, trust_model: bool = False) -> int:
    import keras

    from trainwell.training.network import compile_model, model_for

    params = load_params(params_file)
    manifest = read_manifest(params.paths.cache_dir)
    num_classes = len(manifest["classes"])
    train = params.train
    if model_file is None:
        model = model_for(train, num_classes=num_classes, image_size=manifest["image_shape"][0])
        compile_model(model=model, train=train)
        label_encoding = "sparse" if train.loss == "sparse_categorical_crossentropy" else "one_hot"
        problems = check_contract(model=model, loss=train.loss, from_logits=train.from_logits,
                                  num_classes=num_classes, label_encoding=label_encoding)
    else:
        path = Path(model_file)
        if not path.exists():
            raise UsageError(f"model file '{model_file}' does not exist; pass the path of a saved .keras model")
        if (path.suffix.lower() != ".keras" or not path.is_file()) and not trust_model:
            # Keras' HDF5 and SavedModel loaders run code stored in the file (a Lambda layer) whatever
            # safe_mode says; only the .keras format honours it.
            raise UsageError(f"'{model_file}' is not a .keras file: HDF5 (.h5) and SavedModel files can run code "
                             "stored in them when loaded. Re-save it as .keras (model.save('model.keras')) or, only "
                             "for a file you trust, pass --trust-model")
        with warnings.catch_warnings():
            # Loading restores the optimizer too; doctor never trains, so a saved optimizer that was
            # never built (or one wrapped for mixed precision) is no concern of its.
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            try:
                model = keras.models.load_model(model_file, safe_mode=not trust_model)
            except Exception as exc:  # a broken or hostile file must read as that, not as a bug in trainwell
                raise UsageError(f"'{model_file}' could not be loaded as a Keras model ({type(exc).__name__}: "
                                 f"{str(exc)[:300]}); pass a model saved with model.save('model.keras')") from None
        if getattr(model, "loss", None) is None:
            raise ContractError(f"'{model_file}' was saved without a compiled loss; compile it before saving")
        # trainwell's pipeline feeds one-hot labels to any loss but the sparse one.
        problems = check_model(model, num_classes=num_classes)
    for warning in raise_on_errors(problems):
        warn(f"doctor: WARNING {warning.message}")
    say(f"doctor: model, loss and {num_classes}-class single-label data agree")
    return 0
