"""Stage `split`: seeded, stratified train/val/test lists; quarantined files out, duplicate groups together."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np

from pipeline.errors import DataError
from pipeline.files import list_sources, read_lines
from pipeline.outputs import write_json, write_lines, write_rows
from pipeline.params import SplitParams, load_params

SPLITS = ("train", "val", "test")
CLASSES_FILE = "classes.txt"


def group_units(files: list[tuple[str, str]], groups: list[list[str]]) -> list[list[tuple[str, str]]]:
    """Files joined into units that must share a split: a file and all its (near-)duplicates.

    Groups are merged transitively; members that are not among `files` (quarantined) are ignored.
    Every unit is sorted, and units are ordered by their first file.
    """
    parent = {path: path for path, _ in files}

    def find(path: str) -> str:
        while parent[path] != path:
            parent[path] = parent[parent[path]]
            path = parent[path]
        return path

    for group in groups:
        present = [path for path in group if path in parent]
        for other in present[1:]:
            parent[find(other)] = find(present[0])
    units: dict[str, list[tuple[str, str]]] = {}
    for path, label in sorted(files):
        units.setdefault(find(path), []).append((path, label))
    return sorted(units.values())


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
        targets = {"test": int(round(count * test_fraction)), "val": int(round(count * val_fraction))}
        filled = {"test": 0, "val": 0}
        for position in order:
            unit = units[position]
            name = next((name for name in ("test", "val") if filled[name] < targets[name]), "train")
            if name != "train":
                filled[name] += len(unit)
            splits[name].extend(unit)
    return {name: sorted(items) for name, items in splits.items()}


def write_split_csv(path: str | Path, rows: list[tuple[str, str]]) -> None:
    write_rows(path, [{"path": file, "label": label} for file, label in rows], fields=["path", "label"])


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


def read_groups(audit_report: str | Path) -> list[list[str]]:
    """Duplicate and near-duplicate groups from the audit report (none when there is no report)."""
    path = Path(audit_report)
    if not path.exists():
        return []
    report = json.loads(path.read_text())
    return list(report.get("duplicate_groups", [])) + list(report.get("near_duplicate_groups", []))


def run(
    *,
    data_dir: str,
    classes: list[str] | None,
    manifest: str | None,
    extensions: list[str],
    quarantine_file: str,
    audit_report: str,
    split: SplitParams,
    out_dir: str,
) -> dict:
    listing = list_sources(data_dir, manifest=manifest, classes=classes, extensions=extensions)
    quarantined = set(read_lines(quarantine_file))
    usable = [(path, label) for path, label in listing.files if path not in quarantined]
    groups = read_groups(audit_report)
    splits = stratified_split(
        files=usable, val_fraction=split.val_fraction, test_fraction=split.test_fraction, seed=split.seed, groups=groups
    )
    for name in SPLITS:
        # An empty train split would only surface later as a confusing TensorFlow error.
        if name == "train" and not splits[name]:
            raise DataError(f"no usable images left for training in '{data_dir}' after the audit's quarantine")
        write_split_csv(Path(out_dir) / f"{name}.csv", splits[name])
    # The class order fixes label indices for build, train and evaluate alike.
    write_lines(Path(out_dir) / CLASSES_FILE, listing.classes)
    receipt = split_receipt(splits, classes=listing.classes, excluded=len(listing.files) - len(usable))
    receipt["groups_kept_together"] = sum(1 for unit in group_units(usable, groups) if len(unit) > 1)
    return receipt


def main(*, params_file: str = "params.yaml") -> int:
    params = load_params(params_file)
    receipt = run(
        data_dir=params.data.dir,
        classes=params.data.classes,
        manifest=params.data.manifest,
        extensions=params.data.extensions,
        quarantine_file=params.paths.quarantine,
        audit_report=params.paths.audit_report,
        split=params.split,
        out_dir=params.paths.splits_dir,
    )
    write_json(params.paths.split_metrics, receipt)
    sizes = ", ".join(f"{name} {receipt[name]['total']}" for name in SPLITS)
    print(
        f"split: {sizes}; {receipt['files_excluded_by_audit']} quarantined files left out; "
        f"{receipt['groups_kept_together']} duplicate groups kept within one split"
    )
    return 0
