"""Stage `audit` (and the standalone `trainwell audit PATH`): decode every file with the training decoder and report."""

from __future__ import annotations

from trainwell.audit.dataset import audit_dataset
from trainwell.audit.report import metrics_for, render
from trainwell.console import error, say, warn
from trainwell.outputs import write_bytes_atomically, write_json, write_lines
from trainwell.params import load_params


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
    rendered = render(report, output_format=output_format)
    # Machine-readable output was asked for by name: -q hides only the text report.
    if output_format == "text":
        say(rendered)
    else:
        print(rendered)
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
        write_bytes_atomically(html_file, report.to_html(max_pixels=params.audit.max_pixels).encode("utf-8"))
        warn(f"audit: HTML report written to {html_file}")
    if not report.policy_holds:
        error("audit: policy violated (see above)")
    return 0 if report.policy_holds else 1
