"""Label review on the demo set: flipped labels are found, right labels are left alone."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import CLASSES, snapshot, tiny_params, write_params
from trainwell.data.demo import generate
from trainwell.params import DemoParams, load_params
from trainwell.stages import audit, build, label_review, split

pytestmark = pytest.mark.slow

IMAGES_PER_CLASS = 1000


def prepare(workdir: Path, *, flip_fraction: float) -> dict[str, str]:
    """Demo images at 75x75 in workdir/data/demo, with a seeded share moved into a wrong class folder."""
    root = workdir / "data" / "demo"
    generate(out_dir=root, demo=DemoParams(classes=CLASSES, images_per_class=IMAGES_PER_CLASS, image_size=75))
    files = sorted(root.rglob("*.jpg"))
    rng = np.random.default_rng(123)
    flipped = {}  # new path -> the true class
    for index in rng.choice(len(files), size=round(flip_fraction * len(files)), replace=False):
        source = files[index]
        wrong = rng.choice([label for label in CLASSES if label != source.parent.name])
        target = root / wrong / f"flipped_{source.name}"
        source.rename(target)
        flipped[f"{wrong}/{target.name}"] = source.parent.name
    params = tiny_params(image_size=75)
    params["split"].update(val_fraction=0.15, test_fraction=0.15)
    write_params(workdir, params)
    assert audit.main() == 0 and split.main() == 0 and build.main() == 0
    return flipped


def review(workdir: Path) -> tuple[list[dict], set[str]]:
    before = snapshot(workdir / "data" / "demo")
    assert label_review.main() == 0
    assert snapshot(workdir / "data" / "demo") == before  # the review never relabels or moves a file
    report = Path(load_params().paths.label_report_dir)
    with (report / label_review.SUSPECTS_FILE).open() as handle:
        suspects = list(csv.DictReader(handle))
    reviewed = set()
    for name in ("train", "val"):
        with (Path(load_params().paths.splits_dir) / f"{name}.csv").open() as handle:
            reviewed |= {row["path"] for row in csv.DictReader(handle)}
    assert "<img" in (report / "index.html").read_text()
    return suspects, reviewed


def test_flipped_labels_are_found_and_right_labels_left_alone(workdir):
    # One review serves both claims (a second 5,000-image review cost 85 s of the suite): it
    # finds the flipped labels, and it almost never flags a file whose label is right, even
    # though its models learned from the 5% of wrong labels too.
    flipped = prepare(workdir, flip_fraction=0.05)
    suspects, reviewed = review(workdir)
    flagged = {row["path"] for row in suspects}
    truth = set(flipped) & reviewed  # flipped files that landed in the test split are not reviewed
    precision = len(flagged & truth) / len(flagged)
    recall = len(flagged & truth) / len(truth)
    false_alarms = len(flagged - truth) / len(reviewed - truth)
    print(f"label review: precision {precision:.3f}, recall {recall:.3f}, {len(flagged - truth)} of "
          f"{len(reviewed - truth)} correctly labelled files flagged")
    assert precision >= 0.8 and recall >= 0.8, (precision, recall, len(flagged), len(truth))
    assert false_alarms < 0.01, (len(flagged - truth), len(reviewed - truth))
    # Suggestions name the true class (the folder the file was moved out of), and the
    # suggested-labels manifest carries them for flagged files only.
    found = [row for row in suspects if row["path"] in truth]
    right = sum(row["suggested_label"] == flipped[row["path"]] for row in found)
    assert right >= 0.9 * len(found)
    with (Path(load_params().paths.label_report_dir) / label_review.SUGGESTED_FILE).open() as handle:
        adopted = {row["path"]: row["label"] for row in csv.DictReader(handle)}
    assert all(adopted[row["path"]] == row["suggested_label"] for row in suspects)
    unflagged = sorted(reviewed - flagged)[:20]
    assert all(adopted[path] == path.split("/")[0] for path in unflagged)
    scores = [float(row["score"]) for row in suspects]
    assert scores == sorted(scores)  # most suspicious first
