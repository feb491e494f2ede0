"""`trainwell doctor`: run the model contract check alone, on our model or a user's Keras file."""

from __future__ import annotations

import warnings

from trainwell.console import say, warn
from trainwell.data.cache import read_cache_manifest
from trainwell.errors import ContractError
from trainwell.outputs import guarded, protect_inputs
from trainwell.params import load_params
from trainwell.training.contract import check_contract, check_model, label_encoding_for, raise_on_errors
from trainwell.training.model_files import load_model_file


@guarded
def main(*, params_file: str = "params.yaml", model_file: str | None = None, trust_model: bool = False) -> int:
    from trainwell.training.network import compile_model, model_for

    params = load_params(params_file)
    protect_inputs(inputs=[params_file, model_file])  # writes nothing; guarded like every command
    cache_manifest = read_cache_manifest(params.paths.cache_dir)
    num_classes = len(cache_manifest["classes"])
    train = params.train
    if model_file is None:
        model = model_for(train, num_classes=num_classes, image_size=cache_manifest["image_shape"][0])
        compile_model(model=model, train=train)
        problems = check_contract(model=model, loss=train.loss, from_logits=train.from_logits,
                                  num_classes=num_classes, label_encoding=label_encoding_for(train.loss))
    else:
        with warnings.catch_warnings():
            # Loading restores the optimizer too; doctor never trains, so a saved optimizer that was
            # never built (or one wrapped for mixed precision) is no concern of its.
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            model = load_model_file(model_file, trust=trust_model)
        if getattr(model, "loss", None) is None:
            raise ContractError(f"'{model_file}' was saved without a compiled loss; compile it before saving")
        # trainwell's pipeline feeds labels as label_encoding_for(the model's loss) says; check_model asks it.
        problems = check_model(model, num_classes=num_classes)
    for warning in raise_on_errors(problems):
        warn(f"doctor: WARNING {warning.message}")
    say(f"doctor: model, loss and {num_classes}-class single-label data agree")
    return 0
