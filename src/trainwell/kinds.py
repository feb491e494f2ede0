"""The audit's vocabulary: finding kinds with their default severities, findings, and the one severity rule."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass

# Blocking kinds (the default policy quarantines them and fails the stage) are errors;
# conversions the pipeline applies are info; suspicious but trainable things are warnings.
# Insertion order is the order of the default policy lists in params.yaml.
DEFAULT_SEVERITY = {
    "path_outside_root": "error",
    "unreadable": "error",
    "empty_file": "error",
    "not_an_image": "error",
    "corrupt": "error",
    "truncated": "error",
    "too_large": "error",
    "nan": "error",
    "inf": "error",
    "label_conflict": "error",
    "symlink_outside": "error",
    "special_file": "error",
    "decoder_crash": "error",
    "decode_timeout": "error",
    "missing_file": "warning",
    "unknown_label": "warning",
    "conflicting_rows": "warning",
    "extension_mismatch": "warning",
    "decoder_warning": "warning",
    "too_small": "warning",
    "constant": "warning",
    "odd_aspect_ratio": "warning",
    "dark": "warning",
    "light": "warning",
    "low_information": "warning",
    "blurry": "warning",
    "near_duplicate": "warning",
    "class_imbalance": "warning",
    "exact_duplicate": "warning",
    "unknown_class": "warning",
    "missing_class": "warning",
    "stray_file": "warning",
    "grayscale": "info",
    "alpha": "info",
    "cmyk": "info",
    "high_bit_depth": "info",
    "palette": "info",
    "animated": "info",
}
AUDIT_KINDS = tuple(DEFAULT_SEVERITY)
# Properties of a file rather than defects: when most of a dataset shares one (every file grayscale,
# every JPEG named .png, every picture 12 pixels wide), it is said once, as a Note, not per file.
SHARED_KINDS = ("grayscale", "alpha", "cmyk", "high_bit_depth", "palette", "animated", "extension_mismatch",
                "too_small", "odd_aspect_ratio", "decoder_warning")
# The share of the files scanned from which such a kind is a note.
SHARED_SHARE = 0.5
BLOCKING_KINDS = [kind for kind, severity in DEFAULT_SEVERITY.items() if severity == "error"]


@dataclass(frozen=True)
class Finding:
    """Something a check found about one path (or class): a stable `kind` and a detail for people."""

    path: str
    kind: str
    detail: str


@dataclass(frozen=True)
class Issue:
    """A finding judged by the policy: severity error (fails the stage), warning or info."""

    path: str
    kind: str
    severity: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "kind": self.kind, "severity": self.severity, "detail": self.detail}


@dataclass(frozen=True)
class Note:
    """Something most of the dataset shares, said once instead of once per file: a kind, how many files, a detail."""

    kind: str
    files: int
    detail: str

    def as_dict(self) -> dict[str, str | int]:
        return {"kind": self.kind, "files": self.files, "detail": self.detail}


def shared_notes(findings: list[Finding], *, files: int, policy_kinds: Collection[str]) -> tuple[list[Finding], list[Note]]:
    """Findings of a SHARED_KINDS kind held by at least SHARED_SHARE of `files` become one note each.

    A kind the policy fails on or quarantines stays per file whatever its share: those lists
    need every file named.
    """
    holders: dict[str, dict[str, str]] = {}
    for found in findings:
        if found.kind in SHARED_KINDS and found.kind not in policy_kinds:
            holders.setdefault(found.kind, {}).setdefault(found.path, found.detail)
    shared = {kind for kind, paths in holders.items() if files and len(paths) >= SHARED_SHARE * files}
    notes = []
    for kind in sorted(shared):
        details = Counter(holders[kind].values())
        common, count = details.most_common(1)[0]
        wording = f"{common} ({count} files; {len(details) - 1} other wordings)" if len(details) > 1 else common
        notes.append(Note(kind, len(holders[kind]), f"{len(holders[kind])} of {files} files: {wording}; a property "
                          "of this dataset, reported once"))
    return [found for found in findings if found.kind not in shared], notes


def severity_for(kind: str, *, fail_on: Collection[str]) -> str:
    """The one rule for severities: error when the policy fails on the kind, else its default, at most warning."""
    if kind in fail_on:
        return "error"
    default = DEFAULT_SEVERITY.get(kind, "warning")
    return "warning" if default == "error" else default


def judge(findings: Iterable[Finding], *, fail_on: Collection[str]) -> list[Issue]:
    """Findings stamped with their severity under the policy, ordered by path then kind."""
    issues = [Issue(found.path, found.kind, severity_for(found.kind, fail_on=fail_on), found.detail)
              for found in findings]
    return sorted(issues, key=lambda issue: (issue.path, issue.kind))
