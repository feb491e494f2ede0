"""The audit's vocabulary: finding kinds with their default severities, findings, and the one severity rule."""

from __future__ import annotations

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
