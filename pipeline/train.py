"""Stage `train`: contract check, then fit the CNN on the cache with full epochs; never save a NaN model."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from model.contract import check_contract, check_coverage, raise_on_errors
from model.network import build_model
from pipeline.dataset import load_split, make_dataset
from pipeline.errors import TrainwellError
from pipeline.outputs import write_json
from pipeline.params import TrainParams, load_params


class TrainingDiverged(TrainwellError):
    """Training produced a non-finite loss or weights; nothing was saved."""


class NonFiniteStop(keras.callbacks.Callback):
    """Stop at the first non-finite batch loss and record where it happened.

    Unlike Keras' TerminateOnNaN it keeps the incident (epoch, step, loss) so the stage
    can report it and write reports/train/incidents.json.
    """

    def __init__(self) -> None:
        super().__init__()
        self.incidents: list[dict] = []
        self._epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.incidents.append({"epoch": self._epoch, "step": batch, "loss": str(float(loss)), "action": "stopped"})
            self.model.stop_training = True


def seed_everything(seed: int) -> None:
    """Python, numpy and TF seeds plus deterministic TF ops: same inputs, same weights, bit for bit."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def weights_are_finite(model: keras.Model) -> bool:
    return all(np.isfinite(np.asarray(weight)).all() for weight in model.get_weights())


def compile_model(*, model: keras.Model, train: TrainParams) -> None:
    loss_classes = {
        "categorical_crossentropy": keras.losses.CategoricalCrossentropy,
        "sparse_categorical_crossentropy": keras.losses.SparseCategoricalCrossentropy,
        "binary_crossentropy": keras.losses.BinaryCrossentropy,
    }
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=train.learning_rate),
        loss=loss_classes[train.loss](from_logits=train.from_logits),
        metrics=["accuracy"],
    )


def train_model(*, cache_dir: str, train: TrainParams, log_dir: str | None) -> tuple[keras.Model, dict]:
    """Build, check and fit; return the model and a summary. Raises ContractError before any step."""
    seed_everything(train.seed)
    train_split = load_split(cache_dir=cache_dir, split="train")
    val_split = load_split(cache_dir=cache_dir, split="val")
    one_hot = train.loss != "sparse_categorical_crossentropy"
    image_size = train_split.images.shape[1]
    model = build_model(
        num_classes=train_split.num_classes,
        image_size=image_size,
        conv_filters=train.conv_filters,
        kernel_size=train.kernel_size,
        dense_units=train.dense_units,
        output_activation=train.output_activation,
    )
    compile_model(model=model, train=train)
    problems = check_contract(
        model=model,
        loss=train.loss,
        from_logits=train.from_logits,
        num_classes=train_split.num_classes,
        label_encoding="one_hot" if one_hot else "sparse",
    )
    # No steps_per_epoch / validation_steps are ever passed to fit(): the datasets are finite
    # and every epoch covers both splits completely. The check documents and enforces that.
    problems += check_coverage(
        train_count=len(train_split.labels), val_count=len(val_split.labels), batch_size=train.batch_size
    )
    for warning in raise_on_errors(problems):
        print(f"train: WARNING {warning.message}", file=sys.stderr)

    common = dict(num_classes=train_split.num_classes, batch_size=train.batch_size, seed=train.seed, one_hot=one_hot)
    train_data = make_dataset(images=train_split.images, labels=train_split.labels, shuffle=True, **common)
    val_data = make_dataset(images=val_split.images, labels=val_split.labels, shuffle=False, **common)

    guard = NonFiniteStop()
    callbacks: list[keras.callbacks.Callback] = [guard]
    if log_dir is not None:
        from dvclive import Live
        from dvclive.keras import DVCLiveCallback

        # dvcyaml=None: the project's dvc.yaml declares these metrics and plots itself;
        # letting dvclive rewrite dvc.yaml would change a file the user owns.
        live = Live(dir=log_dir, dvcyaml=None, save_dvc_exp=False, report=None)
        callbacks.append(DVCLiveCallback(live=live))
    verbose = 2 if not sys.stdout.isatty() else "auto"
    history = model.fit(train_data, validation_data=val_data, epochs=train.epochs, callbacks=callbacks, verbose=verbose)
    summary = {
        "train_images": int(len(train_split.labels)),
        "val_images": int(len(val_split.labels)),
        "epochs_run": len(history.history.get("loss", [])),
        "incidents": guard.incidents,
    }
    return model, summary


def main(*, params_file: str = "params.yaml") -> int:
    params = load_params(params_file)
    paths = params.paths
    model, summary = train_model(cache_dir=paths.cache_dir, train=params.train, log_dir=paths.train_log_dir)
    write_json(Path(paths.train_report_dir) / "incidents.json", summary["incidents"])
    if summary["incidents"] or not weights_are_finite(model):
        where = summary["incidents"][0] if summary["incidents"] else {}
        raise TrainingDiverged(
            f"training diverged (non-finite loss at epoch {where.get('epoch', '?')}, step {where.get('step', '?')}); "
            f"the model was NOT saved. Lower train.learning_rate, check the audit report, and see "
            f"{Path(paths.train_report_dir) / 'incidents.json'}"
        )
    Path(paths.model).parent.mkdir(parents=True, exist_ok=True)
    model.save(paths.model)
    print(
        f"train: {summary['epochs_run']} epochs over {summary['train_images']} training and "
        f"{summary['val_images']} validation images; model saved to {paths.model}"
    )
    return 0


