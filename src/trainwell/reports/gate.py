"""The metrics gate: each rule checked against current metrics and, optionally, a git revision's."""

from __future__ import annotations

import math
import subprocess
from dataclasses import dataclass

from trainwell import storage
from trainwell.console import shown
from trainwell.errors import TrainwellError, UsageError
from trainwell.params import GateCheck

# The largest metrics file read (bytes): dvc metrics files are a few kB; per-class details of a
# thousand classes stay under a megabyte.
MAX_METRICS_BYTES = 16 << 20
METRICS_LIMIT = "a metrics file may have"


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


class _NotANumber:
    """What lookup finds at a key that holds something other than a number (a string, a list, a boolean)."""

    def __init__(self, found: object) -> None:
        self.type = "a boolean" if isinstance(found, bool) else f"a JSON {_json_type(found)}"


def _json_type(value: object) -> str:
    return {str: "string", list: "list", dict: "object", type(None): "null"}.get(type(value), type(value).__name__)


def lookup(document: object, dotted: str) -> float | _NotANumber | None:
    """document['a']['b'] for 'a.b', as a float (inf or nan for non-finite numbers and for
    integers too large for a float); None when absent; _NotANumber when it is not a number."""
    node: object = document
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    if isinstance(node, bool) or not isinstance(node, (int, float)):
        return _NotANumber(node)
    try:
        return float(node)
    except OverflowError:  # an integer of hundreds of digits: no float holds it
        return math.inf if node > 0 else -math.inf


def split_metric(metric: str) -> tuple[str, str]:
    """'metrics/eval.json:accuracy' -> ('metrics/eval.json', 'accuracy')."""
    if ":" not in metric:
        raise TrainwellError(f"gate metric '{metric}' must look like FILE:KEY, e.g. metrics/eval.json:accuracy")
    file, key = metric.split(":", 1)
    return file, key


def read_current(file: str) -> object:
    """The JSON value in a metrics file; None when there is no such file. Anything else that keeps
    it from being read as JSON (a folder, a FIFO, a device, too large, not UTF-8, not JSON, nested
    too deeply, a number of thousands of digits) is a UsageError naming the file."""
    try:
        return storage.read_json(file, max_bytes=MAX_METRICS_BYTES, limit=METRICS_LIMIT)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise UsageError(f"metrics file '{shown(file)}' cannot be read as JSON: {_reason(exc)}; the gate reads the JSON "
                         "files `dvc repro` writes (check gate.checks in params.yaml)") from None


def _reason(exc: Exception) -> str:
    return str(exc.strerror if isinstance(exc, OSError) and exc.strerror else exc)[:300]


def read_at_revision(file: str, revision: str) -> object:
    """The JSON file as committed at `revision`, or None when it did not exist there; a file that
    is not JSON there, or larger than a metrics file may be, is a UsageError naming it."""
    if revision.startswith("-"):
        # `git show --output=FILE` would write anywhere: a revision is never an option.
        raise UsageError(f"'{revision}' is not a git revision (it starts with '-')")
    # Its size first: `git show` would hand over all of a committed multi-GB file.
    sized = subprocess.run(["git", "cat-file", "-s", f"{revision}:{file}"], capture_output=True, text=True,
                           errors="backslashreplace")
    if sized.returncode == 0 and int(sized.stdout.strip() or 0) > MAX_METRICS_BYTES:
        raise UsageError(f"metrics file '{file}' at git revision '{revision}' has {sized.stdout.strip()} bytes, "
                         f"more than the {MAX_METRICS_BYTES} {METRICS_LIMIT}")
    committed = subprocess.run(["git", "show", "--end-of-options", f"{revision}:{file}"], capture_output=True)
    if committed.returncode != 0:
        stderr = committed.stderr.decode("utf-8", "backslashreplace")
        if "invalid object name" in stderr or "unknown revision" in stderr:
            raise UsageError(f"git revision '{revision}' not found; fetch it first (git fetch origin {revision})")
        return None
    try:
        return storage.parse_json(committed.stdout)
    except ValueError as exc:
        raise UsageError(f"metrics file '{file}' at git revision '{revision}' is {exc}") from None


def _value_problem(value: float | _NotANumber | None, file: str, *, what: str) -> str | None:
    """Why a looked-up value cannot be compared, or None when it is a finite number."""
    if value is None:
        return f"missing from {file}; run `dvc repro` first" if what == "value" else None
    if isinstance(value, _NotANumber):
        return f"{what} in {file} is {value.type}, not a number"
    if not math.isfinite(value):
        return f"{what} in {file} is {value}, not a finite number"
    return None


def evaluate_checks(*, checks: list[GateCheck], current: dict[str, object],
                    baseline: dict[str, object] | None) -> list[Row]:
    """One row per check: the value, the baseline value, the rules applied and which failed. Pure.

    Only a finite number can pass: a value that is missing, not a number, NaN or infinite fails
    every rule of its check (`Infinity` would otherwise pass any `min`), and a baseline that is
    not a finite number fails the rules that compare with it."""
    rows = []
    for check in checks:
        file, key = split_metric(check.metric)
        found = lookup(current.get(file), key)
        found_base = lookup(baseline.get(file), key) if baseline is not None else None
        failures = [problem for problem in (_value_problem(found, file, what="value"),) if problem]
        value = found if isinstance(found, float) and not failures else None
        relative = baseline is not None and (check.max_drop is not None or check.max_rise is not None)
        base_problem = _value_problem(found_base, file, what="baseline value") if relative else None
        if base_problem:
            failures.append(base_problem)
        base = found_base if isinstance(found_base, float) and math.isfinite(found_base) else None
        rules = []
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


def name_weakest_classes(rows: list[Row], *, per_class: object, count: int = 3) -> None:
    """Add to each failed macro-F1 row the classes with the lowest F1 (evaluate's per_class.json):
    a macro average names no culprit, and a class with no test images scores 0 in it. Entries that
    are not a class with a finite F1 are left out: the file is evaluate's, but read as any input."""
    classes = per_class.get("per_class") if isinstance(per_class, dict) else None
    if not isinstance(classes, dict):
        return
    scored = sorted((float(values["f1"]), str(name), values.get("support", "?")) for name, values in classes.items()
                    if isinstance(values, dict) and isinstance(values.get("f1"), int | float)
                    and math.isfinite(values["f1"]))
    if not scored:
        return
    weakest = ", ".join(f"'{shown(name)}' {f1:.2f} ({shown(str(support))} test images)" for f1, name, support in scored[:count])
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
