"""Resume after a kill: weights, optimizer state and guard incidents saved atomically at each epoch end."""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import TypedDict, TypeGuard

import keras
import numpy as np

from trainwell import storage
from trainwell.console import shown, warn
from trainwell.data.cache import CacheManifest
from trainwell.outputs import write_atomically, write_json
from trainwell.params import TrainParams
from trainwell.training.guard import DivergenceGuard, Incident

BACKUP_STATE = "state.npz"
BACKUP_META = "meta.json"


class BackupMeta(TypedDict):
    """meta.json beside the backup's state: the epoch it ends (0-based), whose run it is, the incidents so far."""

    epoch: int
    fingerprint: str
    incidents: list[Incident]


def run_fingerprint(*, train: TrainParams, cache_manifest: CacheManifest, weights_sha256: str | None = None) -> str:
    """Identifies a run by its params, cached data and backbone weights file: a backup is only resumed by the same run."""
    identity: dict[str, object] = {"train": train.model_dump(mode="json"), "data": cache_manifest}
    if weights_sha256 is not None:  # train.weights names a path; the file's content is what counts
        identity["weights_sha256"] = weights_sha256
    payload = json.dumps(identity, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def model_state(model: keras.Model) -> list:
    """Everything a resumed run must get back: weights, the random layers' seed states, optimizer state.

    model.variables is model.weights plus the seed generators of Dropout and random augmentation
    layers; without them a resumed run would draw other dropout masks than an uninterrupted one.
    """
    return list(model.variables) + list(model.optimizer.variables)


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
        arrays = [np.asarray(variable) for variable in model_state(self.model)]
        # State first, then the meta that names its epoch: each whole or absent (outputs' writers).
        write_atomically(self.folder / BACKUP_STATE, lambda handle: np.savez(handle, *arrays))
        meta = BackupMeta(epoch=epoch, fingerprint=self.fingerprint, incidents=self.guard.incidents if self.guard else [])
        write_json(self.folder / BACKUP_META, meta)


def remove_backup(folder: str | Path) -> None:
    """Delete the backup's own two files, then the folder if that left it empty: paths.train_backup_dir
    may name a folder that holds other files, which are not trainwell's to delete."""
    folder = Path(folder)
    for name in (BACKUP_STATE, BACKUP_META):
        (folder / name).unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # not empty, or already gone
        folder.rmdir()


def read_backup(*, folder: Path, fingerprint: str) -> BackupMeta | None:
    """The meta of a backup this run may resume from (epoch, incidents), or None to start fresh."""
    meta_path, state_path = folder / BACKUP_META, folder / BACKUP_STATE
    if not (meta_path.exists() and state_path.exists()):
        return None
    try:
        meta = storage.read_json(meta_path)
    except (OSError, ValueError) as exc:
        warn(f"train: ignoring the backup in {shown(folder)}: its {BACKUP_META} cannot be read ({shown(str(exc))})")
        return None
    if not _is_backup_meta(meta):
        warn(f"train: ignoring the backup in {shown(folder)}: its {BACKUP_META} is not one trainwell wrote")
        return None
    if meta["fingerprint"] != fingerprint:
        warn(f"train: ignoring the backup in {shown(folder)}: it belongs to other params, data or weights")
        return None
    return meta


def _is_backup_meta(meta: object) -> TypeGuard[BackupMeta]:
    """True for the shape EpochBackup writes: an epoch count, a fingerprint and a list of incident records."""
    return (isinstance(meta, dict) and type(meta.get("epoch")) is int and meta["epoch"] >= 0
            and isinstance(meta.get("fingerprint"), str) and isinstance(meta.get("incidents"), list)
            and all(isinstance(incident, dict) for incident in meta["incidents"]))


def restore_state(*, model: keras.Model, folder: Path) -> bool:
    """Load the backup's state into model and optimizer; False (nothing changed) when it does not fit them.

    The model must be set up as it was when the backup was written: with a backbone, frozen or
    not (the optimizer then tracks other variables).
    """
    model.optimizer.build(model.trainable_variables)
    targets = model_state(model)
    with np.load(folder / BACKUP_STATE) as state:
        arrays = [state[f"arr_{index}"] for index in range(len(state.files))]
    if len(arrays) != len(targets) or any(tuple(array.shape) != tuple(target.shape)
                                          for array, target in zip(arrays, targets)):
        warn(f"train: ignoring the backup in {shown(folder)}: it does not match this model")
        return False
    for variable, value in zip(targets, arrays):
        variable.assign(value)
    return True
