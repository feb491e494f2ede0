"""The per-file checks' registry is the one place a check is added: it runs, is cached, reported and re-run on its params."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import Field

from trainwell.audit import file_checks
from trainwell.audit.dataset import audit_dataset
from trainwell.audit.file_checks import FILE_CHECKS, FileCheck, Sample
from trainwell.audit.properties import PROPERTIES
from trainwell.audit.similarity import grey_of
from trainwell.kinds import AUDIT_KINDS, DEFAULT_SEVERITY
from trainwell.params import AuditParams, DataParams

# Kinds made outside the per-file checks: by listing the dataset (data/listing.py) and by the
# dataset-level checks over every file's cached results (audit/dataset.py, audit/properties.py).
LISTING_KINDS = {"path_outside_root", "symlink_outside", "special_file", "missing_file", "unknown_label",
                 "conflicting_rows", "unknown_class", "missing_class", "stray_file", "unreadable"}
DATASET_KINDS = {"exact_duplicate", "label_conflict", "near_duplicate", "class_imbalance",
                 *(prop.kind for prop in PROPERTIES)}


class ToyParams(AuditParams):
    """The audit policy with the toy check's one param (a new check's param goes into AuditParams)."""

    toy_bright_above: float = Field(100.0, ge=0.0, le=255.0, description="mean luma above this is toy_bright")


def _measure_toy(sample: Sample, policy: AuditParams) -> list[tuple[str, str]]:
    mean = float(sample.grey.mean())
    sample.columns["toy_mean"][sample.row] = mean
    if sample.image.shape[0] == 13:  # a size no other file has: a check that crashes on some files
        raise RuntimeError("the toy check fails on this file")
    threshold = policy.toy_bright_above  # type: ignore[attr-defined]
    return [("toy_bright", f"mean luma {mean:.0f} > {threshold:g}")] if mean > threshold else []


TOY = FileCheck("toy", ("toy_bright",), {"toy_mean": np.zeros(0, np.float32)}, ("toy_bright_above",), _measure_toy)


def _dataset(root: Path, *, seed: int = 0) -> dict[str, float]:
    """Noisy 24x24 PNGs at generated brightness levels in two classes; {path: mean luma}."""
    rng = np.random.default_rng(seed)
    means = {}
    for index, level in enumerate(rng.integers(20, 236, size=12).tolist()):
        pixels = np.clip(level + rng.integers(-15, 16, size=(24, 24, 3)), 0, 255).astype(np.uint8)
        path = f"{'ab'[index % 2]}/{index:02d}.png"
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / path)
        means[path] = float(grey_of(pixels).mean())
    return means


def _audit(root: Path, cache: Path, policy: AuditParams):
    return audit_dataset(root=root, data=DataParams(dir=str(root)), policy=policy, cache_file=cache)


def _toy_issues(report) -> dict[str, str]:
    return {issue.path: issue.severity for issue in report.issues if issue.kind == "toy_bright"}


def _stored(cache: Path) -> np.ndarray:
    return np.load(cache.with_name(cache.name + ".npy"))


def test_a_check_added_to_the_registry_alone_runs_is_cached_reported_and_rerun_on_its_param(
        tmp_path, monkeypatch, capsys):
    root, cache = tmp_path / "images", tmp_path / "cache.json"
    means = _dataset(root)
    assert _audit(root, cache, AuditParams()).files_decoded == 12  # a cache written before the check existed

    monkeypatch.setattr(file_checks, "FILE_CHECKS", (*FILE_CHECKS, TOY))
    bright = {path for path, mean in means.items() if mean > 100}
    assert 0 < len(bright) < 12
    first = _audit(root, cache, ToyParams(toy_bright_above=100))
    # Run: the old cache (no toy column) was a clean miss, every file measured, no damage reported.
    assert first.files_decoded == 12 and "ignoring the audit cache" not in capsys.readouterr().err
    # Reported, with the default severity of a kind kinds.DEFAULT_SEVERITY does not list.
    assert _toy_issues(first) == dict.fromkeys(sorted(bright), "warning")
    assert {item["kind"] for item in first.as_dict()["issues"]} >= {"toy_bright"}
    # Cached: its column in the sidecar, its findings in cache.json.
    stored = _stored(cache)
    assert "toy_mean" in stored.dtype.names
    paths = json.loads(cache.read_text())["paths"]
    assert dict(zip(paths, stored["toy_mean"].tolist())) == pytest.approx(means, abs=1e-3)

    again = _audit(root, cache, ToyParams(toy_bright_above=100))
    assert again.files_decoded == 0 and again.as_dict() == first.as_dict()

    # Its param changed: every cached result is stale, so every file is measured again.
    stricter = _audit(root, cache, ToyParams(toy_bright_above=250))
    assert stricter.files_decoded == 12 and _toy_issues(stricter) == {}
    assert _audit(root, cache, ToyParams(toy_bright_above=250)).files_decoded == 0
    # A param no per-file check depends on (judged against the dataset on every run) keeps the cache.
    assert _audit(root, cache, ToyParams(toy_bright_above=250, outlier_z=9.0)).files_decoded == 0

    monkeypatch.setattr(file_checks, "FILE_CHECKS", FILE_CHECKS)  # the check removed again: a clean miss
    without = _audit(root, cache, AuditParams())
    assert without.files_decoded == 12 and "toy_mean" not in _stored(cache).dtype.names
    assert "ignoring the audit cache" not in capsys.readouterr().err


def test_a_registered_check_that_raises_is_one_files_finding_never_the_end_of_the_audit(tmp_path, monkeypatch):
    """Generated files of many sizes; the toy check raises on those 13 pixels high: each of those is
    `corrupt` (checking failed), keeps no half-written result, and every other file is measured."""
    root, cache = tmp_path / "images", tmp_path / "cache.json"
    rng = np.random.default_rng(1)
    sizes = {f"{'ab'[index % 2]}/{index:02d}.png": (int(height), int(width))
             for index, (height, width) in enumerate(rng.integers(12, 15, size=(16, 2)))}
    for path, shape in sizes.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, size=(*shape, 3), dtype=np.uint8)).save(root / path)
    failing = {path for path, (height, _) in sizes.items() if height == 13}
    assert failing and len(failing) < len(sizes)
    monkeypatch.setattr(file_checks, "FILE_CHECKS", (*FILE_CHECKS, TOY))
    policy = ToyParams(min_side=1, toy_bright_above=0)
    report = _audit(root, cache, policy)
    corrupt = {issue.path for issue in report.issues if issue.kind == "corrupt"}
    assert corrupt == failing
    assert all("the toy check fails" in issue.detail for issue in report.issues if issue.kind == "corrupt")
    assert set(_toy_issues(report)) == set(sizes) - failing
    stored = _stored(cache)
    kept = dict(zip(json.loads(cache.read_text())["paths"], stored["pixel_hash"]))
    assert all(kept.get(path, b"") == b"" for path in failing)  # cleared: measured again next time
    assert _audit(root, cache, policy).files_decoded == len(failing)


def test_every_registered_check_names_real_params_known_kinds_and_columns_of_its_own():
    fields = set(AuditParams.model_fields)
    names = [name for check in FILE_CHECKS for name in check.columns]
    assert len(names) == len(set(names)), "two checks store the same column"
    for check in FILE_CHECKS:
        assert set(check.params) <= fields, check.name
        assert set(check.kinds) <= set(AUDIT_KINDS), check.name
        assert check.severities == {kind: DEFAULT_SEVERITY[kind] for kind in check.kinds}
    assert file_checks.policy_fields() == ("max_pixels", "file_timeout_s", "min_side", "max_aspect_ratio")


def test_every_kind_is_made_by_a_registered_check_the_listing_or_a_dataset_level_check():
    per_file = {kind for check in FILE_CHECKS for kind in check.kinds}
    assert set(AUDIT_KINDS) - per_file - LISTING_KINDS == DATASET_KINDS
