"""Training curves in DVC's metrics and plots format (dvclive's layout), written by a plain Keras callback.

dvclive's own Keras callback inspects the git repository when it starts and fails in one with
no commits yet (`git init; trainwell init; dvc repro` is exactly that), so trainwell writes the
same files itself: `metrics.json` with the last epoch's values, and one TSV per metric under
`plots/metrics/{train,validation}/`. (dvclive calls the validation split "eval"; here "eval" would
read as the test split that `evaluate` measures, so the folder says what it is.)
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import keras

from trainwell.outputs import write_bytes_atomically

SPLIT_OF_PREFIX = {"val_": "validation"}


def metric_path(name: str) -> tuple[str, str]:
    """(split, metric) of a Keras log key: val_loss -> (validation, loss), accuracy -> (train, accuracy)."""
    for prefix, split in SPLIT_OF_PREFIX.items():
        if name.startswith(prefix):
            return split, name[len(prefix):]
    return "train", name


class CurveLog(keras.callbacks.Callback):
    """After every epoch, append each metric to its TSV and rewrite metrics.json.

    Starts afresh with the first fit() it sees, and continues through later fit() calls given the
    same object: a backbone's fine-tuning phase is a second fit() of the same run.
    """

    def __init__(self, folder: str | Path) -> None:
        super().__init__()
        self.folder = Path(folder)
        self._started = False
        self._step = 0

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self._started:
            return
        self._started = True
        # Everything in the folder is this callback's own output (a DVC output of the train stage).
        shutil.rmtree(self.folder / "plots", ignore_errors=True)
        (self.folder / "metrics.json").unlink(missing_ok=True)
        self._step = 0

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        summary: dict = {}
        for key, value in sorted((logs or {}).items()):
            if key == "learning_rate":
                continue
            split, name = metric_path(key)
            table = self.folder / "plots" / "metrics" / split / f"{name}.tsv"
            table.parent.mkdir(parents=True, exist_ok=True)
            new = not table.exists()
            with table.open("a", encoding="utf-8", newline="") as handle:
                writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
                if new:
                    writer.writerow(["step", name])
                writer.writerow([self._step, float(value)])
            summary.setdefault(split, {})[name] = float(value)
        summary["step"] = self._step
        write_bytes_atomically(self.folder / "metrics.json", (json.dumps(summary, indent=4) + "\n").encode())
        self._step += 1
