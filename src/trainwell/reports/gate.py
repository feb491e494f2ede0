"""The metrics gate: each rule checked against current metrics and, optionally, a git revision's."""

from __future__ import annotations

import json
import math
import subprocess
from dataclasses import dataclass
from pathlib import Path

from trainwell.console import shown
from trainwell.errors import DataError, TrainwellError, UsageError
from trainwell.params import GateCheck


@dataclass
class Row:
    metric: str
    value: float | None
    baseline: float | None
    rules: list[str]
    failures: list[str]

    @property
    def passed(self) -> bool:
        return not self.failures


def lookup(document: dict, dotted: str) -> float | None:
    """document['a']['b'] for 'a.b', as a float; None when absent or not a number."""
    node: object = document
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return float(node) if isinstance(node, (int, float)) and not isinstance(node, bool) else None


def split_metric(metric: str) -> tuple[str, str]:
    """'metrics/eval.json:accuracy' -> ('metrics/eval.json', 'accuracy')."""
    if ":" not in metric:
        raise TrainwellError(f"gate metric '{metric}' must look like FILE:KEY, e.g. metrics/eval.json:accuracy")
    file, key = metric.split(":", 1)
    return file, key


def read_current(file: str) -> dict | None:
    path = Path(file)
    return json.loads(path.read_text()) if path.exists() else None


def read_at_revision(file: str, revision: str) -> dict | None:
    """The JSON file as committed at `revision`, or None when it did not exist there."""
    if revision.startswith("-"):
        # `git show --output=FILE` would write anywhere: a revision is never an option.
        raise UsageError(f"'{revision}' is not a git revision (it starts with '-')")
    shown = subprocess.run(["git", "show", "--end-of-options", f"{revision}:{file}"], capture_output=True, text=True,
                           errors="backslashreplace")
    if shown.returncode != 0:
        if "invalid object name" in shown.stderr or "unknown revision" in shown.stderr:
            raise UsageError(f"git revision '{revision}' not found; fetch it first (git fetch origin {revision})")
        return None
    try:
        return json.loads(shown.stdout)
    except ValueError:
        raise DataError(f"'{file}' at git revision '{revision}' is not valid JSON") from None


def evaluate_checks(*, checks: list[GateCheck], current: dict[str, dict | None],
                    baseline: dict[str, dict | None] | None) -> list[Row]:
    """One row per check: the value, the baseline value, the rules applied and which failed. Pure."""
    rows = []
    for check in checks:
        file, key = split_metric(check.metric)
        value = lookup(current.get(file) or {}, key)
        base = lookup((baseline or {}).get(file) or {}, key) if baseline is not None else None
        rules, failures = [], []
        if value is None or math.isnan(value):
            failures.append(f"missing from {file}; run `dvc repro` first")
        if check.min is not None:
            rules.append(f">= {check.min:g}")
            if value is not None and value < check.min:
                failures.append(f"below {check.min:g}")
        if check.max is not None:
            rules.append(f"<= {check.max:g}")
            if value is not None and value > check.max:
                failures.append(f"above {check.max:g}")
        if baseline is not None and check.max_drop is not None:
            rules.append(f"drop <= {check.max_drop:g}")
            if value is not None and base is not None and base - value > check.max_drop + 1e-12:
                failures.append(f"dropped {base - value:.4g} (> {check.max_drop:g})")
        if baseline is not None and check.max_rise is not None:
            rules.append(f"rise <= {check.max_rise:g}")
            if value is not None and base is not None and value - base > check.max_rise + 1e-12:
                failures.append(f"rose {value - base:.4g} (> {check.max_rise:g})")
        rows.append(Row(check.metric, value, base, rules, failures))
    return rows


def name_weakest_classes(rows: list[Row], *, per_class: dict | None, count: int = 3) -> None:
    """Add to each failed macro-F1 row the classes with the lowest F1 (evaluate's per_class.json):
    a macro average names no culprit, and a class with no test images scores 0 in it."""
    classes = (per_class or {}).get("per_class")
    if not isinstance(classes, dict) or not classes:
        return
    scored = sorted(((float(values.get("f1", 0.0)), name, values.get("support", "?")) for name, values in classes.items()
                     if isinstance(values, dict)), key=lambda item: (item[0], item[1]))
    weakest = ", ".join(f"'{name}' {f1:.2f} ({support} test images)" for f1, name, support in scored[:count])
    for row in rows:
        if not row.passed and row.metric.endswith(":macro_f1"):
            row.failures.append(f"lowest F1: {weakest}")


def format_table(rows: list[Row], *, revision: str | None) -> str:
    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    # Metric names, file names and the revision are the user's: shown as escapes, never a line of their own.
    header = ["metric", "value", f"at {shown(revision)}" if revision else "baseline", "change", "rule", "result"]
    lines = [header]
    for row in rows:
        change = "-" if row.value is None or row.baseline is None else f"{row.value - row.baseline:+.4f}"
        result = "pass" if row.passed else "FAIL: " + "; ".join(row.failures)
        lines.append([shown(row.metric), number(row.value), number(row.baseline), change, ", ".join(row.rules) or "-",
                      shown(result)])
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    rendered = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines]
    rendered.insert(1, "  ".join("-" * width for width in widths))
    failed = sum(not row.passed for row in rows)
    verdict = "all pass" if not failed else f"{failed} FAILED"
    rendered.append(f"gate: {len(rows)} checks, {verdict}")
    return "\n".join(rendered)
