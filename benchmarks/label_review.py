"""Benchmark: precision and recall of the label review's label-issue and outlier finding, on planted faults.

Usage: python benchmarks/label_review.py [--images-per-class 1000] [--flip-fraction 0.05] [--outliers 50]
                                          [--folds 5] [--epochs 12] [--memory-budget-mb 4096] [--shard-size 4096]
                                          [--seed 0] [--keep FOLDER]

Generates the demo set (5 classes of 75x75 shapes), then plants faults before the split, so they
land in every split, test included: a share of the files moved into a wrong class folder
(flipped labels) and out-of-class images (noise, a solid colour, stripes, a star outline)
written into random class folders. Then runs the real stages in a temporary project (audit,
split, build, label_review, with the shipped params but for the ones given here) and compares
suspects.csv with the flipped files and outliers.csv with the planted ones.

Label issues: precision counts the planted out-of-class images neither way (they have no right
label, so flagging them is not wrong, and they are the outlier finding's to find). Outliers:
precision and recall against the planted images, and recall per kind. --memory-budget-mb 0
makes every fold stream its images from the cache shards (--shard-size images each).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.label_faults

import yaml

from tests.label_faults import OUTLIER_KINDS, plant_faults, precision_recall
from trainwell.console import QUIET, set_verbosity
from trainwell.data.demo import SHAPES, generate
from trainwell.params import DemoParams, Params

IMAGE_SIZE = 75


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def run_project(folder: Path, args: argparse.Namespace) -> float:
    """Generate, plant, and run audit/split/build/label_review in `folder`; return the review's seconds."""
    from trainwell.stages import audit, build, label_review, split

    params = Params().model_dump(mode="json")
    params["demo"].update(images_per_class=args.images_per_class, image_size=IMAGE_SIZE)
    params["data"].update(image_size=IMAGE_SIZE)
    params["build"].update(shard_size=args.shard_size)
    params["train"].update(memory_budget_mb=args.memory_budget_mb)
    params["label_review"].update(folds=args.folds, epochs_per_fold=args.epochs)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    os.chdir(folder)
    set_verbosity(QUIET)
    if audit.main() != 0 or split.main() != 0 or build.main() != 0:
        raise SystemExit("the audit, split or build stage failed")
    started = time.monotonic()
    label_review.main()
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images-per-class", type=int, default=1000)
    parser.add_argument("--flip-fraction", type=float, default=0.05, help="share of files moved to a wrong class")
    parser.add_argument("--outliers", type=int, default=50, help="out-of-class images planted (kinds in turn)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=12, help="epochs per fold model")
    parser.add_argument("--memory-budget-mb", type=int, default=4096, help="0: every fold streams from the shards")
    parser.add_argument("--shard-size", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=0, help="of the demo images and of the planted faults")
    parser.add_argument("--keep", metavar="FOLDER", help="run in this folder and keep it (default: a temporary one)")
    args = parser.parse_args()

    folder = Path(args.keep or tempfile.mkdtemp(prefix="trainwell-bench-labels-")).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        root = folder / "data" / "demo"
        generate(out_dir=root, demo=DemoParams(classes=list(SHAPES), images_per_class=args.images_per_class,
                                               image_size=IMAGE_SIZE, seed=args.seed))
        flipped, planted = plant_faults(root, flip_fraction=args.flip_fraction, outliers=args.outliers,
                                        size=IMAGE_SIZE, seed=123 + args.seed)
        seconds = run_project(folder, args)
        reviewed = {row["path"]: name for name in ("train", "val", "test")
                    for row in read_csv(folder / "data" / "splits" / f"{name}.csv")}
        suspects = read_csv(folder / "reports" / "labels" / "suspects.csv")
        outliers = read_csv(folder / "reports" / "labels" / "outliers.csv")
        metrics = yaml.safe_load((folder / "metrics" / "labels.json").read_text())
    finally:
        os.chdir("/")
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)

    flips, plants = set(flipped) & set(reviewed), set(planted) & set(reviewed)
    flagged = {row["path"] for row in suspects}
    odd = {row["path"] for row in outliers}
    streamed = "streamed by shard" if args.memory_budget_mb == 0 else "in memory"
    print(f"demo set: {len(reviewed)} images reviewed ({len(flips)} flipped labels = {args.flip_fraction:.0%}, "
          f"{len(plants)} planted out-of-class images), {args.folds} folds x {args.epochs} epochs, {streamed}; "
          f"label review {seconds:.0f} s")
    precision, recall = precision_recall(flagged, flips, ignore=plants)
    right = reviewed.keys() - flips - plants
    print(f"label issues: precision {precision:.3f}, recall {recall:.3f} ({len(flagged - plants)} flagged, "
          f"{len(flagged & flips)} of {len(flips)} flips found; {len(flagged & right)} of {len(right)} right labels "
          f"flagged; {len(flagged & plants)} of {len(plants)} planted images flagged too)")
    for name in ("train", "val", "test"):
        in_split = {path for path, split in reviewed.items() if split == name}
        split_precision, split_recall = precision_recall(flagged & in_split, flips & in_split, ignore=plants)
        print(f"  {name:5s}: precision {split_precision:.3f}, recall {split_recall:.3f} "
              f"({len(flips & in_split)} flips)")
    found = [row for row in suspects if row["path"] in flips]
    named = sum(row["suggested_label"] == flipped[row["path"]] for row in found)
    print(f"  suggestions name the true class for {named} of {len(found)} flips found")
    precision, recall = precision_recall(odd, plants)
    print(f"outliers: precision {precision:.3f}, recall {recall:.3f} ({len(odd)} flagged, {len(odd & plants)} of "
          f"{len(plants)} planted found; {len(odd & flips)} flipped files flagged)")
    by_kind = Counter(planted[path] for path in plants)
    hits = Counter(planted[path] for path in odd & plants)
    print("  recall by kind: " + ", ".join(f"{kind} {hits[kind]}/{by_kind[kind]}" for kind in OUTLIER_KINDS))
    print(f"metrics/labels.json: {metrics}")


if __name__ == "__main__":
    main()
