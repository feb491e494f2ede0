"""Split lists: stratified, seeded train/val/test assignment with duplicate groups kept whole, and their CSVs."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict, cast

import numpy as np

from trainwell.data.groups import groups_from_pairs
from trainwell.errors import DataError
from trainwell.outputs import read_table, write_table

SPLITS = ("train", "val", "test")
CLASSES_FILE = "classes.json"
COUNTS_FILE = "counts.json"  # images per split and class, beside the split lists
SPLIT_NAMES = {"train": "training", "val": "validation", "test": "test"}  # what a person reads (metrics, pages)
# Groups of up to this many files always move together, whatever their share of a small class.
GROUP_ALWAYS_KEPT = 10

# A duplicate group larger than its share allows, whose files were placed one by one: its class,
# its size, its share of the class and one member's path (functional form: `class` is a keyword).
BrokenGroup = TypedDict("BrokenGroup", {"class": str, "files": int, "share": float, "example": str})


class SplitCounts(TypedDict):
    """One split's images: in all and per class."""

    total: int
    per_class: dict[str, int]


# The split stage's counts.json, in the key order it is written (functional form: the split names as keys).
class SplitReceipt(TypedDict):
    files_excluded_by_audit: int
    train: SplitCounts
    val: SplitCounts
    test: SplitCounts
    groups_kept_together: int
    groups_split_up: list[BrokenGroup]


def _sorted_files_and_unit_starts(files: list[tuple[str, str]],
                                  groups: list[list[str]]) -> tuple[list[tuple[str, str]], np.ndarray]:
    """(files sorted, and for each sorted file the position of its unit's first file).

    Only the paths named in a group get a dictionary entry, so a million files with a few
    thousand groups cost one sort and two arrays, not a Python object per file."""
    ordered = sorted(files)
    named = {path for group in groups for path in group}
    position = {path: index for index, (path, _) in enumerate(ordered) if path in named} if named else {}
    pairs = []
    for group in groups:
        present = [position[path] for path in group if path in position]
        pairs += [(present[0], other) for other in present[1:]]
    first = np.arange(len(ordered), dtype=np.int64)
    grouped = groups_from_pairs(len(ordered), np.asarray(pairs, dtype=np.int64))
    if grouped:
        members = np.concatenate([np.asarray(group, dtype=np.int64) for group in grouped])
        first[members] = np.repeat([group[0] for group in grouped], [len(group) for group in grouped])
    return ordered, first


def group_units(files: list[tuple[str, str]], groups: list[list[str]]) -> list[list[tuple[str, str]]]:
    """Files joined into units that must share a split: a file and all its (near-)duplicates.

    Groups are merged transitively; members that are not among `files` (quarantined) are ignored.
    Every unit is sorted, and units are ordered by their first file.
    """
    ordered, first = _sorted_files_and_unit_starts(files, groups)
    units: dict[int, list[tuple[str, str]]] = {}
    for index, unit in enumerate(first.tolist()):
        units.setdefault(unit, []).append(ordered[index])
    return [units[unit] for unit in sorted(units)]


@dataclass
class SplitAssignment:
    """What assign_splits decided: the splits, and what it did with the groups it was given."""

    splits: dict[str, list[tuple[str, str]]]
    kept_together: int  # units of two or more files placed in one split
    # Groups larger than their share allows, whose files were placed one by one.
    broken_up: list[BrokenGroup] = field(default_factory=list)


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
    return assign_splits(files=files, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
                         groups=groups).splits


def _break_up_large(ordered: list[tuple[str, str]], first: np.ndarray, *,
                    max_group_share: float) -> list[BrokenGroup]:
    """Units larger than max(GROUP_ALWAYS_KEPT, max_group_share of their class) back to single files, in place.

    A group that big is more likely a look-alike chain than copies (452 different people's "1"s,
    40% of their class, once moved to test together), and it would decide the split: every split
    must represent every class. Returns what was broken up."""
    count = len(first)
    unit_sizes = np.bincount(first, minlength=count)
    labels = [label for _, label in ordered]
    class_sizes = Counter(labels)
    broken: list[BrokenGroup] = []
    for unit in np.flatnonzero(unit_sizes > GROUP_ALWAYS_KEPT).tolist():
        label, size = labels[unit], int(unit_sizes[unit])
        if size > max_group_share * class_sizes[label]:
            members = np.flatnonzero(first == unit)
            first[members] = members
            broken.append(BrokenGroup({"class": label, "files": size, "share": round(size / class_sizes[label], 4),
                                       "example": ordered[unit][0]}))
    return broken


def assign_splits(
    *,
    files: list[tuple[str, str]],
    val_fraction: float,
    test_fraction: float,
    seed: int,
    groups: list[list[str]] | None = None,
    max_group_share: float = 1.0,
) -> SplitAssignment:
    """stratified_split's splits, how many units of two or more files were kept together, and
    which groups were too large to keep (over max_group_share of their class, see _break_up_large).

    Per class, in the seeded order of its units, units fill test until it holds its share, then
    val, and the rest train: a unit goes to test when the files before it in that order are fewer
    than test's target, which numpy answers for every unit at once with one cumulative sum. A
    split overshoots its share by less than one unit, and no unit is larger than
    max(GROUP_ALWAYS_KEPT, max_group_share of its class).
    """
    ordered, first = _sorted_files_and_unit_starts(files, groups or [])
    broken = _break_up_large(ordered, first, max_group_share=max_group_share)
    count = len(ordered)
    unit_starts = np.flatnonzero(first == np.arange(count))  # each unit's first file, ascending
    unit_of_file = np.searchsorted(unit_starts, first)
    unit_sizes = np.bincount(unit_of_file, minlength=len(unit_starts))
    classes = sorted({label for _, label in ordered})
    code = {label: index for index, label in enumerate(classes)}
    unit_class = np.fromiter((code[ordered[start][1]] for start in unit_starts.tolist()), dtype=np.int64,
                             count=len(unit_starts))
    # Units of each class in ascending order of their first file: one stable sort, cut by class.
    by_class = np.argsort(unit_class, kind="stable")
    bounds = np.searchsorted(unit_class[by_class], np.arange(len(classes) + 1))
    split_of_unit = np.zeros(len(unit_starts), dtype=np.int8)  # 0 train, 1 val, 2 test
    for index, label in enumerate(classes):
        units = by_class[bounds[index]:bounds[index + 1]]
        order = np.random.default_rng([seed, *label.encode()]).permutation(len(units))
        sizes = unit_sizes[units[order]]
        total = int(sizes.sum())
        targets = {"test": round(total * test_fraction), "val": round(total * val_fraction)}
        before = np.cumsum(sizes) - sizes  # files placed before each unit, in the seeded order
        test = before < targets["test"]
        val = ~test & (before - int(sizes[test].sum()) < targets["val"])
        split_of_unit[units[order[test]]] = 2
        split_of_unit[units[order[val]]] = 1
    split_of_file = split_of_unit[unit_of_file]
    splits = {name: [ordered[index] for index in np.flatnonzero(split_of_file == code).tolist()]
              for code, name in ((0, "train"), (1, "val"), (2, "test"))}
    return SplitAssignment({name: splits[name] for name in SPLITS}, int((unit_sizes > 1).sum()), broken)


def check_trainable(splits: dict[str, list[tuple[str, str]]], *, classes: list[str],
                    min_images_per_class: int = 0) -> list[str]:
    """Refuse, with the counts, a split that training or evaluation could only fail on later or
    judge wrongly; returns warnings for what is allowed but worth saying.

    A classifier needs two classes with training images; validation and test need at least one
    image each (an empty validation split once ended training in a TypeError traceback). A class
    with fewer than `min_images_per_class` images, or with none in validation or test, is refused
    (a class with one image once trained 40 epochs and scored F1 0 on test, unremarked); with
    `min_images_per_class` 0 the missing split is a warning instead.
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
    small = [label for label in classes if sum(counts[name][label] for name in SPLITS) < min_images_per_class]
    if small:
        raise DataError(f"classes {small} have fewer than split.min_images_per_class = {min_images_per_class} "
                        f"images; {where}. Add images to them, leave them out of data.classes, or lower "
                        "split.min_images_per_class (0 accepts any size)")
    missing = [f"'{label}' has no {SPLIT_NAMES[name]} images" for label in classes for name in ("val", "test")
               if not counts[name][label]]
    if missing and min_images_per_class > 0:
        raise DataError(f"every split must represent every class, but {'; '.join(missing)}; {where}. Add images to "
                        "those classes, or raise split.val_fraction / split.test_fraction")
    return [f"{text}: its metrics there are missing or 0" for text in missing]


def split_receipt(assignment: SplitAssignment, *, classes: list[str], excluded: int) -> SplitReceipt:
    """Counts per split and class and what happened to the duplicate groups (the split stage's
    counts.json; metrics/split.json keeps the totals)."""

    def counted(rows: list[tuple[str, str]]) -> SplitCounts:
        counts = Counter(label for _, label in rows)
        return SplitCounts(total=len(rows), per_class={label: counts.get(label, 0) for label in classes})

    splits = assignment.splits
    return SplitReceipt({
        "files_excluded_by_audit": excluded,
        "train": counted(splits["train"]), "val": counted(splits["val"]), "test": counted(splits["test"]),
        "groups_kept_together": assignment.kept_together, "groups_split_up": assignment.broken_up,
    })


def write_split_csv(path: str | Path, rows: list[tuple[str, str]]) -> None:
    write_table(path, ["path", "label"], rows)


def read_split_csv(path: str | Path) -> list[tuple[str, str]]:
    """Rows of a split CSV written by the split stage."""
    if not Path(path).exists():
        raise DataError(f"split file '{path}' is missing; run `dvc repro split` first")
    return cast(list[tuple[str, str]], read_table(path, ["path", "label"]))
