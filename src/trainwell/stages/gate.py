"""`trainwell gate`: metrics against absolute thresholds and, optionally, against a git revision."""

from __future__ import annotations

import json
from pathlib import Path

from trainwell.console import NORMAL, error, json_for_logs, output, say, verbosity
from trainwell.errors import TrainwellError
from trainwell.outputs import guarded, protect_inputs
from trainwell.params import load_params
from trainwell.reports.gate import (
    evaluate_checks,
    format_table,
    name_weakest_classes,
    read_at_revision,
    read_current,
    split_metric,
)
from trainwell.training.evaluation import PER_CLASS_JSON


@guarded
def main(*, params_file: str = "params.yaml", baseline: str | None = None, output_format: str = "text") -> int:
    params = load_params(params_file)
    protect_inputs(inputs=[params_file])  # writes nothing; guarded like every command
    checks = params.gate.checks
    if not checks:
        raise TrainwellError("no gate checks configured; add them under gate.checks in params.yaml")
    revision = baseline if baseline is not None else params.gate.baseline
    files = sorted({split_metric(check.metric)[0] for check in checks})
    current = {file: read_current(file) for file in files}
    previous = {file: read_at_revision(file, revision) for file in files} if revision else None
    rows = evaluate_checks(checks=checks, current=current, baseline=previous)
    name_weakest_classes(rows, per_class=read_current(str(Path(params.paths.eval_report_dir) / PER_CLASS_JSON)))
    if output_format == "json":
        output(json_for_logs(json.dumps([{"metric": r.metric, "value": r.value, "baseline": r.baseline,
                                          "rules": r.rules, "failures": r.failures, "passed": r.passed}
                                         for r in rows], indent=2)))
    else:
        table = format_table(rows, revision=revision)
        # -q shows errors only, and a failed check is one: its table goes to stderr then.
        if verbosity() < NORMAL and not all(row.passed for row in rows):
            error(table)
        else:
            say(table)
    return 0 if all(row.passed for row in rows) else 1
