"""Stage `train`: contract check, then fit with the divergence guard; resume after a kill; never save a NaN model."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from model.contract import check_contract, check_coverage, raise_on_errors
from model.network import model_for
from pipeline.augment import BatchAugmenter, default_processes
from pipeline.dataset import SplitInput, plan_inputs, read_manifest
from pipeline.distribute import (
    build_from_local_batch,
    configure_cpu_devices,
    distribute_dataset,
    input_pipelines,
    make_strategy,
)
from pipeline.guard import DivergenceGuard, TrainingDiverged, all_finite
from pipeline.outputs import write_json
from pipeline.params import TrainParams, load_params

__all__ = ["TrainingDiverged", "train_model", "main"]

BACKUP_STATE = "state.npz"
BACKUP_META = "meta.json"


def seed_everything(seed: int, *, deterministic_ops: bool = True) -> None:
    """Python, numpy and TF seeds plus deterministic TF ops: same inputs, same weights, bit for bit."""
    keras.utils.set_random_seed(seed)
    if deterministic_ops:
        tf.config.experimental.enable_op_determinism()
    else:
        # The switch is process-wide and TF exports no public way back (an earlier run in the
        # same process, e.g. a test, may have turned it on).
        from tensorflow.python.framework import config as tf_config

        tf_config.disable_op_determinism()


def fitting_steps_per_execution(requested: int, *step_counts: int) -> int:
    """The largest value <= requested that divides every epoch's step count.

    Keras runs a compiled call of steps_per_execution batches whole, so a count that does not
    divide the epoch would pull batches of the next epoch into this one (and, for validation,
    count some images twice).
    """
    common = math.gcd(*step_counts) if step_counts else 1
    return max(value for value in range(1, requested + 1) if common % value == 0)


def weights_are_finite(model: keras.Model) -> bool:
    return all_finite(model.weights)


def compile_model(*, model: keras.Model, train: TrainParams, steps_per_execution: int = 1) -> None:
    loss_classes = {
        "categorical_crossentropy": keras.losses.CategoricalCrossentropy,
        "sparse_categorical_crossentropy": keras.losses.SparseCategoricalCrossentropy,
        "binary_crossentropy": keras.losses.BinaryCrossentropy,
    }
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=train.learning_rate),
        loss=loss_classes[train.loss](from_logits=train.from_logits),
        metrics=["accuracy"],
        jit_compile=train.jit_compile,
        steps_per_execution=steps_per_execution,
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


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> dict[int, float]:
    """n / (classes x count) per class, so every class contributes equally to the loss.

    A class with no training images keeps weight 1.0 (it never occurs, but Keras wants a key).
    """
    counts = np.bincount(labels, minlength=num_classes)
    total, present = counts.sum(), max(1, int((counts > 0).sum()))
    return {index: float(total / (present * count)) if count else 1.0 for index, count in enumerate(counts)}


def run_fingerprint(*, train: TrainParams, manifest: dict) -> str:
    """Identifies a run by its params and cached data: a backup is only resumed by the same run."""
    payload = json.dumps({"train": train.model_dump(mode="json"), "data": manifest}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


class EpochBackup(keras.callbacks.Callback):
    """After each completed epoch, write weights, optimizer state and guard incidents atomically.

    Written only at epoch ends, where the data order restarts from (seed, epoch), so a resumed
    run replays exactly the batches an uninterrupted one would see. A failed run keeps its
    backup; the stage deletes it only after the final model is saved.
    """

    def __init__(self, *, folder: Path, fingerprint: str, guard: DivergenceGuard | None) -> None:
        super().__init__()
        self.folder = folder
        self.fingerprint = fingerprint
        self.guard = guard

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        arrays = [np.asarray(v) for v in self.model.weights] + [np.asarray(v) for v in self.model.optimizer.variables]
        temporary = self.folder / f".{BACKUP_STATE}.tmp"
        with temporary.open("wb") as handle:
            np.savez(handle, *arrays)
        os.replace(temporary, self.folder / BACKUP_STATE)
        meta = {"epoch": epoch, "fingerprint": self.fingerprint, "incidents": self.guard.incidents if self.guard else []}
        write_json(self.folder / f".{BACKUP_META}.tmp", meta)
        os.replace(self.folder / f".{BACKUP_META}.tmp", self.folder / BACKUP_META)


def restore_backup(*, model: keras.Model, folder: Path, fingerprint: str) -> dict | None:
    """Load a matching backup into model and optimizer; return its meta, or None to start fresh."""
    meta_path, state_path = folder / BACKUP_META, folder / BACKUP_STATE
    if not (meta_path.exists() and state_path.exists()):
        return None
    meta = json.loads(meta_path.read_text())
    if meta.get("fingerprint") != fingerprint:
        print(f"train: ignoring the backup in {folder}: it belongs to other params or data", file=sys.stderr)
        return None
    model.optimizer.build(model.trainable_variables)
    targets = list(model.weights) + list(model.optimizer.variables)
    with np.load(state_path) as state:
        arrays = [state[f"arr_{index}"] for index in range(len(state.files))]
    if len(arrays) != len(targets):
        print(f"train: ignoring the backup in {folder}: it does not match this model", file=sys.stderr)
        return None
    for variable, value in zip(targets, arrays):
        variable.assign(value)
    return meta


def train_model(
    *, cache_dir: str, train: TrainParams, log_dir: str | None, backup_dir: str | None = None
) -> tuple[keras.Model, dict]:
    """Build, check and fit; return the model and a summary. Raises ContractError before any step."""
    # Devices and the strategy come first: TF must not have started, and multi-worker collectives
    # must be set up before any other op.
    configure_cpu_devices(train.cpu_devices)
    strategy = make_strategy(train.strategy)
    replicas = strategy.num_replicas_in_sync
    # Keras turns XLA off while op determinism is on (not every XLA kernel is deterministic):
    # jit_compile trades bit-exact reruns for speed.
    seed_everything(train.seed, deterministic_ops=not train.jit_compile)
    if train.jit_compile:
        print("train: XLA on; TF op determinism off, so reruns may differ in the last bits")
    inputs = plan_inputs(cache_dir=cache_dir, splits=["train", "val"], memory_budget_bytes=train.memory_budget_mb << 20)
    train_input, val_input = inputs["train"], inputs["val"]
    train_split, val_split = train_input.split, val_input.split
    for name, plan in inputs.items():
        if plan.streaming:
            print(f"train: streaming the {name} split from {len(plan.split.counts)} shards "
                  f"({plan.split.image_bytes / 2**20:.0f} MiB > train.memory_budget_mb)")
    one_hot = train.loss != "sparse_categorical_crossentropy"
    num_classes, train_count = train_split.num_classes, len(train_split.labels)
    workers = input_pipelines(strategy)
    layout = dict(batch_size=train.batch_size, replicas=replicas, workers=workers)
    steps = train_input.steps(**layout)
    if train_input.shards_by_worker(workers):
        left_out = train_count - sum(train_input.step_sizes(seed=train.seed, epoch=0, **layout))
        print(f"train: {workers} workers shard the streamed training split by shard: each reads only its own "
              f"stretch of the {len(train_split.counts)} shards per epoch, {train.batch_size // workers} images a "
              f"step; the epoch's last worker batches that do not fill a step sit out ({left_out} of {train_count} "
              "images in epoch 1), a different set every epoch")
    validation_steps = val_input.steps(batch_size=train.batch_size, replicas=min(replicas, len(val_split.labels)))
    steps_per_execution = fitting_steps_per_execution(
        train.steps_per_execution, steps, *([validation_steps] if validation_steps else [])
    )
    if steps_per_execution != train.steps_per_execution:
        print(f"train: steps_per_execution {steps_per_execution} instead of {train.steps_per_execution}, to divide "
              f"the {steps} training and {validation_steps} validation steps of an epoch")
    with strategy.scope():
        model = build_network(train=train, num_classes=num_classes, image_size=train_split.image_shape[0])
        compile_model(model=model, train=train, steps_per_execution=steps_per_execution)
        # Adam's slots are built now, inside the scope, so they mirror like the weights do
        # (the guard snapshots them and a resumed run restores them).
        model.optimizer.build(model.trainable_variables)
    build_from_local_batch(model, strategy)
    if replicas > 1:
        print(f"train: {train.strategy} strategy over {replicas} replicas; global batch {train.batch_size}")
    problems = check_contract(
        model=model,
        loss=train.loss,
        from_logits=train.from_logits,
        num_classes=num_classes,
        label_encoding="one_hot" if one_hot else "sparse",
    )
    # Both step counts are what fit() gets: the check confirms that no image is left out of an
    # epoch (the story's validation_steps=25 over 800 images). Measured against the largest batch
    # the plan really holds: a remainder too small for every replica joins the batch before it.
    def largest_batch(plan: SplitInput, replicas: int) -> int:
        return max(plan.step_sizes(seed=train.seed, epoch=0, batch_size=train.batch_size, replicas=replicas),
                   default=train.batch_size)

    if not train_input.shards_by_worker(workers):  # that plan's rotating remainder is by design (printed above)
        problems += check_coverage(train_count=train_count, val_count=0,
                                   batch_size=largest_batch(train_input, replicas), steps_per_epoch=steps)
    if validation_steps:
        problems += check_coverage(
            train_count=0, val_count=len(val_split.labels), validation_steps=validation_steps,
            batch_size=largest_batch(val_input, min(replicas, len(val_split.labels))),
        )
    for warning in raise_on_errors(problems):
        print(f"train: WARNING {warning.message}", file=sys.stderr)

    fingerprint = run_fingerprint(train=train, manifest=read_manifest(cache_dir))
    first_epoch, earlier_incidents = 0, []
    if backup_dir is not None and train.resume:
        with strategy.scope():
            meta = restore_backup(model=model, folder=Path(backup_dir), fingerprint=fingerprint)
        if meta is not None:
            first_epoch, earlier_incidents = meta["epoch"] + 1, meta["incidents"]
            print(f"train: resuming after epoch {first_epoch} from the backup in {backup_dir}")

    def paths_for_batch(epoch: int, step: int) -> list[str]:
        if step >= steps:
            return []
        indices = train_input.epoch_batches(seed=train.seed, epoch=epoch, **layout)[step]
        return [train_split.paths[int(index)] for index in indices]

    guard_params = train.guard
    guard = None
    callbacks: list[keras.callbacks.Callback] = []
    if guard_params.enabled:
        guard = DivergenceGuard(
            check_every=guard_params.check_every,
            spike_factor=guard_params.spike_factor,
            spike_window=guard_params.spike_window,
            lr_factor=guard_params.lr_factor,
            max_rollbacks=guard_params.max_rollbacks,
            chance_loss=math.log(num_classes),
            batch_size=train.batch_size,
            train_count=train_count,
            paths_for_batch=paths_for_batch,
            batch_sizes=lambda epoch: train_input.step_sizes(seed=train.seed, epoch=epoch, **layout),
            steps_per_execution=steps_per_execution,
        )
        guard.incidents.extend(earlier_incidents)
        callbacks.append(guard)
    else:
        callbacks.append(keras.callbacks.TerminateOnNaN())
    if backup_dir is not None:
        callbacks.append(EpochBackup(folder=Path(backup_dir), fingerprint=fingerprint, guard=guard))
    if log_dir is not None:
        from dvclive import Live
        from dvclive.keras import DVCLiveCallback

        # dvcyaml=None: the project's dvc.yaml declares these metrics and plots itself;
        # letting dvclive rewrite dvc.yaml would change a file the user owns.
        live = Live(dir=log_dir, dvcyaml=None, save_dvc_exp=False, report=None)
        callbacks.append(DVCLiveCallback(live=live))

    class_weights = None
    if train.class_weight == "balanced":
        class_weights = balanced_class_weights(train_split.labels, num_classes)
        print("train: class weights " + ", ".join(
            f"{train_split.classes[index]} {weight:.3f}" for index, weight in class_weights.items()))
    common = dict(num_classes=num_classes, batch_size=train.batch_size, one_hot=one_hot)
    # Built here so a bad transform name or argument stops the stage before the first step.
    augmenter = None
    if train.augment:
        processes = default_processes() if train.augment_processes is None else train.augment_processes
        augmenter = BatchAugmenter(train.augment, processes=processes)
    train_data = distribute_dataset(strategy, lambda **shard: train_input.train_dataset(
        seed=train.seed, first_epoch=first_epoch, epochs=train.epochs, class_weights=class_weights,
        augmenter=augmenter, **common, **shard))
    # Repeated, with validation_steps = one full pass: Keras keeps one validation iterator
    # across epochs when validation_steps is given.
    val_data = distribute_dataset(strategy, lambda **shard: val_input.eval_dataset(**common, **shard).repeat())
    verbose = 2 if not sys.stdout.isatty() else "auto"
    history = model.fit(
        train_data,
        validation_data=val_data,
        epochs=train.epochs,
        initial_epoch=first_epoch,
        steps_per_epoch=steps,
        # The exact number of validation batches (all of them): a distributed dataset has no
        # length Keras can read, and guessing would end on an "ran out of data" warning.
        validation_steps=validation_steps or None,
        callbacks=callbacks,
        verbose=verbose,
    )
    summary = {
        "train_images": int(train_count),
        "val_images": int(len(val_split.labels)),
        "first_epoch": first_epoch,
        "epochs_run": len(history.history.get("loss", [])),
        "incidents": guard.incidents if guard else [],
    }
    return model, summary


def main(*, params_file: str = "params.yaml") -> int:
    params = load_params(params_file)
    paths = params.paths
    incidents_file = Path(paths.train_report_dir) / "incidents.json"
    try:
        model, summary = train_model(
            cache_dir=paths.cache_dir, train=params.train, log_dir=paths.train_log_dir, backup_dir=paths.train_backup_dir
        )
    except TrainingDiverged as diverged:
        write_json(incidents_file, diverged.incidents)
        raise
    write_json(incidents_file, summary["incidents"])
    if not weights_are_finite(model):
        raise TrainingDiverged(
            f"the trained weights contain NaN or Inf; the model was NOT saved. Lower train.learning_rate, "
            f"check the audit report, and see {incidents_file}"
        )
    Path(paths.model).parent.mkdir(parents=True, exist_ok=True)
    model.save(paths.model)
    # The backup is trainwell's own scratch state, never user data: drop it once the model is safe.
    shutil.rmtree(paths.train_backup_dir, ignore_errors=True)
    incidents = len(summary["incidents"])
    print(
        f"train: epochs {summary['first_epoch'] + 1}-{summary['first_epoch'] + summary['epochs_run']} over "
        f"{summary['train_images']} training and {summary['val_images']} validation images; "
        f"{incidents} guard incident(s); model saved to {paths.model}"
    )
    return 0
