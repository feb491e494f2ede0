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
from pathlib import Path

from trainwell.console import say
from trainwell.errors import TrainwellError
from trainwell.outputs import write_text_atomically
from trainwell.reports.charts import render_svg
from trainwell.reports.html import STYLE


def dvc_plot_specs(revisions: list[str]) -> dict[str, list[dict]]:
    """plot id -> DVC's rendered entries ({type, revisions, content}) for the workspace or the given revisions."""
    command = ["dvc", "plots", "diff", *revisions, "--json"] if revisions else ["dvc", "plots", "show", "--json"]
    shown = subprocess.run(command, capture_output=True, text=True)
    if shown.returncode != 0:
        raise TrainwellError(f"{' '.join(command)} failed: {shown.stderr.strip()[-800:]}")
    try:
        answer = json.loads(shown.stdout)
    except ValueError:
        raise TrainwellError(f"{' '.join(command)} printed no JSON: {shown.stdout.strip()[:300]}") from None
    if answer.get("errors"):
        raise TrainwellError(f"dvc could not read every plot: {json.dumps(answer['errors'])[:800]}")
    return answer.get("data", {})


def render_page(plots: dict[str, list[dict]], *, revisions: list[str]) -> str:
    figures, skipped = [], []
    for number, (plot_id, entries) in enumerate(plots.items()):
        for entry in entries:
            if entry.get("type") != "vega":
                skipped.append(plot_id)  # image plots: DVC copies the files; nothing to draw
                continue
            figures.append(render_svg(entry["content"], name=f"plot{number}", description=plot_id))
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


def main(*, out: str = "dvc_plots", revisions: list[str] | None = None) -> int:
    revisions = list(revisions or [])
    plots = dvc_plot_specs(revisions)
    if not plots:
        raise TrainwellError("dvc has no plots to show here; run `dvc repro` first (or check the `plots:` in dvc.yaml)")
    target = Path(out) / "index.html"
    write_text_atomically(target, render_page(plots, revisions=revisions))
    say(f"plots: {len(plots)} plots drawn as SVG in {target}; it renders with no network")
    return 0
