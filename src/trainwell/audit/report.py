"""The audit's report object and its renderings: text for people, JSON for tools, GitHub annotations, metrics."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from trainwell import storage
from trainwell.console import json_for_logs, shown, without_surrogates
from trainwell.kinds import DEFAULT_SEVERITY, Issue, Note
from trainwell.params import AuditParams

SEVERITIES = ("error", "warning", "info")  # the order findings are shown in


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
    # {representative, members, size, lowest_similarity}: every member is alike with the representative.
    near_duplicate_groups: list[dict] = field(default_factory=list)
    duplicate_groups: list[list[str]] = field(default_factory=list)  # pixel-identical files
    notes: list[Note] = field(default_factory=list)  # what most of the dataset shares, said once
    files_decoded: int = 0  # how many were decoded this run (the rest came from the cache)

    @property
    def policy_holds(self) -> bool:
        return not self.violations

    def headline(self) -> dict[str, int]:
        """The numbers a run is judged by (metrics/audit.json), counting files (or folders, for layout findings).

        errors: files with a finding of a kind that is an error by default (corrupt, truncated, nan, ...),
        whatever audit.fail_on says, so dropping a kind from the policy cannot hide a broken file;
        policy_errors: files with a finding audit.fail_on makes fatal (they fail the stage);
        warnings: files with a finding of a warning kind; quarantined: files left out of split and build.
        """
        def files_with(default: str) -> int:
            return len({issue.path for issue in self.issues if DEFAULT_SEVERITY.get(issue.kind, "warning") == default})

        return {
            "files_scanned": self.files_scanned,
            "errors": files_with("error"),
            "policy_errors": len({issue.path for issue in self.violations}),
            "warnings": files_with("warning"),
            "quarantined": len(self.quarantined),
        }

    def summary(self) -> dict:
        by_kind = Counter(issue.kind for issue in self.issues)
        by_severity = Counter(issue.severity for issue in self.issues)
        return {
            **self.headline(),
            "issues_by_kind": dict(sorted(by_kind.items())),
            "issues_by_severity": {key: by_severity.get(key, 0) for key in SEVERITIES},
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
            "dataset_notes": [note.as_dict() for note in self.notes],
            "summary": self.summary(),
        }


def _kind_counts(issues: list[Issue]) -> list[str]:
    """One line per severity present, errors first: each kind and its count, the most frequent first."""
    lines = []
    for severity in SEVERITIES:
        counts = Counter(issue.kind for issue in issues if issue.severity == severity)
        ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        if ordered:
            lines.append(f"  {severity:7} " + ", ".join(f"{kind} {count}" for kind, count in ordered))
    return lines


def _in_severity_order(issues: list[Issue]) -> list[Issue]:
    return sorted(issues, key=lambda issue: (SEVERITIES.index(issue.severity), issue.kind, issue.path))


# Findings shown per kind at the default verbosity; -v (or --format json) shows every one.
EXAMPLES_PER_KIND = 3


def _by_kind(issues: list[Issue], *, every: bool, where: str) -> list[str]:
    """Per kind (errors first): a line with its count, then a few findings, or all of them with `every`."""
    lines: list[str] = []
    ordered = _in_severity_order(issues)
    for position, issue in enumerate(ordered):
        first = position == 0 or (ordered[position - 1].kind, ordered[position - 1].severity) != \
            (issue.kind, issue.severity)
        if first:
            same = [other for other in ordered[position:] if (other.kind, other.severity) == (issue.kind, issue.severity)]
            lines.append(f"{issue.severity.upper():7} {issue.kind}: {len(same)} file{'s' * (len(same) != 1)}")
            examples = same if every else same[:EXAMPLES_PER_KIND]
            # A file name is data: shown as escapes (console.shown), so it can neither split the finding
            # over two lines nor start one with "::", which GitHub's runner would obey even in a text report.
            lines += [f"  {shown(example.path)}: {shown(example.detail)}" for example in examples]
            if len(same) > len(examples):
                lines.append(f"  ... and {len(same) - len(examples)} more ({where})")
    return lines


def format_violations(report: AuditReport, *, every: bool = False, where: str = "every finding: --format json") -> str:
    """Only the findings that violate the policy, per kind with a few examples (what -q shows)."""
    return "\n".join(_by_kind(report.violations, every=every, where=where))


def format_text(report: AuditReport, *, every: bool = False, where: str = "every finding: --format json, or -v") -> str:
    """Human-readable report: the counts per kind, what the whole dataset shares, then per kind its
    count and a few findings (`every`: all of them; `where` says where the rest are), then the class
    counts and what to do next. Its length follows the kinds found, not the files."""
    numbers = report.headline()
    lines = [
        f"audited {report.files_scanned} files in {shown(report.root)}: {numbers['errors']} with errors, "
        f"{numbers['warnings']} with warnings, {numbers['policy_errors']} failing the policy; "
        f"{numbers['quarantined']} quarantined",
        *_kind_counts(report.issues),
        *(f"NOTE    {note.kind}: {shown(note.detail)}" for note in report.notes),
        *_by_kind(report.issues, every=every, where=where),
        f"{report.files_decoded} decoded, {report.files_scanned - report.files_decoded} unchanged since the last audit",
        "usable images per class: " + ", ".join(f"{shown(label)} {count}"
                                                 for label, count in report.class_counts.items()),
    ]
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


def _escape_data(text: str) -> str:
    """A workflow command's message: %, CR and LF escaped (the runner's UnescapeData)."""
    return without_surrogates(text).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    """A workflow command's property value: as data, plus : and , (the runner's UnescapeProperty)."""
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def format_github(report: AuditReport) -> str:
    """GitHub Actions workflow commands, one annotation per finding (info findings are notices).

    File names are untrusted (a pull request picks them), so every property value and the
    message are escaped as the runner unescapes them: no name can end the line, close the
    property list, add a property, or make text that UTF-8 stdout cannot print.
    """
    level = {"error": "error", "warning": "warning", "info": "notice"}
    lines = []
    for issue in report.issues:
        path = storage.join(report.root, issue.path) if storage.is_remote(report.root) else (
            Path(report.root) / issue.path).as_posix()
        properties = ",".join(
            f"{key}={_escape_property(value)}" for key, value in (("file", path), ("title", issue.kind)))
        lines.append(f"::{level[issue.severity]} {properties}::{_escape_data(issue.detail)}")
    return "\n".join(lines)


def render(report: AuditReport, *, output_format: str, every: bool = False,
           where: str = "every finding: --format json, or -v") -> str:
    if output_format == "json":
        return json_for_logs(report.to_json())
    if output_format == "github":
        return format_github(report)
    return format_text(report, every=every, where=where)


def quarantine_rows(report: AuditReport, *, policy: AuditParams) -> list[dict[str, str]]:
    """One row per quarantined file (path relative to the root) with the kinds that put it there."""
    kinds: dict[str, set[str]] = {path: set() for path in report.quarantined}
    for issue in report.issues:
        if issue.path in kinds and issue.kind in policy.quarantine:
            kinds[issue.path].add(issue.kind)
    return [{"path": path, "kinds": " ".join(sorted(kinds[path]))} for path in report.quarantined]


def metrics_for(report: AuditReport) -> dict:
    """The headline numbers DVC tracks as metrics (see AuditReport.headline); counts per kind stay in the
    report's summary, so `dvc exp show` keeps one column per number here."""
    return report.headline()
