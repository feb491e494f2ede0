"""Divergence guard: a Keras callback that rolls back NaN/Inf and loss spikes instead of dying.

Three parts, each usable alone: `LossWatch` classifies one batch loss (pure Python, no Keras),
`Snapshot` keeps device-side copies of the weights and optimizer state, and `DivergenceGuard`
is the callback that joins them inside any `fit()` and records each incident.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypedDict

import keras
import numpy as np
import tensorflow as tf

from trainwell.console import warn
from trainwell.errors import TrainwellError
from trainwell.params import GuardParams


class Incident(TypedDict):
    """One rollback as written to incidents.json, kept in the epoch backup and shown on the training page."""

    epoch: int  # 1-based, as Keras prints epochs
    step: int  # the batch (or the first batch of a compiled call) whose loss or weights were bad
    kind: str  # a LossWatch kind, or nonfinite_weights
    loss: float | str  # the batch loss; "nan", "inf" or "-inf" as text (JSON has no such numbers)
    action: str  # what the guard did, in words
    since_step: int  # the damage may come from steps since_step+1 .. step of this epoch; -1: the epoch's start
    files: list[str]  # the source files of the batch at `step`


class TrainingDiverged(TrainwellError):
    """Training kept diverging after the allowed rollbacks; nothing was saved."""

    def __init__(self, message: str, incidents: list[Incident] | None = None) -> None:
        super().__init__(message)
        self.incidents = incidents or []


def all_finite(variables: list) -> bool:
    """True when no variable holds NaN or Inf (one fused device reduction, one host sync)."""
    if not variables:
        return True
    return bool(tf.reduce_all([tf.reduce_all(tf.math.is_finite(tf.cast(v, tf.float32))) for v in variables]))


def _values(variables: list) -> list:
    return [v.value if hasattr(v, "value") else v for v in variables]


# -- the loss classifier: pure Python ----------------------------------------------------------


class LossWatch:
    """Classifies each batch loss: non-finite, far above chance, or a spike against the recent median.

    `chance_loss` is the loss of uniform guessing (ln N for N classes). A jump only counts as a
    spike when it also lands above chance: late in training ordinary batches vary by large
    factors around tiny losses.
    """

    def __init__(self, *, spike_factor: float, spike_window: int, chance_loss: float) -> None:
        self.spike_factor = spike_factor
        self.chance_loss = chance_loss
        self.recent: deque[float] = deque(maxlen=spike_window)

    def classify(self, loss: float) -> str | None:
        """The incident kind for this loss, or None when it is healthy."""
        if not math.isfinite(loss):
            return "nan_loss" if math.isnan(loss) else "inf_loss"
        if loss > self.spike_factor * self.chance_loss:
            # Far above the loss of uniform guessing: the model is confidently wrong, whatever
            # the recent history says (a run can diverge before the running median is warm).
            return "loss_explosion"
        warm = len(self.recent) >= max(5, (self.recent.maxlen or 1) // 2)
        # Cheap test first: the median is only computed for losses above chance level.
        if loss > self.chance_loss and warm and loss > self.spike_factor * float(np.median(self.recent)):
            return "loss_spike"
        return None

    def accept(self, loss: float) -> None:
        self.recent.append(loss)


class RunningMean:
    """Recovers each batch's loss from Keras' running mean, which weights batches by their size."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.seen, self.mean = 0, 0.0

    def batch_loss(self, running: float, size: int) -> float:
        if not math.isfinite(running):
            return running
        return (running * (self.seen + size) - self.mean * self.seen) / size

    def accept(self, running: float, size: int) -> None:
        self.seen += size
        self.mean = running


@dataclass
class BatchTrace:
    """What the guard knows of the batches fit() sees: examples per step, and the files of a step.

    Without one the guard assumes equal batches, exact for everything but an epoch's last
    partial batch; trainwell's own pipeline hands over its exact plan.
    """

    sizes: Callable[[int], list[int]]  # epoch -> examples in each of its steps
    files: Callable[[int, int], list[str]] | None = None  # (epoch, step) -> source files


# -- snapshots of the model state ---------------------------------------------------------------


class Snapshot:
    """Device-side copies of a model's weights and optimizer state, taken only while they are finite."""

    def __init__(self, model: keras.Model) -> None:
        self.model = model
        self._shadow: list[tf.Variable] | None = None
        self._check_and_copy: Callable[[], tf.Tensor] | None = None

    def _tracked(self) -> list:
        return list(self.model.weights) + list(self.model.optimizer.variables)

    def take(self) -> bool:
        """Copy the current state when every weight is finite; False (nothing copied) otherwise."""
        tracked = self._tracked()
        if self._shadow is None or len(self._shadow) != len(tracked):
            if not all_finite(tracked):
                return False
            self._shadow = [tf.Variable(value, trainable=False) for value in _values(tracked)]
            weights, shadow = _values(self.model.weights), self._shadow

            # Compiled once: checking and copying ~20 variables eagerly costs ~20 op dispatches
            # each; as one graph call they cost one, which keeps the guard's overhead small.
            @tf.function
            def check_and_copy() -> tf.Tensor:
                finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(tf.cast(w, tf.float32))) for w in weights])
                if finite:
                    for target, source in zip(shadow, _values(tracked)):
                        target.assign(source)
                return finite

            self._check_and_copy = check_and_copy
            return True
        assert self._check_and_copy is not None  # set together with _shadow (internal invariant)
        return bool(self._check_and_copy())

    def restore(self) -> None:
        tracked = self._tracked()
        if self._shadow is None or len(self._shadow) != len(tracked):
            raise TrainingDiverged("the guard's snapshot no longer matches the model's variables; cannot roll back")
        for shadow, variable in zip(self._shadow, tracked):
            variable.assign(shadow)


# -- the callback ------------------------------------------------------------------------------


def incident_record(*, epoch: int, step: int, kind: str, loss: float, snapshot_at: tuple[int, int],
                    old_rate: float, new_rate: float, files: list[str]) -> Incident:
    """One incident as written to incidents.json (epochs 1-based, as Keras prints them)."""
    return Incident(
        epoch=epoch + 1,
        step=step,
        kind=kind,
        loss=loss if math.isfinite(loss) else str(loss),
        action=f"rolled back to epoch {snapshot_at[0] + 1} step {snapshot_at[1]}, "
        f"learning rate {old_rate:.3g} -> {new_rate:.3g}, batch skipped",
        # With check_every > 1 the damage may come from any batch after the snapshot:
        # steps since_step+1 .. step of this epoch. `files` is the batch at `step`.
        since_step=snapshot_at[1] if snapshot_at[0] == epoch else -1,
        files=files,
    )


class DivergenceGuard(keras.callbacks.Callback):
    """Watch every batch; on a non-finite loss or weights, or a loss spike, roll back and go on.

    Works in any `fit()`: `DivergenceGuard(num_classes=5)`. Every `policy.check_every` healthy
    steps the weights are checked for NaN/Inf and, when finite, copied with the optimizer state
    into a Snapshot. An incident restores that snapshot (undoing the offending batch and the few
    before it), scales the learning rate by `policy.lr_factor`, resets the running metrics and
    lets training continue with the next batch. After `policy.max_rollbacks` incidents it raises
    TrainingDiverged from inside fit(): an exception, not stop_training, so Keras never runs
    on_train_end and a backup callback keeps what a retry needs.
    """

    def __init__(self, *, num_classes: int, policy: GuardParams | None = None, trace: BatchTrace | None = None,
                 steps_per_execution: int = 1) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"DivergenceGuard needs num_classes >= 2 (chance-level loss is ln(num_classes)); "
                             f"got {num_classes}")
        self.policy = policy or GuardParams()
        self.watch = LossWatch(spike_factor=self.policy.spike_factor, spike_window=self.policy.spike_window,
                               chance_loss=math.log(num_classes))
        self.trace = trace
        # With steps_per_execution > 1 Keras reports one loss per compiled call of that many steps.
        self.steps_per_execution = steps_per_execution
        self.incidents: list[Incident] = []
        self._running = RunningMean()
        self._snapshot: Snapshot | None = None
        self._snapshot_at = (0, -1)  # (epoch, step) the snapshot was taken after
        self._epoch = 0
        self._sizes: list[int] | None = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        optimizer = self.model.optimizer
        if not optimizer.built:
            # Adam's moment estimates must be in the snapshot: Inf moments alone re-poison restored weights.
            optimizer.build(self.model.trainable_variables)
        # A new snapshot for every fit(): a later fit() of the same run (a backbone's fine-tuning
        # phase) brings a new optimizer with other variables.
        self._snapshot = Snapshot(self.model)
        if not self._snapshot.take():
            raise TrainingDiverged("the model starts with non-finite weights; rebuild it or restore a good checkpoint")
        self._snapshot_at = (-1, -1)  # taken before the first epoch of this fit(), which on_epoch_begin names

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self._snapshot_at == (-1, -1):
            self._snapshot_at = (epoch, -1)
        self._epoch = epoch
        self._sizes = self.trace.sizes(epoch) if self.trace is not None else None
        self._running.reset()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        running = (logs or {}).get("loss")
        if running is None:
            return
        running, size = float(running), self._examples_in_call(batch)
        batch_loss = self._running.batch_loss(running, size)
        problem = self.watch.classify(batch_loss)
        if problem is None and (batch // self.steps_per_execution + 1) % self.policy.check_every == 0:
            # Checks the weights and, only when they are finite, copies them as the new snapshot.
            assert self._snapshot is not None  # made in on_train_begin (internal invariant)
            if self._snapshot.take():
                self._snapshot_at = (self._epoch, batch)
            else:
                problem = "nonfinite_weights"
        if problem is None:
            self._running.accept(running, size)
            self.watch.accept(batch_loss)
            return
        self._roll_back(step=batch, kind=problem, loss=batch_loss)

    def _examples_in_call(self, batch: int) -> int:
        """Examples behind the loss Keras just reported: one batch, or one compiled call's batches."""
        if self._sizes is None:
            return self.steps_per_execution  # equal batches: counting in batches gives the same mean
        steps = range(batch, batch + self.steps_per_execution)
        size = sum(self._sizes[step] for step in steps if step < len(self._sizes))
        return size if size > 0 else 1

    def _roll_back(self, *, step: int, kind: str, loss: float) -> None:
        learning_rate = self.model.optimizer.learning_rate
        old_rate = float(np.asarray(learning_rate))
        new_rate = old_rate * self.policy.lr_factor
        # The snapshot holds the optimizer's learning-rate variable too: restore first, then lower.
        assert self._snapshot is not None  # made in on_train_begin (internal invariant)
        try:
            self._snapshot.restore()
        except TrainingDiverged as exc:
            raise TrainingDiverged(str(exc), incidents=self.incidents) from None
        learning_rate.assign(new_rate)
        # The running means now include the bad batch; start them again.
        self.model.reset_metrics()
        self._running.reset()
        files: list[str] = []
        if self.trace is not None and self.trace.files is not None:
            for offset in range(self.steps_per_execution):
                files += self.trace.files(self._epoch, step + offset)
        incident = incident_record(epoch=self._epoch, step=step, kind=kind, loss=loss, snapshot_at=self._snapshot_at,
                                   old_rate=old_rate, new_rate=new_rate, files=files)
        self.incidents.append(incident)
        warn(f"\ntrainwell guard: {kind} (loss {loss}) at epoch {self._epoch + 1} step {step}; {incident['action']}")
        if len(self.incidents) > self.policy.max_rollbacks:
            raise TrainingDiverged(
                f"training diverged {len(self.incidents)} times (last: {kind} at epoch {self._epoch + 1}, step {step}) "
                f"despite lowering the learning rate to {new_rate:.3g}; nothing was saved. Lower train.learning_rate "
                "and check the audit report for bad inputs",
                incidents=self.incidents,
            )
