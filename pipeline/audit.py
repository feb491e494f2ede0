"""Stage `audit`: decode every file with the training decoder and report what would hurt training."""

from __future__ import annotations

import functools
import hashlib
import json
import multiprocessing
import os
import sys
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from pipeline import storage
from pipeline.audit_cache import COLUMNS, AuditCache, content_hash
from pipeline.decode import DecodeError, decode_image
from pipeline.files import Issue, list_sources
from pipeline.kinds import DEFAULT_SEVERITY
from pipeline.outputs import write_json, write_lines
from pipeline.params import AuditParams, DataParams, load_params
from pipeline.progress import progress
from pipeline.similarity import grey_of, groups_from_pairs, near_duplicate_pairs, perceptual_hash, tiny_thumbnail


@dataclass
class FileResult:
    """What decoding one file found: its issues (kind, detail) and a hash of its decoded pixels."""

    path: str
    label: str
    findings: list[tuple[str, str]] = field(default_factory=list)
    content_hash: str | None = None  # of the file's bytes, for the incremental cache
    pixel_hash: str | None = None
    perceptual_hash: np.ndarray | None = None  # 8 packed bytes
    thumbnail: np.ndarray | None = None  # 8x8 RGB, 192 uint8 values


@dataclass
class FileTable:
    """Per-file results of one audit as columns, row i describing paths[i] (see audit_cache.COLUMNS).

    Only `findings` holds per-file Python objects, and only for the files that have some: a
    re-audit fills the columns for unchanged files with one gather from the cache.
    """

    paths: list[str]
    labels: list[str]
    columns: dict[str, np.ndarray]
    findings: dict[str, list[tuple[str, str]]]  # path -> (kind, detail) pairs

    @classmethod
    def empty(cls, files: list[tuple[str, str]]) -> FileTable:
        count = len(files)
        columns = {name: np.zeros((count, *empty.shape[1:]), dtype=empty.dtype) for name, empty in COLUMNS.items()}
        return cls(paths=[path for path, _ in files], labels=[label for _, label in files], columns=columns,
                   findings={})

    def put(self, position: int, result: FileResult) -> None:
        """Row `position` from a freshly checked file."""
        if result.findings:
            self.findings[result.path] = result.findings
        if result.content_hash is not None:
            self.columns["content"][position] = bytes.fromhex(result.content_hash)
        if result.pixel_hash is not None:
            self.columns["pixel_hash"][position] = bytes.fromhex(result.pixel_hash)
            self.columns["perceptual_hash"][position] = result.perceptual_hash
            self.columns["thumbnail"][position] = result.thumbnail

    @property
    def decoded(self) -> np.ndarray:
        """Which rows decoded to pixels (and so take part in the duplicate checks)."""
        return self.columns["pixel_hash"] != b""


@dataclass
class AuditReport:
    """Everything the audit found, plus which files the later stages must leave out."""

    root: str
    classes: list[str]
    files_scanned: int
    issues: list[Issue]
    quarantined: list[str]
    class_counts: dict[str, int]
    violations: list[Issue]
    near_duplicate_groups: list[list[str]] = field(default_factory=list)
    duplicate_groups: list[list[str]] = field(default_factory=list)  # pixel-identical files
    files_decoded: int = 0  # how many were decoded this run (the rest came from the cache)

    @property
    def policy_holds(self) -> bool:
        return not self.violations

    def summary(self) -> dict:
        by_kind = Counter(issue.kind for issue in self.issues)
        by_severity = Counter(issue.severity for issue in self.issues)
        return {
            "files_scanned": self.files_scanned,
            "files_quarantined": len(self.quarantined),
            "issues_by_kind": dict(sorted(by_kind.items())),
            "issues_by_severity": {key: by_severity.get(key, 0) for key in ("error", "warning", "info")},
            "class_counts": self.class_counts,
            "policy_holds": self.policy_holds,
        }

    def as_dict(self) -> dict:
        return {
            "root": self.root,
            "classes": self.classes,
            # files_decoded is left out on purpose: the same data must give the same report
            # bytes whether or not the cache was warm, or DVC would rerun every later stage.
            "files_scanned": self.files_scanned,
            "issues": [issue.as_dict() for issue in self.issues],
            "quarantined": self.quarantined,
            "near_duplicate_groups": self.near_duplicate_groups,
            "duplicate_groups": self.duplicate_groups,
            "summary": self.summary(),
        }


def content_findings(image: np.ndarray, grey: np.ndarray, *, policy: AuditParams) -> list[tuple[str, str]]:
    """Shape and content problems of a decoded RGB uint8 image and its luma (cheap statistics, no model)."""
    findings = []
    height, width = image.shape[:2]
    if min(height, width) < policy.min_side:
        findings.append(("too_small", f"{width}x{height}; shorter side below {policy.min_side} pixels"))
    aspect = max(height, width) / max(1, min(height, width))
    if aspect > policy.max_aspect_ratio:
        findings.append(("odd_aspect_ratio", f"{width}x{height} (ratio {aspect:.1f} > {policy.max_aspect_ratio}); "
                         "a square resize will distort it"))
    if (image == image[0, 0]).all():
        findings.append(("constant", f"every pixel has the colour {tuple(int(v) for v in image[0, 0])}"))
        return findings
    mean = cv2.mean(grey)[0]  # cv2 reductions: a tenth of numpy's per-call overhead on 75x75 images
    if mean < policy.dark_below:
        findings.append(("dark", f"mean brightness {mean:.1f} of 255 is below {policy.dark_below}"))
    elif mean > policy.light_above:
        findings.append(("light", f"mean brightness {mean:.1f} of 255 is above {policy.light_above}"))
    sharpness = float(cv2.meanStdDev(cv2.Laplacian(grey, cv2.CV_32F))[1][0, 0]) ** 2
    if sharpness < policy.blurry_below:
        findings.append(("blurry", f"variance of the Laplacian {sharpness:.1f} is below {policy.blurry_below}"))
    histogram = np.bincount(grey.ravel(), minlength=256) / grey.size
    nonzero = histogram[histogram > 0]
    entropy = float(-(nonzero * np.log2(nonzero)).sum())
    if entropy < policy.min_entropy:
        findings.append(("low_information", f"brightness entropy {entropy:.2f} bits is below {policy.min_entropy}"))
    return findings


def check_file(*, root: Path | str, path: str, label: str, policy: AuditParams) -> FileResult:
    """Read and fully decode one file; never raises for a bad file, records why it is bad instead."""
    result = FileResult(path=path, label=label)
    try:
        data = storage.read_bytes(storage.join(root, path) if storage.is_remote(root) else os.path.join(root, path))
    except OSError as exc:
        result.findings.append(("unreadable", f"could not read the file: {exc.strerror or exc}"))
        return result
    result.content_hash = content_hash(data)
    try:
        decoded = decode_image(data, suffix=os.path.splitext(path)[1], max_pixels=policy.max_pixels)
    except DecodeError as exc:
        result.findings.append((exc.kind, exc.detail))
        return result
    result.findings.extend(decoded.notes)
    image = decoded.image
    grey = grey_of(image)
    result.findings.extend(content_findings(image, grey, policy=policy))
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str(image.shape).encode())
    digest.update(np.ascontiguousarray(image).data)
    result.pixel_hash = digest.hexdigest()
    result.perceptual_hash = perceptual_hash(grey)
    result.thumbnail = tiny_thumbnail(image)
    return result


def _duplicate_findings(table: FileTable) -> tuple[list[Issue], list[list[str]]]:
    """Same pixels within a class are duplicates; same pixels under two classes is a label conflict.

    Also returns the groups of pixel-identical files, which `split` keeps in one split."""
    decoded = np.flatnonzero(table.decoded)
    _, inverse, counts = np.unique(table.columns["pixel_hash"][decoded], return_inverse=True, return_counts=True)
    repeated = np.flatnonzero(counts > 1)
    issues, path_groups = [], []
    for group in repeated.tolist():
        members = decoded[inverse.ravel() == group].tolist()
        labels = sorted({table.labels[member] for member in members})
        paths = [table.paths[member] for member in members]
        path_groups.append(paths)
        for path in paths:
            others = ", ".join(other for other in paths if other != path)
            if len(labels) > 1:
                issues.append(Issue(path, "label_conflict", "", f"same pixels appear under classes {labels}: {others}"))
            else:
                issues.append(Issue(path, "exact_duplicate", "", f"same pixels as {others}"))
    return issues, sorted(path_groups)


def _near_duplicate_findings(
    table: FileTable, *, policy: AuditParams, stable: np.ndarray, previous_pairs: list[list[str]]
) -> tuple[list[Issue], list[list[str]], list[list[str]]]:
    """Near-duplicate issues and groups (pHash + tiny thumbnail), leaving out groups that are only
    exact copies; also the linked pairs, for the cache.

    Pairs between two `stable` files (bytes unchanged since `previous_pairs` were found with
    today's settings) are taken from those; only the other files are compared against the rest,
    so a re-audit after a small change stays cheap.
    """
    decoded = np.flatnonzero(table.decoded)
    if len(decoded) < 2:
        return [], [], []
    hashes = table.columns["perceptual_hash"][decoded]
    thumbnails = table.columns["thumbnail"][decoded]
    settings = dict(max_distance=policy.near_duplicate_distance, max_pixel_difference=policy.near_duplicate_pixel_difference)
    changed = np.flatnonzero(~stable[decoded])
    if len(changed) == len(decoded):
        pairs = near_duplicate_pairs(hashes=hashes, thumbnails=thumbnails, **settings)
    else:
        kept = np.zeros((0, 2), dtype=np.int64)
        if previous_pairs:
            positions = np.flatnonzero(stable[decoded])
            where = dict(zip([table.paths[row] for row in decoded[positions].tolist()], positions.tolist()))
            kept = np.array([(where[a], where[b]) for a, b in previous_pairs if a in where and b in where],
                            dtype=np.int64).reshape(-1, 2)
        fresh = near_duplicate_pairs(hashes=hashes, thumbnails=thumbnails, rows=changed, **settings) \
            if len(changed) else np.zeros((0, 2), dtype=np.int64)
        pairs = np.concatenate([kept, fresh])
    pair_paths = [[table.paths[a], table.paths[b]] for a, b in decoded[pairs].reshape(-1, 2).tolist()]
    issues, path_groups = [], []
    for group in groups_from_pairs(len(decoded), pairs):
        members = decoded[group]
        if len(set(table.columns["pixel_hash"][members].tolist())) == 1:
            continue  # identical pixels: already reported as exact_duplicate or label_conflict
        group_paths = [table.paths[member] for member in members.tolist()]
        path_groups.append(group_paths)
        labels = sorted({table.labels[member] for member in members.tolist()})
        for path in group_paths:
            others = ", ".join(other for other in group_paths if other != path)
            where = f" across classes {labels}" if len(labels) > 1 else ""
            issues.append(Issue(path, "near_duplicate", "", f"looks like {others}{where}"))
    return issues, path_groups, pair_paths


def _imbalance_findings(class_counts: dict[str, int], *, policy: AuditParams) -> list[Issue]:
    present = {label: count for label, count in class_counts.items() if count > 0}
    if len(present) < 2:
        return []
    largest = max(present, key=present.get)
    smallest = min(present, key=present.get)
    ratio = present[largest] / present[smallest]
    if ratio <= policy.max_class_imbalance:
        return []
    return [Issue(smallest, "class_imbalance", "", f"{present[largest]} images in '{largest}' vs {present[smallest]} "
                  f"in '{smallest}' (ratio {ratio:.1f} > {policy.max_class_imbalance}); consider "
                  "train.class_weight: balanced")]


def _check_item(item: tuple[str, str], *, root: Path | str, policy: AuditParams) -> FileResult:
    path, label = item
    return check_file(root=root, path=path, label=label, policy=policy)


def _check_all(items: list[tuple[str, str]], *, root: Path | str, policy: AuditParams) -> Iterator[FileResult]:
    """FileResults of items, in order, as they are ready (the caller keeps columns, not the objects)."""
    workers = policy.workers or os.cpu_count() or 1
    check = functools.partial(_check_item, root=root, policy=policy)
    if workers == 1 or len(items) < 64:
        yield from (check(item) for item in progress(items, total=len(items), description="audit"))
        return
    if storage.is_remote(root):
        # Object-store reads wait on the network, so threads overlap them; forked processes would
        # each start tensorflow-io's S3 client (and its abort at exit, see storage.exit_process).
        with ThreadPoolExecutor(max_workers=4 * workers) as pool:
            yield from progress(pool.map(check, items), total=len(items), description="audit")
        return
    # Processes, not threads: per-file work is ~0.4 ms of mostly Python and small numpy calls,
    # so threads serialise on the GIL. Chunks amortise the pickling of each result.
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork")) as pool:
        chunk = max(1, min(256, len(items) // (workers * 8)))
        yield from progress(pool.map(check, items, chunksize=chunk), total=len(items), description="audit")


def audit_dataset(
    *, root: str | Path, data: DataParams, policy: AuditParams, cache_file: str | Path | None = None
) -> AuditReport:
    """Audit a folder-per-class dataset against a policy. Reads files; never writes or moves them.

    With `cache_file`, per-file results are reused for files whose bytes were audited before
    under the same thresholds and code; only new or changed files are decoded.
    """
    root = str(root) if storage.is_remote(root) else Path(root)
    listing = list_sources(root, manifest=data.manifest, classes=data.classes, extensions=data.extensions)
    table = FileTable.empty(listing.files)
    # The cache keys files by local stat (size, mtime); remote objects are always read afresh.
    cache = AuditCache(None if storage.is_remote(root) else cache_file, policy)
    stats = listing.stats if listing.stats is not None else [(-1, -1)] * len(listing.files)
    sizes, mtimes = np.array(stats, dtype=np.int64).reshape(-1, 2).T
    rows, unchanged = cache.match(root=root, paths=table.paths, sizes=sizes, mtimes=mtimes)
    reused = np.flatnonzero(rows >= 0)
    for name in COLUMNS:
        table.columns[name][reused] = cache.columns[name][rows[reused]] if len(reused) else 0
    for position, found in cache.reused_findings(rows).items():
        table.findings[table.paths[position]] = found
    todo = np.flatnonzero(rows < 0).tolist()
    for position, result in zip(todo, _check_all([listing.files[position] for position in todo], root=root,
                                                 policy=policy)):
        table.put(position, result)

    raw: list[Issue] = list(listing.issues)
    for path, found in table.findings.items():
        raw.extend(Issue(path, kind, "", detail) for kind, detail in found)
    duplicate_issues, duplicate_groups = _duplicate_findings(table)
    raw.extend(duplicate_issues)
    near_issues, near_groups, near_pairs = _near_duplicate_findings(
        table, policy=policy, stable=unchanged if cache.near_valid else np.zeros(len(rows), dtype=bool),
        previous_pairs=cache.previous_near_pairs)
    raw.extend(near_issues)
    cache.save(paths=table.paths, sizes=sizes, mtimes=mtimes, columns=table.columns, findings=table.findings,
               near_pairs=near_pairs, unchanged=bool(unchanged.all()) and len(rows) == len(cache.paths))

    fail_on = set(policy.fail_on)
    issues = []
    for issue in raw:
        if issue.kind in fail_on:
            severity = "error"
        else:
            severity = DEFAULT_SEVERITY.get(issue.kind, "warning")
            # A kind the policy does not fail on is at most a warning.
            severity = "warning" if severity == "error" else severity
        issues.append(Issue(issue.path, issue.kind, severity, issue.detail))
    issues.sort(key=lambda issue: (issue.path, issue.kind))

    quarantine_kinds = set(policy.quarantine)
    flagged = {issue.path for issue in issues if issue.kind in quarantine_kinds}
    label_of = dict(listing.files) if flagged else {}
    quarantined = sorted(path for path in flagged if path in label_of)
    class_counts = Counter(table.labels)
    class_counts.subtract(label_of[path] for path in quarantined)
    counts = {label: class_counts.get(label, 0) for label in listing.classes}
    for issue in _imbalance_findings(counts, policy=policy):
        severity = "error" if issue.kind in fail_on else "warning"
        issues.append(Issue(issue.path, issue.kind, severity, issue.detail))
    issues.sort(key=lambda issue: (issue.path, issue.kind))
    return AuditReport(
        root=str(root),
        classes=listing.classes,
        files_scanned=len(listing.files),
        issues=issues,
        quarantined=quarantined,
        class_counts=counts,
        violations=[issue for issue in issues if issue.kind in fail_on],
        near_duplicate_groups=near_groups,
        duplicate_groups=duplicate_groups,
        files_decoded=len(todo),
    )


def format_text(report: AuditReport) -> str:
    """Human-readable report: one line per finding, then a summary and what to do next."""
    lines = []
    for issue in report.issues:
        lines.append(f"{issue.severity.upper():7} {issue.kind:18} {issue.path}: {issue.detail}")
    summary = report.summary()
    counts = ", ".join(f"{label} {count}" for label, count in report.class_counts.items())
    lines.append(
        f"audited {report.files_scanned} files in {report.root}: "
        f"{summary['issues_by_severity']['error']} errors, {summary['issues_by_severity']['warning']} warnings, "
        f"{summary['issues_by_severity']['info']} info; {len(report.quarantined)} quarantined; "
        f"{report.files_decoded} decoded, {report.files_scanned - report.files_decoded} unchanged since the last audit"
    )
    lines.append(f"usable images per class: {counts}")
    if report.policy_holds:
        lines.append("policy holds: the dataset may be trained on")
    else:
        kinds = sorted({issue.kind for issue in report.violations})
        lines.append(
            f"policy violated by {len(report.violations)} finding(s) of kind {', '.join(kinds)}: fix or remove "
            "those files, or drop the kinds from audit.fail_on in params.yaml to train without them "
            "(quarantined files are always left out)"
        )
    return "\n".join(lines)


def format_github(report: AuditReport) -> str:
    """GitHub Actions workflow commands, one annotation per finding (info findings are notices)."""
    level = {"error": "error", "warning": "warning", "info": "notice"}
    lines = []
    for issue in report.issues:
        path = storage.join(report.root, issue.path) if storage.is_remote(report.root) else (
            Path(report.root) / issue.path).as_posix()
        detail = issue.detail.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
        lines.append(f"::{level[issue.severity]} file={path},title={issue.kind}::{detail}")
    return "\n".join(lines)


def render(report: AuditReport, *, output_format: str) -> str:
    if output_format == "json":
        return json.dumps(report.as_dict(), indent=2)
    if output_format == "github":
        return format_github(report)
    return format_text(report)


def metrics_for(report: AuditReport) -> dict:
    """The small numeric summary DVC tracks as metrics."""
    summary = report.summary()
    return {
        "files_scanned": report.files_scanned,
        "files_quarantined": len(report.quarantined),
        "errors": summary["issues_by_severity"]["error"],
        "warnings": summary["issues_by_severity"]["warning"],
        "issues_by_kind": summary["issues_by_kind"],
    }


def main(
    *,
    params_file: str = "params.yaml",
    path: str | None = None,
    output_format: str = "text",
    html_file: str | None = None,
    cache_file: str | None = None,
) -> int:
    """Stage entry point (no PATH: params' data.dir, writes reports) or standalone audit of PATH."""
    from pipeline.audit_html import render_html

    params = load_params(params_file)
    root = path if path is not None else params.data.dir
    cache_file = params.paths.audit_cache if path is None else cache_file
    report = audit_dataset(root=root, data=params.data, policy=params.audit, cache_file=cache_file)
    print(render(report, output_format=output_format))
    if path is None:
        write_json(params.paths.audit_report, report.as_dict())
        write_json(params.paths.audit_metrics, metrics_for(report))
        write_lines(
            params.paths.quarantine,
            report.quarantined,
            header="files the audit excluded from split and build (paths relative to data.dir); see the audit report",
        )
        html_file = html_file or params.paths.audit_html
    if html_file is not None:
        page = Path(html_file)
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(render_html(report.as_dict(), root=root, max_pixels=params.audit.max_pixels))
        print(f"audit: HTML report written to {page}", file=sys.stderr)
    if not report.policy_holds:
        print("audit: policy violated (see above)", file=sys.stderr)
    return 0 if report.policy_holds else 1
