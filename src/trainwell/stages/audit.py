"""Stage `audit` (and the standalone `trainwell audit PATH`): decode every file with the training decoder and report."""

from __future__ import annotations

import sys
from pathlib import Path

from trainwell.audit.dataset import audit_dataset
from trainwell.audit.report import metrics_for, render
from trainwell.outputs import write_json, write_lines
from trainwell.params import load_params
from trainwell.reports.audit_page import render_html


def main(
    *,
    params_file: str = "params.yaml",
    path: str | None = None,
    output_format: str = "text",
    html_file: str | None = None,
    cache_file: str | None = None,
) -> int:
    """Stage entry point (no PATH: params' data.dir, writes reports) or standalone audit of PATH."""
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
