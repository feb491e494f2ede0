"""The audit's report object and its renderings: text for people, JSON for tools, GitHub annotations, metrics."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from trainwell import storage
from trainwell.kinds import Issue


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

    def to_json(self) -> str:
        """The report as JSON: {root, classes, files_scanned, issues: [{path, kind, severity, detail}], ...}."""
        return json.dumps(self.as_dict(), indent=2)

    def to_html(self, *, max_pixels: int = 40_000_000) -> str:
        """A self-contained page: counts, class balance and thumbnails of flagged files (decoded under max_pixels)."""
        from trainwell.reports.audit_page import render_html

        return render_html(self.as_dict(), root=self.root, max_pixels=max_pixels)

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
        return report.to_json()
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
