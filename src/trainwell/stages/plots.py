"""`trainwell plots`: DVC's plots (the `plots:` in dvc.yaml, any revisions) as one page of static SVG that renders offline.

`dvc plots show` writes HTML that loads vega, vega-lite and vega-embed from a CDN, so on an
offline machine (or in a locked-down CI) that page is blank. This command asks DVC for the same
Vega-Lite specs, data included (`--json`), and renders each to SVG with vl-convert, at once and
with no network: no browser, no Node.js, no script in the page.
"""

from __future__ import annotations

import html
import json
import subprocess
import sys
from pathlib import Path

from trainwell.console import say, shown
from trainwell.errors import TrainwellError
from trainwell.outputs import check_output, guarded, protect_inputs, write_text_atomically
from trainwell.reports.charts import reliability_chart, render_svg
from trainwell.reports.html import STYLE


def dvc_plot_specs(revisions: list[str]) -> dict[str, list[dict]]:
    """plot id -> DVC's rendered entries ({type, revisions, content}) for the workspace or the given revisions."""
    # The DVC beside this interpreter (as init runs it): `dvc` need not be on PATH.
    arguments = ["plots", "diff", *revisions, "--json"] if revisions else ["plots", "show", "--json"]
    command = [sys.executable, "-m", "dvc", *arguments]
    shown = f"dvc {' '.join(arguments)}"
    answer = subprocess.run(command, capture_output=True, text=True, errors="backslashreplace")
    if answer.returncode != 0:
        raise TrainwellError(f"{shown} failed: {answer.stderr.strip()[-800:]}")
    try:
        document = json.loads(answer.stdout)
    except ValueError:
        raise TrainwellError(f"{shown} printed no JSON: {answer.stdout.strip()[:300]}") from None
    if not isinstance(document, dict):
        raise TrainwellError(f"{shown} printed JSON that is not an object: {answer.stdout.strip()[:300]}")
    if document.get("errors"):
        raise TrainwellError(f"dvc could not read every plot: {json.dumps(document['errors'])[:800]}")
    data = document.get("data", {})
    return {str(plot_id): entries for plot_id, entries in data.items()} if isinstance(data, dict) else {}


RELIABILITY_COLUMNS = {"lower", "upper", "confidence", "accuracy", "count"}  # evaluate's reliability.csv


def as_the_site_draws(content: dict) -> dict:
    """DVC's spec, drawn as the report site draws the same data. The confusion template shows its
    counts only behind a checkbox a static page cannot have: they are switched on. A reliability
    table of one revision is drawn with the site's chart: the diagonal of perfect calibration and
    each bin's image count (a bin of one image can sit anywhere)."""
    params = content.get("params")
    if isinstance(params, list) and any(isinstance(item, dict) and item.get("name") == "showValues" for item in params):
        content = {**content, "params": [{"name": "showValues", "value": True} if isinstance(item, dict)
                                         and item.get("name") == "showValues" else item for item in params]}
    data = content.get("data")
    rows = data.get("values") if isinstance(data, dict) else None
    if (isinstance(rows, list) and rows and all(isinstance(row, dict) and set(row) >= RELIABILITY_COLUMNS for row in rows)
            and len({row.get("rev") for row in rows}) == 1):
        try:
            bins = [{"lower": float(row["lower"]), "upper": float(row["upper"]), "confidence": float(row["confidence"]),
                     "accuracy": float(row["accuracy"]), "count": int(float(row["count"]))} for row in rows]
        except (TypeError, ValueError):
            return content  # not numbers: DVC's own drawing, as it is
        return reliability_chart(bins=bins)
    return content


def render_page(plots: dict[str, list[dict]], *, revisions: list[str]) -> str:
    """The page: each Vega plot as static SVG (render_svg: nothing fetched, a spec it cannot draw
    named with why), the others listed as not drawn."""
    figures, skipped = [], []
    for number, (plot_id, entries) in enumerate(plots.items()):
        for entry in entries if isinstance(entries, list) else [entries]:
            content = entry.get("content") if isinstance(entry, dict) else None
            if not isinstance(entry, dict) or entry.get("type") != "vega" or not isinstance(content, dict):
                skipped.append(plot_id)  # image plots: DVC copies the files; nothing to draw
                continue
            figures.append(render_svg(as_the_site_draws(content), name=f"plot{number}", description=plot_id))
    note = (f"<p>Not drawn (not Vega plots): {html.escape(', '.join(sorted(set(skipped))))}</p>" if skipped else "")
    compared = html.escape(", ".join(revisions) if revisions else "the workspace")
    return "\n".join([
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>DVC plots (static)</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>DVC plots: {compared}</h1>",
        "<p>The plots dvc.yaml declares, drawn by <code>trainwell plots</code> as static SVG (no script, no "
        "network). The report site (<code>reports/index.html</code>, written by <code>dvc repro</code>) has the "
        "same figures with explanations.</p>",
        note,
        f'<div class="charts">{"".join(figures)}</div>',
        "</body></html>",
    ])


@guarded
def main(*, out: str = "dvc_plots", revisions: list[str] | None = None) -> int:
    revisions = list(revisions or [])
    protect_inputs(inputs=["dvc.yaml", "dvc.lock", "params.yaml"])
    target = Path(out) / "index.html"
    check_output(target, label="--out")  # before asking DVC for anything
    plots = dvc_plot_specs(revisions)
    if not plots:
        raise TrainwellError("dvc has no plots to show here; run `dvc repro` first (or check the `plots:` in dvc.yaml)")
    write_text_atomically(target, render_page(plots, revisions=revisions))
    say(f"plots: {len(plots)} plots drawn as SVG in {shown(target)}; it renders with no network")
    return 0
