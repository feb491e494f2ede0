"""The audit's finding kinds: stable names, each with the severity it has when the policy does not fail on it."""

from __future__ import annotations

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
    "missing_file": "warning",
    "unknown_label": "warning",
    "conflicting_rows": "warning",
    "extension_mismatch": "warning",
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
