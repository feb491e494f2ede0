"""Divergence guard: a Keras callback that rolls back NaN/Inf and loss spikes instead of dying."""

from __future__ import annotations

import math
import sys
from collections import deque
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from pipeline.errors import TrainwellError


class TrainingDiverged(TrainwellError):
    """Training kept diverging after the allowed rollbacks; nothing was saved."""

    def __init__(self, message: str, incidents: list[dict] | None = None) -> None:
        super().__init__(message)
        self.incidents = incidents or []


def all_finite(variables: list) -> bool:
    """True when no variable holds NaN or Inf (one fused device reduction, one host sync)."""
    if not variables:
        return True
    return bool(tf.reduce_all([tf.reduce_all(tf.math.is_finite(tf.cast(v, tf.float32))) for v in variables]))


def _values(variables: list) -> list:
    return [v.value if hasattr(v, "value") else v for v in variables]


class DivergenceGuard(keras.callbacks.Callback):
    """Watch every batch; on a non-finite loss or weights, or a loss spike, roll back and go on.

    Every `check_every` healthy steps the weights are checked for NaN/Inf and, when finite,
    copied with the optimizer state into device-side shadow variables. An incident restores
    that snapshot (undoing the offending batch and the few before it), scales the learning
    rate by `lr_factor`, resets the running metrics and lets training continue with the next
    batch. After `max_rollbacks` incidents it raises TrainingDiverged from inside fit(): an
    exception, not stop_training, so Keras never runs on_train_end and BackupAndRestore-style
    callbacks keep the backup a retry needs.

    The per-batch loss is recovered from Keras' running mean, which weights batches by size.
    """

    def __init__(
        self,
        *,
        check_every: int,
        spike_factor: float,
        spike_window: int,
        lr_factor: float,
        max_rollbacks: int,
        chance_loss: float,
        batch_size: int,
        train_count: int,
        paths_for_batch: Callable[[int, int], list[str]] | None = None,
        batch_sizes: Callable[[int], list[int]] | None = None,
        steps_per_execution: int = 1,
    ) -> None:
        super().__init__()
        self.check_every = check_every
        self.spike_factor = spike_factor
        self.lr_factor = lr_factor
        self.max_rollbacks = max_rollbacks
        # A jump is only a spike when it also lands above chance-level loss (ln N for N
        # classes): late in training ordinary batches vary by large factors around tiny losses.
        self.chance_loss = chance_loss
        self.batch_size = batch_size
        self.train_count = train_count
        self.paths_for_batch = paths_for_batch
        # epoch -> examples in each of its steps, when batches are not all batch_size (see
        # dataset.batch_bounds); with steps_per_execution > 1 Keras reports once per call.
        self.batch_sizes = batch_sizes
        self._sizes: list[int] | None = None
        self.steps_per_execution = steps_per_execution
        self.incidents: list[dict] = []
        self._recent: deque[float] = deque(maxlen=spike_window)
        self._shadow: list[tf.Variable] | None = None
        self._snapshot_at = (0, -1)  # (epoch, step) the snapshot was taken after
        self._epoch = 0
        self._seen = 0
        self._mean = 0.0

    # -- snapshots ---------------------------------------------------------------------------
    def _tracked(self) -> list:
        return list(self.model.weights) + list(self.model.optimizer.variables)

    def _take_snapshot(self, step: int) -> None:
        tracked = self._tracked()
        if self._shadow is None or len(self._shadow) != len(tracked):
            self._shadow = [tf.Variable(value, trainable=False) for value in _values(tracked)]
            weights = _values(self.model.weights)
            shadow = self._shadow

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
        elif not bool(self._check_and_copy()):
            return
        self._snapshot_at = (self._epoch, step)

    def _restore_snapshot(self) -> None:
        tracked = self._tracked()
        if self._shadow is None or len(self._shadow) != len(tracked):
            raise TrainingDiverged("the guard's snapshot no longer matches the model's variables; cannot roll back",
                                   incidents=self.incidents)
        for shadow, variable in zip(self._shadow, tracked):
            variable.assign(shadow)

    # -- callback hooks ------------------------------------------------------------------------
    def on_train_begin(self, logs: dict | None = None) -> None:
        optimizer = self.model.optimizer
        if not optimizer.built:
            # Adam's moment estimates must be in the snapshot: Inf moments alone re-poison restored weights.
            optimizer.build(self.model.trainable_variables)
        if not all_finite(self._tracked()):
            raise TrainingDiverged("the model starts with non-finite weights; rebuild it or restore a good checkpoint")
        self._take_snapshot(-1)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch
        self._sizes = self.batch_sizes(epoch) if self.batch_sizes is not None else None
        self._seen, self._mean = 0, 0.0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        running = (logs or {}).get("loss")
        if running is None:
            return
        size = self._examples_in_call(batch)
        running = float(running)
        batch_loss = (running * (self._seen + size) - self._mean * self._seen) / size if math.isfinite(running) else running
        problem = None
        if not math.isfinite(batch_loss):
            problem = "nan_loss" if math.isnan(batch_loss) else "inf_loss"
        elif batch_loss > self.spike_factor * self.chance_loss:
            # Far above the loss of uniform guessing: the model is confidently wrong, whatever
            # the recent history says (a run can diverge before the running median is warm).
            problem = "loss_explosion"
        elif (
            # Cheap test first: the median is only computed for losses above chance level.
            batch_loss > self.chance_loss
            and len(self._recent) >= max(5, (self._recent.maxlen or 1) // 2)
            and batch_loss > self.spike_factor * float(np.median(self._recent))
        ):
            problem = "loss_spike"
        elif (batch // self.steps_per_execution + 1) % self.check_every == 0:
            # Checks the weights and, only when they are finite, copies them as the new snapshot.
            before = self._snapshot_at
            self._take_snapshot(batch)
            if self._snapshot_at == before:
                problem = "nonfinite_weights"
        if problem is None:
            self._seen += size
            self._mean = running
            self._recent.append(batch_loss)
            return
        self._roll_back(step=batch, kind=problem, loss=batch_loss)

    def _examples_in_call(self, batch: int) -> int:
        """Examples behind the loss Keras just reported: one batch, or one compiled call's batches."""
        steps = range(batch, batch + self.steps_per_execution)
        if self._sizes is not None:
            size = sum(self._sizes[step] for step in steps if step < len(self._sizes))
        else:
            size = sum(max(0, min(self.batch_size, self.train_count - step * self.batch_size)) for step in steps)
        return size if size > 0 else self.batch_size

    def _roll_back(self, *, step: int, kind: str, loss: float) -> None:
        learning_rate = self.model.optimizer.learning_rate
        old_rate = float(np.asarray(learning_rate))
        new_rate = old_rate * self.lr_factor
        # The snapshot holds the optimizer's learning-rate variable too: restore first, then lower.
        self._restore_snapshot()
        learning_rate.assign(new_rate)
        # The running means now include the bad batch; start them again.
        self.model.reset_metrics()
        self._seen, self._mean = 0, 0.0
        files = []
        if self.paths_for_batch:
            for offset in range(self.steps_per_execution):
                files += self.paths_for_batch(self._epoch, step + offset)
        incident = {
            "epoch": self._epoch + 1,  # 1-based, as Keras prints "Epoch 5/40"
            "step": step,
            "kind": kind,
            "loss": loss if math.isfinite(loss) else str(loss),
            "action": f"rolled back to epoch {self._snapshot_at[0] + 1} step {self._snapshot_at[1]}, "
            f"learning rate {old_rate:.3g} -> {new_rate:.3g}, batch skipped",
            # With check_every > 1 the damage may come from any batch after the snapshot:
            # steps since_step+1 .. step of this epoch. `files` is the batch at `step`.
            "since_step": self._snapshot_at[1] if self._snapshot_at[0] == self._epoch else -1,
            "files": files,
        }
        self.incidents.append(incident)
        print(
            f"\ntrainwell guard: {kind} (loss {loss}) at epoch {self._epoch + 1} step {step}; {incident['action']}",
            file=sys.stderr,
        )
        if len(self.incidents) > self.max_rollbacks:
            raise TrainingDiverged(
                f"training diverged {len(self.incidents)} times (last: {kind} at epoch {self._epoch + 1}, step {step}) "
                f"despite lowering the learning rate to {new_rate:.3g}; nothing was saved. Lower train.learning_rate "
                "and check the audit report for bad inputs",
                incidents=self.incidents,
            )
