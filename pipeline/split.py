"""Stage `split`: seeded, stratified train/val/test lists that leave quarantined files out."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np

from pipeline.errors import DataError
from pipeline.files import list_dataset, read_lines
from pipeline.outputs import write_json, write_lines
from pipeline.params import SplitParams, load_params

SPLITS = ("train", "val", "test")
CLASSES_FILE = "classes.txt"


def stratified_split(
    *, files: list[tuple[str, str]], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[tuple[str, str]]]:
    """Split (path, label) pairs per class with the given fractions; the same seed gives the same split.

    Each class is shuffled with its own generator seeded by (seed, class name), so adding a
    class does not reshuffle the others.
    """
    by_class: dict[str, list[tuple[str, str]]] = {}
    for path, label in sorted(files):
        by_class.setdefault(label, []).append((path, label))
    splits: dict[str, list[tuple[str, str]]] = {name: [] for name in SPLITS}
    for label, members in sorted(by_class.items()):
        class_seed = [seed, *label.encode()]
        order = np.random.default_rng(class_seed).permutation(len(members))
        count = len(members)
        n_test = int(round(count * test_fraction))
        n_val = int(round(count * val_fraction))
        shuffled = [members[i] for i in order]
        splits["test"].extend(shuffled[:n_test])
        splits["val"].extend(shuffled[n_test : n_test + n_val])
        splits["train"].extend(shuffled[n_test + n_val :])
    return {name: sorted(items) for name, items in splits.items()}


def write_split_csv(path: str | Path, rows: list[tuple[str, str]]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerows(rows)


def read_split_csv(path: str | Path) -> list[tuple[str, str]]:
    """Rows of a split CSV written by this stage."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"split file '{path}' is missing; run `dvc repro split` first")
    with path.open(newline="") as handle:
        return [(row["path"], row["label"]) for row in csv.DictReader(handle)]


def split_receipt(splits: dict[str, list[tuple[str, str]]], *, classes: list[str], excluded: int) -> dict:
    """Counts per split and class, for metrics/split.json."""
    receipt: dict = {"files_excluded_by_audit": excluded}
    for name, rows in splits.items():
        counts = Counter(label for _, label in rows)
        receipt[name] = {"total": len(rows), "per_class": {label: counts.get(label, 0) for label in classes}}
    return receipt


def run(*, data_dir: str, classes: list[str] | None, extensions: list[str], quarantine_file: str, split: SplitParams, out_dir: str) -> dict:
    listing = list_dataset(data_dir, classes=classes, extensions=extensions)
    quarantined = set(read_lines(quarantine_file))
    usable = [(path, label) for path, label in listing.files if path not in quarantined]
    splits = stratified_split(
        files=usable, val_fraction=split.val_fraction, test_fraction=split.test_fraction, seed=split.seed
    )
    for name in SPLITS:
        # An empty train split would only surface later as a confusing TensorFlow error.
        if name == "train" and not splits[name]:
            raise DataError(f"no usable images left for training in '{data_dir}' after the audit's quarantine")
        write_split_csv(Path(out_dir) / f"{name}.csv", splits[name])
    # The class order fixes label indices for build, train and evaluate alike.
    write_lines(Path(out_dir) / CLASSES_FILE, listing.classes)
    return split_receipt(splits, classes=listing.classes, excluded=len(listing.files) - len(usable))


def main(*, params_file: str = "params.yaml") -> int:
    params = load_params(params_file)
    receipt = run(
        data_dir=params.data.dir,
        classes=params.data.classes,
        extensions=params.data.extensions,
        quarantine_file=params.paths.quarantine,
        split=params.split,
        out_dir=params.paths.splits_dir,
    )
    write_json(params.paths.split_metrics, receipt)
    sizes = ", ".join(f"{name} {receipt[name]['total']}" for name in SPLITS)
    print(f"split: {sizes}; {receipt['files_excluded_by_audit']} quarantined files left out")
    return 0
