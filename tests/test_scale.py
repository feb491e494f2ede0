"""What keeps large datasets linear: the vectorised split, the audit cache's digest, groups named briefly, columnar check results."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests import faults
from trainwell.audit.dataset import audit_dataset
from trainwell.audit.workers import check_all
from trainwell.data.groups import groups_from_pairs
from trainwell.data.splits import SPLITS, assign_splits, read_split_csv, stratified_split, write_split_csv
from trainwell.params import AuditParams, DataParams


def reference_split(files, val_fraction, test_fraction, seed, groups):
    """The split as it was written before it was vectorised: one unit at a time, in Python."""
    ordered = sorted(files)
    position = {path: index for index, (path, _) in enumerate(ordered)}
    pairs = []
    for group in groups:
        present = [position[path] for path in group if path in position]
        pairs += [(present[0], other) for other in present[1:]]
    grouped = groups_from_pairs(len(ordered), np.asarray(pairs, dtype=np.int64))
    in_group = {index for group in grouped for index in group}
    units = sorted([[ordered[index] for index in group] for group in grouped]
                   + [[row] for index, row in enumerate(ordered) if index not in in_group])
    by_class: dict[str, list] = {}
    for unit in units:
        by_class.setdefault(unit[0][1], []).append(unit)
    splits: dict[str, list] = {name: [] for name in SPLITS}
    for label, class_units in sorted(by_class.items()):
        order = np.random.default_rng([seed, *label.encode()]).permutation(len(class_units))
        count = sum(len(unit) for unit in class_units)
        targets = {"test": round(count * test_fraction), "val": round(count * val_fraction)}
        filled = {"test": 0, "val": 0}
        for index in order:
            name = next((name for name in ("test", "val") if filled[name] < targets[name]), "train")
            if name != "train":
                filled[name] += len(class_units[index])
            splits[name].extend(class_units[index])
    return {name: sorted(rows) for name, rows in splits.items()}, sum(len(unit) > 1 for unit in units)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_split_is_the_unit_by_unit_split(seed):
    rng = np.random.default_rng(seed)
    files = [(f"{rng.integers(0, 10**6)}/{index}.jpg", f"class{rng.integers(0, 6)}") for index in range(3000)]
    paths = [path for path, _ in files] + ["quarantined/a.jpg", "quarantined/b.jpg"]
    groups = [list(rng.choice(paths, size=int(rng.integers(2, 6)), replace=False)) for _ in range(400)]
    for val_fraction, test_fraction in ((0.15, 0.15), (0.3, 0.05), (0.0, 0.5)):
        expected, kept = reference_split(files, val_fraction, test_fraction, seed, groups)
        assignment = assign_splits(files=files, val_fraction=val_fraction, test_fraction=test_fraction,
                                   seed=seed, groups=groups)
        assert assignment.splits == expected and assignment.kept_together == kept > 0 and not assignment.broken_up
        assert stratified_split(files=files, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
                                groups=groups) == expected


def test_split_lists_round_trip_odd_names(tmp_path):
    rows = [("a,b/\"q\".jpg", "x"), ("line\nbreak.png", "y"), ("\udcff.jpg", "x")]
    write_split_csv(tmp_path / "train.csv", rows)
    assert read_split_csv(tmp_path / "train.csv") == rows


def _audit(root: Path, cache: Path):
    return audit_dataset(root=root, data=DataParams(dir=str(root)), policy=AuditParams(), cache_file=cache)


@pytest.mark.parametrize("damage", ["sidecar byte", "path in the JSON"])
def test_a_damaged_audit_cache_is_warned_about_and_rebuilt(tmp_path, capsys, damage):
    root, cache = tmp_path / "images", tmp_path / "cache.json"
    for index in range(12):
        faults.write(root / ("cat" if index % 2 else "dog") / f"{index:02d}.png", faults.png_bytes(index))
    first = _audit(root, cache)
    assert first.files_decoded == 12
    if damage == "sidecar byte":
        sidecar = cache.with_name(cache.name + ".npy")
        data = bytearray(sidecar.read_bytes())
        data[-100] ^= 0x01  # a bit of a thumbnail: still a well-formed array
        sidecar.write_bytes(bytes(data))
    else:
        text = cache.read_text()
        cache.write_text(text.replace("cat/01.png", "cat/01.pnh", 1))  # still valid JSON
        assert json.loads(cache.read_text())["paths"]
    capsys.readouterr()
    again = _audit(root, cache)
    assert capsys.readouterr().err.count("ignoring the audit cache") == 1
    assert again.files_decoded == 12 and again.as_dict() == first.as_dict()
    assert _audit(root, cache).files_decoded == 0  # rebuilt, and trusted again


def test_a_cache_half_written_when_the_audit_was_killed_is_rebuilt(tmp_path, capsys):
    """The cache's files are replaced by removing the old one first (see cache._move): a kill in
    between leaves the JSON without its sidecar, which the next audit rebuilds, with one warning."""
    root, cache = tmp_path / "images", tmp_path / "cache.json"
    for index in range(6):
        faults.write(root / ("cat" if index % 2 else "dog") / f"{index:02d}.png", faults.png_bytes(index))
    first = _audit(root, cache)
    cache.with_name(cache.name + ".npy").unlink()
    capsys.readouterr()
    again = _audit(root, cache)
    assert capsys.readouterr().err.count("ignoring the audit cache") == 1
    assert again.files_decoded == 6 and again.as_dict() == first.as_dict()


def test_another_decoder_version_makes_the_cache_a_clean_miss(tmp_path, monkeypatch, capsys):
    """Pixels come from Pillow, libjpeg-turbo (simplejpeg) and OpenCV: results cached under one
    version are not reused under another, and that is a silent miss, not a damaged cache."""
    import simplejpeg

    root, cache = tmp_path / "images", tmp_path / "cache.json"
    faults.write(root / "cat" / "a.jpg", faults.jpeg_bytes(1))
    faults.write(root / "dog" / "b.jpg", faults.jpeg_bytes(2))
    assert _audit(root, cache).files_decoded == 2
    assert _audit(root, cache).files_decoded == 0
    monkeypatch.setattr(simplejpeg, "__version__", "0.0.1")
    capsys.readouterr()
    assert _audit(root, cache).files_decoded == 2
    assert "ignoring the audit cache" not in capsys.readouterr().err


def test_a_large_duplicate_group_names_a_few_members_and_lists_them_all(tmp_path):
    root = tmp_path / "images"
    for index in range(40):
        faults.write(root / "cat" / f"copy{index:02d}.png", faults.png_bytes(7))
    faults.write(root / "dog" / "other.png", faults.png_bytes(8))
    report = audit_dataset(root=root, data=DataParams(dir=str(root)), policy=AuditParams())
    duplicates = [issue for issue in report.issues if issue.kind == "exact_duplicate"]
    assert len(duplicates) == 40 and report.duplicate_groups == [[f"cat/copy{index:02d}.png" for index in range(40)]]
    assert all(issue.detail.count(".png") == 5 and "and 34 more" in issue.detail for issue in duplicates)
    assert "cat/copy00.png" not in duplicates[0].detail and "cat/copy00.png" in duplicates[1].detail


def test_checked_batches_cover_every_file_in_order(tmp_path):
    root = tmp_path / "images"
    items = []
    for index in range(150):  # past the pool's threshold: chunks from a process pool
        name = f"cat/{index:03d}.png"
        faults.write(root / name, faults.truncated_jpeg(index) if index % 50 == 7 else faults.png_bytes(index))
        items.append((name, "cat"))
    batches = list(check_all(items, root=root, policy=AuditParams(workers=2)))
    assert sum(len(batch) for batch in batches) == 150 and len(batches) > 1
    findings = {}
    offset = 0
    for batch in batches:
        findings.update({offset + row: found for row, found in batch.findings.items()})
        offset += len(batch)
    assert {row: [kind for kind, _ in found] for row, found in findings.items()} == {
        7: ["truncated"], 57: ["truncated"], 107: ["truncated"]}
    pixel_hashes = np.concatenate([batch.columns["pixel_hash"] for batch in batches])
    assert (pixel_hashes == b"").tolist() == [index % 50 == 7 for index in range(150)]


def test_a_re_audit_after_rewriting_files_in_place_equals_a_fresh_audit(tmp_path):
    """With the same files in the same order, the cache's columns are copied whole and the changed
    rows checked over them: nothing stale may survive in a rewritten file's row."""
    root, cache = tmp_path / "images", tmp_path / "cache.json"
    paths = [root / ("cat" if index % 2 else "dog") / f"{index:02d}.png" for index in range(16)]
    for index, path in enumerate(paths):
        faults.write(path, faults.png_bytes(index))
    _audit(root, cache)
    paths[3].write_bytes(faults.png_bytes(3)[:-40])  # now truncated: no pixels, no hashes
    with Image.open(paths[8]) as image:  # now the same pixels as another class's file, in other bytes
        image.save(paths[5], format="PNG", compress_level=1)
    assert paths[5].read_bytes() != paths[8].read_bytes()
    paths[9].write_bytes(faults.png_bytes(99))  # other pixels
    os.utime(paths[11], ns=(7, 7))  # touched only
    again, fresh = _audit(root, cache), _audit(root, None)
    assert again.files_decoded == 3  # the touched file's bytes were seen: reused
    assert again.as_dict() == fresh.as_dict()
    assert {(issue.path, issue.kind) for issue in again.issues} >= {
        ("cat/03.png", "truncated"), ("cat/05.png", "label_conflict"), ("dog/08.png", "label_conflict")}
