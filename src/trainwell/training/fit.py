"""Training from the build cache, cut along its phases: runtime, input plan, model, pre-flight checks, resume, callbacks, fit."""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from trainwell.console import NORMAL, say, shown, verbosity, warn
from trainwell.data.cache import read_cache_manifest
from trainwell.params import NO_WEIGHTS, TrainParams
from trainwell.training.augment import BatchAugmenter, default_processes
from trainwell.training.backbone import backbone_of, set_backbone_frozen, weights_digest, weights_path
from trainwell.training.backup import EpochBackup, read_backup, restore_state, run_fingerprint
from trainwell.training.batch_plan import fitting_steps_per_execution
from trainwell.training.contract import Problem, check_contract, check_coverage, label_encoding_for, raise_on_errors
from trainwell.training.curves import CurveLog
from trainwell.training.distribute import (
    build_from_local_batch,
    configure_cpu_devices,
    distribute_dataset,
    input_pipelines,
    make_strategy,
    seed_everything,
)
from trainwell.training.guard import BatchTrace, DivergenceGuard, Incident, all_finite
from trainwell.training.inputs import BatchSpec, SplitInput, plan_inputs
from trainwell.training.network import build_network, compile_model


@dataclass(frozen=True)
class TrainSummary:
    """What one train_model run did: the split sizes it read, the epochs it ran and the guard's incidents."""

    train_images: int
    val_images: int
    first_epoch: int  # 0-based; above 0 when the run resumed from a backup
    epochs_run: int
    incidents: list[Incident]


def weights_are_finite(model: keras.Model) -> bool:
    return all_finite(model.weights)


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> dict[int, float]:
    """n / (classes x count) per class, so every class contributes equally to the loss.

    A class with no training images keeps weight 1.0 (it never occurs, but Keras wants a key).
    """
    counts = np.bincount(labels, minlength=num_classes)
    total, present = counts.sum(), max(1, int((counts > 0).sum()))
    return {index: float(total / (present * count)) if count else 1.0 for index, count in enumerate(counts)}


# -- phase 1: runtime ----------------------------------------------------------------------------


def set_up_runtime(train: TrainParams) -> tf.distribute.Strategy:
    """Devices, the strategy and seeds, in the order TensorFlow needs them."""
    # Devices and the strategy come first: TF must not have started, and multi-worker collectives
    # must be set up before any other op.
    configure_cpu_devices(train.cpu_devices, strategy=train.strategy)
    strategy = make_strategy(train.strategy)
    # Keras turns XLA off while op determinism is on (not every XLA kernel is deterministic):
    # jit_compile trades bit-exact reruns for speed.
    seed_everything(train.seed, deterministic_ops=not train.jit_compile)
    if train.jit_compile:
        say("train: XLA on; TF op determinism off, so reruns may differ in the last bits")
    if strategy.num_replicas_in_sync > 1:
        say(f"train: {train.strategy} strategy over {strategy.num_replicas_in_sync} replicas; "
              f"global batch {train.batch_size}")
    return strategy


# -- phase 2: the input plan ---------------------------------------------------------------------


@dataclass
class InputPlan:
    """Both splits' inputs and the step counts fit() is given."""

    train: SplitInput
    val: SplitInput
    batch_size: int
    seed: int
    replicas: int
    workers: int
    steps: int
    validation_steps: int
    steps_per_execution: int

    @property
    def val_replicas(self) -> int:
        return min(self.replicas, len(self.val.split.labels))

    def step_sizes(self, epoch: int) -> list[int]:
        return self.train.step_sizes(seed=self.seed, epoch=epoch, batch_size=self.batch_size,
                                     replicas=self.replicas, workers=self.workers)

    def batch_files(self, epoch: int, step: int) -> list[str]:
        """Source files of training step `step` of `epoch` (for the guard's incident records)."""
        if step >= self.steps:
            return []
        indices = self.train.epoch_batches(seed=self.seed, epoch=epoch, batch_size=self.batch_size,
                                           replicas=self.replicas, workers=self.workers)[step]
        return [self.train.split.paths[int(index)] for index in indices]


def plan_training_inputs(*, cache_dir: str, train: TrainParams, strategy: tf.distribute.Strategy) -> InputPlan:
    """Memory or streaming per split, step counts, and steps per execution that divide both epochs."""
    inputs = plan_inputs(cache_dir=cache_dir, splits=["train", "val"], memory_budget_bytes=train.memory_budget_mb << 20)
    for name, split_input in inputs.items():
        if split_input.streaming:
            say(f"train: streaming the {name} split from {len(split_input.split.counts)} shards "
                  f"({split_input.split.image_bytes / 2**20:.0f} MiB > train.memory_budget_mb)")
    replicas, workers = strategy.num_replicas_in_sync, input_pipelines(strategy)
    train_input, val_input = inputs["train"], inputs["val"]
    steps = train_input.steps(batch_size=train.batch_size, replicas=replicas, workers=workers)
    validation_steps = val_input.steps(batch_size=train.batch_size,
                                       replicas=min(replicas, len(val_input.split.labels)))
    steps_per_execution = fitting_steps_per_execution(
        train.steps_per_execution, steps, *([validation_steps] if validation_steps else []))
    if steps_per_execution != train.steps_per_execution:
        say(f"train: steps_per_execution {steps_per_execution} instead of {train.steps_per_execution}, to divide "
              f"the {steps} training and {validation_steps} validation steps of an epoch")
    plan = InputPlan(train=train_input, val=val_input, batch_size=train.batch_size, seed=train.seed,
                     replicas=replicas, workers=workers, steps=steps, validation_steps=validation_steps,
                     steps_per_execution=steps_per_execution)
    if train_input.shards_by_worker(workers):
        count = len(train_input.split.labels)
        left_out = count - sum(plan.step_sizes(0))
        say(f"train: {workers} workers shard the streamed training split by shard: each reads only its own "
              f"stretch of the {len(train_input.split.counts)} shards per epoch, {train.batch_size // workers} "
              f"images a step; the epoch's last worker batches that do not fill a step sit out ({left_out} of "
              f"{count} images in epoch 1), a different set every epoch")
    return plan


# -- phase 3: the model ------------------------------------------------------------------------


@dataclass(frozen=True)
class Stretch:
    """Epochs first..end-1 trained by one fit(): with the backbone frozen or not, at one learning rate."""

    first_epoch: int
    end_epoch: int
    frozen: bool
    learning_rate: float


def training_stretches(train: TrainParams) -> list[Stretch]:
    """One stretch, or for a backbone with frozen_epochs: the head alone, then the whole network fine-tuned."""
    if not train.frozen_epochs:
        return [Stretch(0, train.epochs, False, train.learning_rate)]
    stretches = [Stretch(0, train.frozen_epochs, True, train.learning_rate)]
    if train.frozen_epochs < train.epochs:
        stretches.append(Stretch(train.frozen_epochs, train.epochs, False, train.fine_tune_learning_rate))
    return stretches


def stretch_of(stretches: list[Stretch], epoch: int) -> Stretch:
    return next(stretch for stretch in stretches if epoch < stretch.end_epoch)


def enter_stretch(*, model: keras.Model, train: TrainParams, plan: InputPlan, strategy: tf.distribute.Strategy,
                  stretch: Stretch) -> None:
    """Freeze or release the backbone and compile with a fresh Adam at the stretch's learning rate.

    Compiling again is what makes fit() train the variables that are trainable now; the optimizer
    is new, so its state starts from zero, as at the start of a run.
    """
    with strategy.scope():
        if backbone_of(model) is not None:
            set_backbone_frozen(model, stretch.frozen, pretrained=train.weights != NO_WEIGHTS)
        compile_model(model=model, train=train, steps_per_execution=plan.steps_per_execution,
                      learning_rate=stretch.learning_rate)
        # Adam's slots are built now, inside the scope, so they mirror like the weights do
        # (the guard snapshots them and a resumed run restores them).
        model.optimizer.build(model.trainable_variables)


def build_compiled_model(*, train: TrainParams, plan: InputPlan, strategy: tf.distribute.Strategy) -> keras.Model:
    """The network, compiled for the run's first stretch of epochs."""
    with strategy.scope():
        model = build_network(train=train, num_classes=plan.train.split.num_classes,
                              image_size=plan.train.split.image_shape[0])
    enter_stretch(model=model, train=train, plan=plan, strategy=strategy, stretch=training_stretches(train)[0])
    build_from_local_batch(model, strategy)
    return model


# -- phase 4: pre-flight checks ----------------------------------------------------------------


def preflight_problems(*, model: keras.Model, train: TrainParams, plan: InputPlan) -> list[Problem]:
    """The model contract, and that the step counts fit() gets cover every image of both splits."""
    problems = check_contract(model=model, loss=train.loss, from_logits=train.from_logits,
                              num_classes=plan.train.split.num_classes, label_encoding=label_encoding_for(train.loss))

    # Measured against the largest batch the plan really holds: a remainder too small for
    # every replica joins the batch before it (a validation_steps=25 at batch 32 over 800 images leaves none out; 20 would skip 160).
    def largest_batch(split_input: SplitInput, replicas: int) -> int:
        sizes = split_input.step_sizes(seed=train.seed, epoch=0, batch_size=train.batch_size, replicas=replicas)
        return max(sizes, default=train.batch_size)

    if not plan.train.shards_by_worker(plan.workers):  # that plan's rotating remainder is by design
        problems += check_coverage(train_count=len(plan.train.split.labels), val_count=0,
                                   batch_size=largest_batch(plan.train, plan.replicas), steps_per_epoch=plan.steps)
    if plan.validation_steps:
        problems += check_coverage(train_count=0, val_count=len(plan.val.split.labels),
                                   validation_steps=plan.validation_steps,
                                   batch_size=largest_batch(plan.val, plan.val_replicas))
    return problems


# -- phase 5: resume -----------------------------------------------------------------------------


def resume_point(*, model: keras.Model, train: TrainParams, plan: InputPlan, strategy: tf.distribute.Strategy,
                 backup_dir: str | None, fingerprint: str) -> tuple[int, list[Incident]]:
    """(first epoch, incidents so far): from a matching backup, or (0, []) for a fresh run.

    The model leaves compiled for the stretch of the backup's epoch (its optimizer state is that
    stretch's); train_model moves on to the next stretch as an uninterrupted run would.
    """
    if backup_dir is None:
        return 0, []
    meta = read_backup(folder=Path(backup_dir), fingerprint=fingerprint)
    if meta is None:
        return 0, []
    stretches = training_stretches(train)
    saved_in = stretch_of(stretches, meta["epoch"])
    if saved_in != stretches[0]:
        enter_stretch(model=model, train=train, plan=plan, strategy=strategy, stretch=saved_in)
    with strategy.scope():
        restored = restore_state(model=model, folder=Path(backup_dir))
    if not restored:
        if saved_in != stretches[0]:
            enter_stretch(model=model, train=train, plan=plan, strategy=strategy, stretch=stretches[0])
        return 0, []
    say(f"train: resuming after epoch {meta['epoch'] + 1} from the backup in {shown(backup_dir)}")
    return meta["epoch"] + 1, meta["incidents"]


# -- phase 6: callbacks --------------------------------------------------------------------------


def training_callbacks(*, train: TrainParams, plan: InputPlan, log_dir: str | None, backup_dir: str | None,
                       fingerprint: str, earlier_incidents: list[Incident]) -> tuple[list, DivergenceGuard | None]:
    """The guard (or TerminateOnNaN when it is off), the epoch backup and the curves DVC plots."""
    guard = None
    callbacks: list[keras.callbacks.Callback] = []
    if train.guard.enabled:
        guard = DivergenceGuard(num_classes=plan.train.split.num_classes, policy=train.guard,
                                trace=BatchTrace(sizes=plan.step_sizes, files=plan.batch_files),
                                steps_per_execution=plan.steps_per_execution)
        guard.incidents.extend(earlier_incidents)
        callbacks.append(guard)
    else:
        callbacks.append(keras.callbacks.TerminateOnNaN())
    if backup_dir is not None:
        callbacks.append(EpochBackup(folder=Path(backup_dir), fingerprint=fingerprint, guard=guard))
    if log_dir is not None:
        callbacks.append(CurveLog(log_dir))
    return callbacks, guard


# -- phase 7: fit ------------------------------------------------------------------------------


def make_augmenter(train: TrainParams) -> BatchAugmenter | None:
    """train.augment's transforms, built now so a bad name or argument stops the stage before the first step."""
    if not train.augment:
        return None
    processes = default_processes() if train.augment_processes is None else train.augment_processes
    return BatchAugmenter(train.augment, processes=processes)


def fit_model(*, model: keras.Model, train: TrainParams, plan: InputPlan, strategy: tf.distribute.Strategy,
              first_epoch: int, callbacks: list, end_epoch: int | None = None,
              augmenter: BatchAugmenter | None = None) -> keras.callbacks.History:
    """One fit() over epochs first_epoch..end_epoch-1 (default: to train.epochs), in the (seed, epoch) data order."""
    end_epoch = train.epochs if end_epoch is None else end_epoch
    class_weights = None
    split = plan.train.split
    if train.class_weight == "balanced":
        class_weights = balanced_class_weights(split.labels, split.num_classes)
        say("train: class weights " + ", ".join(
            f"{split.classes[index]} {weight:.3f}" for index, weight in class_weights.items()))
    if augmenter is None:
        augmenter = make_augmenter(train)
    spec = BatchSpec(num_classes=split.num_classes, batch_size=train.batch_size,
                     one_hot=label_encoding_for(train.loss) == "one_hot", seed=train.seed, first_epoch=first_epoch,
                     epochs=end_epoch, class_weights=class_weights, augmenter=augmenter)
    train_data = distribute_dataset(strategy, lambda **shard: plan.train.train_dataset(replace(spec, **shard)))
    # Repeated, with validation_steps = one full pass: whether Keras keeps one validation
    # iterator across epochs has changed between versions (3.15 starts one per validation);
    # either way every validation reads the whole split once (eval_dataset: in file order,
    # without the class weights and augmenter).
    val_data = distribute_dataset(strategy, lambda **shard: plan.val.eval_dataset(replace(spec, **shard)).repeat())
    return model.fit(
        train_data,
        validation_data=val_data,
        epochs=end_epoch,
        # The order is the pipeline's own, seeded by (seed, epoch); Keras has nothing to shuffle
        # in a dataset and says so on every run unless told.
        shuffle=False,
        initial_epoch=first_epoch,
        steps_per_epoch=plan.steps,
        # The exact number of validation batches (all of them): a distributed dataset has no
        # length Keras can read, and guessing would end on an "ran out of data" warning.
        validation_steps=plan.validation_steps or None,
        callbacks=callbacks,
        # One line per epoch in logs, a progress bar on a terminal, nothing under -q.
        verbose=0 if verbosity() < NORMAL else 2 if not sys.stdout.isatty() else "auto",
    )


def train_model(
    *, cache_dir: str, train: TrainParams, log_dir: str | None, backup_dir: str | None = None
) -> tuple[keras.Model, TrainSummary]:
    """Build, check and fit; return the model and a summary. Raises ContractError before any step.

    With a backbone and train.frozen_epochs, two fit() calls share the callbacks (guard, backup,
    curves): the frozen epochs, then the fine-tuning ones from initial_epoch=frozen_epochs.
    """
    # The weights file first: a missing one is a params error before TensorFlow starts.
    digest = weights_digest(weights_path(train))
    strategy = set_up_runtime(train)
    plan = plan_training_inputs(cache_dir=cache_dir, train=train, strategy=strategy)
    model = build_compiled_model(train=train, plan=plan, strategy=strategy)
    for warning in raise_on_errors(preflight_problems(model=model, train=train, plan=plan)):
        warn(f"train: WARNING {warning.message}")
    fingerprint = run_fingerprint(train=train, cache_manifest=read_cache_manifest(cache_dir), weights_sha256=digest)
    first_epoch, earlier_incidents = (
        resume_point(model=model, train=train, plan=plan, strategy=strategy, backup_dir=backup_dir,
                     fingerprint=fingerprint)
        if train.resume else (0, []))
    callbacks, guard = training_callbacks(train=train, plan=plan, log_dir=log_dir, backup_dir=backup_dir,
                                          fingerprint=fingerprint, earlier_incidents=earlier_incidents)
    augmenter = make_augmenter(train)  # one for every fit(): its worker processes start once
    stretches = training_stretches(train)
    current = stretch_of(stretches, max(first_epoch - 1, 0))  # what the model is compiled for now
    epochs_run = 0
    for stretch in stretches:
        if stretch.end_epoch <= first_epoch:
            continue
        if stretch != current:
            if current.frozen and not stretch.frozen:
                say(f"train: backbone released after {stretch.first_epoch} frozen epoch(s); fine-tuning the whole "
                    f"network at learning rate {stretch.learning_rate:g}")
            enter_stretch(model=model, train=train, plan=plan, strategy=strategy, stretch=stretch)
            current = stretch
        history = fit_model(model=model, train=train, plan=plan, strategy=strategy, callbacks=callbacks,
                            first_epoch=max(first_epoch, stretch.first_epoch), end_epoch=stretch.end_epoch,
                            augmenter=augmenter)
        epochs_run += len(history.history.get("loss", []))
    summary = TrainSummary(train_images=len(plan.train.split.labels), val_images=len(plan.val.split.labels),
                           first_epoch=first_epoch, epochs_run=epochs_run,
                           incidents=guard.incidents if guard else [])
    return model, summary
