"""Resume after a kill: weights, optimizer state and guard incidents saved atomically at each epoch end."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import keras
import numpy as np

from trainwell.console import warn
from trainwell.outputs import write_json
from trainwell.params import TrainParams
from trainwell.training.guard import DivergenceGuard

BACKUP_STATE = "state.npz"
BACKUP_META = "meta.json"


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
        warn(f"train: ignoring the backup in {folder}: it belongs to other params or data")
        return None
    model.optimizer.build(model.trainable_variables)
    targets = list(model.weights) + list(model.optimizer.variables)
    with np.load(state_path) as state:
        arrays = [state[f"arr_{index}"] for index in range(len(state.files))]
    if len(arrays) != len(targets):
        warn(f"train: ignoring the backup in {folder}: it does not match this model")
        return None
    for variable, value in zip(targets, arrays):
        variable.assign(value)
    return meta
