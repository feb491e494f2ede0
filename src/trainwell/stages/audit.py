"""Stage `audit` (and the standalone `trainwell audit PATH`): decode every file with the training decoder and report."""

from __future__ import annotations

from pathlib import Path

from trainwell import storage
from trainwell.audit.dataset import audit_dataset
from trainwell.audit.report import format_violations, metrics_for, quarantine_rows, render
from trainwell.console import NORMAL, VERBOSE, error, output, say, shown, verbosity, warn
from trainwell.errors import ParamsError, UsageError
from trainwell.outputs import (
    check_output,
    guard_stage,
    guarded,
    protect_inputs,
    write_json,
    write_rows,
    write_text_atomically,
)
from trainwell.params import load_params
from trainwell.reports.audit_page import render_html
from trainwell.reports.site import navigation, site_locations


@guarded
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
    if not storage.is_remote(root) and not Path(root).is_dir():
        # Bad usage (2), not a violated policy (1): name what the user gave, where they gave it.
        if path is not None:
            raise UsageError(f"'{path}' does not exist or is not a folder; give the dataset folder to audit "
                             "(one sub-folder per class)")
        raise ParamsError(f"data.dir '{root}' in {params_file} does not exist or is not a folder; point it at "
                          "your dataset (one sub-folder per class)")
    if path is None:
        guard_stage("audit", params=params, params_file=params_file)  # its outputs too
    else:
        protect_inputs(inputs=[params_file], datasets=[path])
    cache_file = storage.project_path(params.paths.audit_cache) if path is None else cache_file
    for label, target in (("--html", html_file), ("--cache" if path else "paths.audit_cache =", cache_file)):
        if target is not None:
            check_output(target, label=label)  # refused now, not after the whole audit
    report = audit_dataset(root=root, data=params.data, policy=params.audit, cache_file=cache_file)
    # The console gets a few findings per kind; every one is in the JSON (and with -v, here).
    where = f"every finding: {shown(params.paths.audit_report)}, or -v" if path is None else "every finding: --format json, or -v"
    rendered = render(report, output_format=output_format, every=verbosity() >= VERBOSE, where=where)
    # Machine-readable output was asked for by name: -q hides only the text report.
    if output_format == "text":
        say(rendered)
    else:
        output(rendered)
    if path is None:
        write_json(params.paths.audit_report, report.as_dict())
        write_json(params.paths.audit_metrics, metrics_for(report))
        # CSV, not one name a line: a file name may hold a newline (see outputs.PATH_ENCODING).
        write_rows(params.paths.quarantine, quarantine_rows(report, policy=params.audit), fields=["path", "kinds"])
        html_file = html_file or params.paths.audit_html
    if html_file is not None:
        if html_file == params.paths.audit_html:  # the report site's audit page: its navigation bar on top
            locations = site_locations(params.paths)
            page = render_html(report.as_dict(), root=report.root, max_pixels=params.audit.max_pixels,
                               navigation=navigation("audit", locations))
        else:
            page = report.to_html(max_pixels=params.audit.max_pixels)
        write_text_atomically(html_file, page)
        warn(f"audit: HTML report written to {shown(html_file)}")
    if not report.policy_holds:
        if verbosity() < NORMAL and output_format == "text":  # -q: the findings that failed it are errors
            error(format_violations(report, where=where))
        error("audit: policy violated (see above)")
    return 0 if report.policy_holds else 1
