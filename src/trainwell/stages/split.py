"""Stage `split`: seeded, stratified train/val/test lists; quarantined files out, duplicate groups together."""

from __future__ import annotations

from pathlib import Path

from trainwell import storage
from trainwell.console import say, shown, warn
from trainwell.data.listing import list_sources
from trainwell.data.splits import (
    CLASSES_FILE,
    COUNTS_FILE,
    SPLIT_NAMES,
    SPLITS,
    assign_splits,
    check_trainable,
    split_receipt,
    write_split_csv,
)
from trainwell.errors import DataError
from trainwell.outputs import guard_stage, guarded, read_rows, write_json
from trainwell.params import load_params


def read_groups(audit_report: str | Path) -> list[list[str]]:
    """Duplicate and near-duplicate groups from the audit report (none when there is no report)."""
    try:
        report = storage.read_json(audit_report)
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise DataError(f"the audit report '{shown(str(audit_report))}' cannot be read ({exc}); run `dvc repro audit` again") from None
    exact = report.get("duplicate_groups", []) if isinstance(report, dict) else None
    near = report.get("near_duplicate_groups", []) if isinstance(report, dict) else None
    if isinstance(near, list):  # near-duplicate groups are {"representative", "members", ...}
        near = [group.get("members") if isinstance(group, dict) else None for group in near]
    groups = exact + near if isinstance(exact, list) and isinstance(near, list) else None
    if groups is None or not all(isinstance(group, list) and all(isinstance(path, str) for path in group)
                                 for group in groups):
        raise DataError(f"the audit report '{shown(str(audit_report))}' does not hold groups of file paths where "
                        "duplicate_groups and near_duplicate_groups belong; run `dvc repro audit` again")
    return groups


@guarded
def main(*, params_file: str = "params.yaml") -> int:
    params = load_params(params_file)
    guard_stage("split", params=params, params_file=params_file)
    data, paths = params.data, params.paths
    listing = list_sources(data.dir, manifest=data.manifest, classes=data.classes, extensions=data.extensions)
    quarantined = {row["path"] for row in read_rows(paths.quarantine, columns=["path"])}
    usable = [(path, label) for path, label in listing.files if path not in quarantined]
    groups = read_groups(paths.audit_report)
    assignment = assign_splits(files=usable, val_fraction=params.split.val_fraction,
                               test_fraction=params.split.test_fraction, seed=params.split.seed, groups=groups,
                               max_group_share=params.split.max_group_share)
    splits = assignment.splits
    # An empty or one-class split would only surface later as a confusing TensorFlow error.
    if not splits["train"]:
        raise DataError(f"no usable images left for training in '{data.dir}' after the audit's quarantine")
    for text in check_trainable(splits, classes=listing.classes,
                                min_images_per_class=params.split.min_images_per_class):
        warn(f"split: {text}")
    for group in assignment.broken_up:
        warn(f"split: a duplicate group of {group['files']} files ({group['share']:.0%} of class "
             f"'{shown(group['class'])}', e.g. {shown(group['example'])}) is over split.max_group_share = "
             f"{params.split.max_group_share:g}: its files were split one by one so every split keeps the class; "
             "look at the audit's near_duplicate groups to see whether they are really copies")
    for name in SPLITS:
        write_split_csv(Path(paths.splits_dir) / f"{name}.csv", splits[name])
    # The class order fixes label indices for build, train and evaluate alike.
    write_json(Path(paths.splits_dir) / CLASSES_FILE, listing.classes)
    receipt = split_receipt(assignment, classes=listing.classes, excluded=len(listing.files) - len(usable))
    write_json(Path(paths.splits_dir) / COUNTS_FILE, receipt)
    # The metric is a few numbers (one row of `dvc exp show`); the counts per class are in counts.json.
    write_json(paths.split_metrics, {**{SPLIT_NAMES[name]: len(splits[name]) for name in SPLITS},
                                     "files_excluded_by_audit": receipt["files_excluded_by_audit"],
                                     "groups_kept_together": receipt["groups_kept_together"]})
    sizes = ", ".join(f"{name} {len(splits[name])}" for name in SPLITS)
    say(
        f"split: {sizes}; {receipt['files_excluded_by_audit']} quarantined files left out; "
        f"{receipt['groups_kept_together']} duplicate groups kept within one split"
    )
    return 0
