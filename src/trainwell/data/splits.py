"""Split lists: stratified, seeded train/val/test assignment with duplicate groups kept whole, and their CSVs."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from trainwell.data.groups import groups_from_pairs
from trainwell.errors import DataError
from trainwell.outputs import read_rows, write_rows

SPLITS = ("train", "val", "test")
CLASSES_FILE = "classes.json"
COUNTS_FILE = "counts.json"  # images per split and class, beside the split lists
SPLIT_NAMES = {"train": "training", "val": "validation", "test": "test"}  # what a person reads (metrics, pages)


def group_units(files: list[tuple[str, str]], groups: list[list[str]]) -> list[list[tuple[str, str]]]:
    """Files joined into units that must share a split: a file and all its (near-)duplicates.

    Groups are merged transitively; members that are not among `files` (quarantined) are ignored.
    Every unit is sorted, and units are ordered by their first file.
    """
    ordered = sorted(files)
    position = {path: index for index, (path, _) in enumerate(ordered)}
    pairs = []
    for group in groups:
        present = [position[path] for path in group if path in position]
        pairs += [(present[0], other) for other in present[1:]]
    grouped = groups_from_pairs(len(ordered), np.asarray(pairs, dtype=np.int64))
    in_group = {index for group in grouped for index in group}
    units = [[ordered[index] for index in group] for group in grouped]
    units += [[row] for index, row in enumerate(ordered) if index not in in_group]
    return sorted(units)


def stratified_split(
    *,
    files: list[tuple[str, str]],
    val_fraction: float,
    test_fraction: float,
    seed: int,
    groups: list[list[str]] | None = None,
) -> dict[str, list[tuple[str, str]]]:
    """Split (path, label) pairs per class with the given fractions; the same seed gives the same split.

    Files in one of `groups` (duplicates and near-duplicates from the audit) move as one unit,
    so no picture is trained on and then tested on in another copy. A unit is stratified under
    the class of its first file. Each class is shuffled with its own generator seeded by
    (seed, class name), so adding a class does not reshuffle the others.
    """
    by_class: dict[str, list[list[tuple[str, str]]]] = {}
    for unit in group_units(files, groups or []):
        by_class.setdefault(unit[0][1], []).append(unit)
    splits: dict[str, list[tuple[str, str]]] = {name: [] for name in SPLITS}
    for label, units in sorted(by_class.items()):
        class_seed = [seed, *label.encode()]
        order = np.random.default_rng(class_seed).permutation(len(units))
        count = sum(len(unit) for unit in units)
        targets = {"test": round(count * test_fraction), "val": round(count * val_fraction)}
        filled = {"test": 0, "val": 0}
        for position in order:
            unit = units[position]
            name = next((name for name in ("test", "val") if filled[name] < targets[name]), "train")
            if name != "train":
                filled[name] += len(unit)
            splits[name].extend(unit)
    return {name: sorted(items) for name, items in splits.items()}


def check_trainable(splits: dict[str, list[tuple[str, str]]], *, classes: list[str]) -> None:
    """Refuse, with the counts, a split that training or evaluation could only fail on later.

    A classifier needs two classes with training images; validation and test need at least one
    image each (an empty validation split once ended training in a TypeError traceback).
    """
    counts = {name: Counter(label for _, label in rows) for name, rows in splits.items()}
    table = ", ".join(f"{label} {'/'.join(str(counts[name][label]) for name in SPLITS)}" for label in classes)
    where = f"images per class (train/val/test): {table}"
    trained = [label for label in classes if counts["train"][label]]
    if len(trained) < 2:
        raise DataError(f"a classifier needs at least 2 classes with training images, this dataset has "
                        f"{len(trained)}; {where}. Add images or classes (data.dir, data.classes)")
    for name, fraction in (("val", "split.val_fraction"), ("test", "split.test_fraction")):
        if not splits[name]:
            raise DataError(f"the {name} split is empty; {where}. Add images, or raise {fraction}")
    untrained = [label for label in classes if not counts["train"][label]]
    if untrained:
        raise DataError(f"classes {untrained} have no training images; {where}. Add images to them or leave "
                        "them out of data.classes")


def split_receipt(splits: dict[str, list[tuple[str, str]]], *, classes: list[str], excluded: int) -> dict:
    """Counts per split and class (the split stage's counts.json; metrics/split.json keeps the totals)."""
    receipt: dict = {"files_excluded_by_audit": excluded}
    for name, rows in splits.items():
        counts = Counter(label for _, label in rows)
        receipt[name] = {"total": len(rows), "per_class": {label: counts.get(label, 0) for label in classes}}
    return receipt


def write_split_csv(path: str | Path, rows: list[tuple[str, str]]) -> None:
    write_rows(path, [{"path": file, "label": label} for file, label in rows], fields=["path", "label"])


def read_split_csv(path: str | Path) -> list[tuple[str, str]]:
    """Rows of a split CSV written by the split stage."""
    if not Path(path).exists():
        raise DataError(f"split file '{path}' is missing; run `dvc repro split` first")
    return [(row["path"], row["label"]) for row in read_rows(path, columns=["path", "label"])]
