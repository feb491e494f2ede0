"""Image properties judged against the dataset: quiet on real photographs, still loud on planted and uniformly bad images."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests import faults
from trainwell.audit.cache import FORMAT
from trainwell.audit.dataset import audit_dataset
from trainwell.params import AuditParams, DataParams

PROPERTY_KINDS = {"dark", "light", "low_information", "blurry"}


def photo_crops(*, per_photo: int, seed: int = 0, max_scale: int = 3) -> dict[str, list[np.ndarray]]:
    """Crops of the two photographs scikit-learn ships (china.jpg, flower.jpg), one class each: a
    square of a random side (1 to max_scale times the size) at a random position, area-resized to
    75 or 128 pixels."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images()
    rng = np.random.default_rng(seed)
    crops: dict[str, list[np.ndarray]] = {}
    for filename, photo in zip(photos.filenames, photos.images):
        height, width = photo.shape[:2]
        label = Path(filename).stem
        for index in range(per_photo):
            size = (75, 128)[index % 2]
            side = int(rng.integers(size, min(height, max_scale * size) + 1))
            top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
            crop = np.ascontiguousarray(photo[top:top + side, left:left + side])
            crops.setdefault(label, []).append(cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA))
    return crops


def write_jpegs(root: Path, crops: dict[str, list[np.ndarray]], *, change=lambda pixels: pixels) -> int:
    for label, images in crops.items():
        for index, pixels in enumerate(images):
            faults.write(root / label / f"{index:03d}.jpg", faults.encode(change(pixels), "JPEG", quality=90))
    return sum(len(images) for images in crops.values())


def audit(root: Path, **policy):
    return audit_dataset(root=root, data=DataParams(dir=str(root)), policy=AuditParams(**policy))


def property_issues(report) -> list:
    return [issue for issue in report.issues if issue.kind in PROPERTY_KINDS]


@pytest.fixture(scope="module")
def crops() -> dict[str, list[np.ndarray]]:
    return photo_crops(per_photo=200)


@pytest.mark.parametrize("max_scale", [1, 3], ids=["cut 1:1", "downscaled up to 3x"])
def test_real_photographs_are_quiet(tmp_path, max_scale):
    # The fixed thresholds this replaces (mean brightness < 25 or > 230, Laplacian variance < 20)
    # flagged 29% of 612 crops cut 1:1 from these photographs: clear sky, shadow, out-of-focus background.
    count = write_jpegs(tmp_path / "photos", photo_crops(per_photo=200, max_scale=max_scale))
    report = audit(tmp_path / "photos")
    flagged = {issue.path for issue in property_issues(report)}
    assert count == 400 and len(flagged) < 0.02 * count, Counter(issue.kind for issue in property_issues(report))
    assert report.headline()["errors"] == 0 and report.policy_holds
    fixed = audit(tmp_path / "photos", blurry_below=20.0)  # the old fixed bound, on its own
    assert sum(issue.kind == "blurry" for issue in fixed.issues) > 0.05 * count


def test_planted_faults_among_real_photographs_are_found(crops, tmp_path):
    root = tmp_path / "photos"
    write_jpegs(root, crops)
    planted = {}
    # 18 bad files among 400 good ones, spread over both classes: each kind stays under 2% of each
    # class, as a fault must to be an outlier of its class. The flower's black ground makes dark
    # crops ordinary in its class, and china's hazy sky bright ones: there only a nearly black or
    # nearly white picture is reported (past the absolute bound); in the other class a 10x
    # underexposure (or washing-out) already stands out of the class.
    for index in range(6):
        photo = crops["china"][index * 7]
        in_flower = index % 2 == 0
        underexposed = (photo * (0.03 if in_flower else 0.1)).astype(np.uint8)
        washed_out = (255 - (255 - photo.astype(np.float64)) * (0.03 if in_flower else 0.01)).astype(np.uint8)
        grey = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
        marks = np.where(grey > np.percentile(grey, 97), 40, 220).astype(np.uint8)  # a page with a few marks
        for kind, pixels, fmt in (("dark", underexposed, "JPEG"), ("light", washed_out, "JPEG"),
                                  ("low_information", np.dstack([marks] * 3), "PNG")):
            path = f"{'flower' if in_flower else 'china'}/planted_{kind}_{index}.{fmt.lower().replace('jpeg', 'jpg')}"
            faults.write(root / path, faults.encode(pixels, fmt))
            planted[path] = kind
    report = audit(root)
    found = {(issue.path, issue.kind) for issue in property_issues(report)}
    assert set(planted.items()) <= found  # every planted file, with its kind
    assert len({path for path, _ in found} - set(planted)) < 0.02 * 400  # and the photographs stay quiet


def test_a_uniformly_bad_dataset_is_still_caught(crops, tmp_path):
    blurred = tmp_path / "blurred"
    count = write_jpegs(blurred, crops, change=lambda pixels: cv2.GaussianBlur(pixels, (0, 0), 3))
    report = audit(blurred)
    # Nothing stands out, but the dataset's median is past the bound: said once, for the dataset.
    notes = {note.kind: note for note in report.notes}
    assert notes["blurry"].files >= 0.95 * count and "a property of this dataset" in notes["blurry"].detail
    assert sum(issue.kind == "blurry" for issue in report.issues) < 0.02 * count

    dark = tmp_path / "dark"
    count = write_jpegs(dark, crops, change=lambda pixels: (pixels * 0.1).astype(np.uint8))
    report = audit(dark)
    assert {note.kind: note.files for note in report.notes}["dark"] == count
    assert report.as_dict()["dataset_notes"][0]["files"] == count


def test_a_file_bad_only_beside_its_dataset_is_an_outlier(tmp_path):
    """Crisp noise pictures and one soft one: the soft one is far below the rest, and below the outlier
    bound, but above the absolute bound that would call it blurry on its own."""
    root = tmp_path / "set"
    for index in range(40):
        faults.write(root / "noise" / f"{index}.png", faults.png_bytes(seed=index))
    soft = cv2.GaussianBlur(faults.image_array(99, size=32), (0, 0), 2)  # Laplacian variance ~8, the rest ~50,000
    faults.write(root / "noise" / "soft.png", faults.encode(soft, "PNG"))
    report = audit(root)
    issues = [issue for issue in report.issues if issue.kind == "blurry"]
    assert [issue.path for issue in issues] == ["noise/soft.png"]
    assert "an outlier of its class" in issues[0].detail
    alone = audit(root, outlier_z=1000.0)  # without the dataset to compare with, it passes
    assert not [issue for issue in alone.issues if issue.kind == "blurry"]


def test_scores_are_cached_so_new_bounds_decode_nothing_and_an_old_cache_is_rebuilt(crops, tmp_path):
    root, cache = tmp_path / "photos", tmp_path / "audit-cache.json"
    count = write_jpegs(root, {label: images[:40] for label, images in crops.items()})
    data = DataParams(dir=str(root))
    first = audit_dataset(root=root, data=data, policy=AuditParams(), cache_file=cache)
    assert first.files_decoded == count and json.loads(cache.read_text())["format"] == FORMAT
    stricter = AuditParams(dark_below=250.0, dark_outlier_below=250.0)
    again = audit_dataset(root=root, data=data, policy=stricter, cache_file=cache)
    assert again.files_decoded == 0 and {note.kind: note.files for note in again.notes}["dark"] > count / 2
    assert again.as_dict() == audit_dataset(root=root, data=data, policy=stricter).as_dict()

    # A cache written before the scores existed (format 1: no "format" key, records without the
    # score columns) is a clean miss: every file decoded afresh, nothing read as the wrong layout.
    stored = json.loads(cache.read_text())
    del stored["format"]
    cache.write_text(json.dumps(stored))
    sidecar = cache.with_name(cache.name + ".npy")
    records = np.load(sidecar)
    old_fields = [name for name in records.dtype.names if name not in ("brightest", "darkest", "sharpness", "entropy")]
    np.save(sidecar, records[old_fields].copy())
    rebuilt = audit_dataset(root=root, data=data, policy=AuditParams(), cache_file=cache)
    assert rebuilt.files_decoded == count
    assert rebuilt.as_dict() == first.as_dict()
    assert json.loads(cache.read_text())["format"] == FORMAT
    assert "brightest" in np.load(sidecar).dtype.names
