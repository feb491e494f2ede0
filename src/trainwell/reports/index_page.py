"""The report site's front page: the headline numbers, the gate's verdict and a link to each stage's page."""

from __future__ import annotations

import html
from dataclasses import dataclass

from trainwell.reports.gate import Row
from trainwell.reports.site import PAGES, link, number_cell, page

# What each page answers, shown beside its link.
PAGE_SUMMARIES = {
    "audit": "every file checked: what is broken, odd or duplicated, and what was quarantined",
    "split": "images per class in the training, validation and test splits",
    "training": "loss and accuracy per epoch on the training and validation splits; guard incidents",
    "evaluation": "the test split: confusion matrix, calibration, per-class scores, the most confident mistakes",
    "labels": "training, validation and test images whose label looks wrong, and outliers of their class",
}


@dataclass
class Headline:
    """One number on the front page; bad marks it red (e.g. audit errors above 0)."""

    label: str
    value: object
    page: str
    bad: bool = False


def headlines(*, evaluation: dict | None, audit: dict | None, labels: dict | None, export: dict | None) -> list[Headline]:
    """The numbers a run is judged by, from the metrics files (None: that stage has not run)."""
    evaluation, audit, labels = evaluation or {}, audit or {}, labels or {}
    numbers = [
        Headline("test accuracy", evaluation.get("accuracy"), "evaluation"),
        Headline("macro F1 (test)", evaluation.get("macro_f1"), "evaluation"),
        Headline("expected calibration error (test)", evaluation.get("expected_calibration_error"), "evaluation"),
        Headline("audit errors", audit.get("errors"), "audit", bad=bool(audit.get("errors"))),
        # Files with a warning: a clean real dataset has a handful (2% at most), so many more deserve a look.
        Headline("files with audit warnings", audit.get("warnings"), "audit"),
        Headline("files quarantined", audit.get("quarantined"), "audit", bad=bool(audit.get("quarantined"))),
        Headline("label suspects", labels.get("suspects"), "labels"),
    ]
    for name, value in (export or {}).items():
        if name.endswith("_agreement") and isinstance(value, (int, float)):
            numbers.append(Headline(f"export agreement: {name.removesuffix('_agreement').replace('_', ' ')}", value,
                                    "index"))
    missed = (export or {}).get("bars_missed")
    if isinstance(missed, int):
        numbers.append(Headline("export bars missed", missed, "index", bad=bool(missed)))
    return numbers


def _gate(rows: list[Row], *, configured: bool) -> str:
    if not configured:
        return "<h2>Gate</h2><p>No checks configured (gate.checks in params.yaml).</p>"
    failed = [row for row in rows if not row.passed]
    verdict = (f'<span class="pass">passes: all {len(rows)} checks</span>' if not failed
               else f'<span class="fail">FAILS: {len(failed)} of {len(rows)} checks</span>')
    lines = "".join(
        f"<tr><td><code>{html.escape(row.metric)}</code></td>"
        f"<td class=n>{'&ndash;' if row.value is None else f'{row.value:.4g}'}</td>"
        f"<td>{html.escape(', '.join(row.rules) or '-')}</td>"
        f"<td class={'pass' if row.passed else 'fail'}>{'pass' if row.passed else html.escape('; '.join(row.failures))}"
        "</td></tr>" for row in rows)
    return (f"<h2>Gate: {verdict}</h2><p>The thresholds in params.yaml <code>gate.checks</code>, as "
            "<code>trainwell gate</code> applies them (a comparison with a git revision, <code>--baseline</code>, "
            "runs only there).</p><table><tr><th>metric</th><th class=n>value</th><th>rule</th><th>result</th></tr>"
            f"{lines}</table>")


def render_index(*, numbers: list[Headline], gate_rows: list[Row], gate_configured: bool,
                 test_images: int | None, locations: dict[str, str]) -> str:
    here = locations["index"]
    cards = []
    for number in numbers:
        card = (f'<div class="number{" bad" if number.bad else ""}"><b>{number_cell(number.value)}</b>'
                f"<small>{html.escape(number.label)}</small></div>")
        if number.page != "index":
            card = f'<a href="{html.escape(link(source=here, target=locations[number.page]))}" ' \
                   f'style="color:inherit;text-decoration:none">{card}</a>'
        cards.append(card)
    pages = "".join(
        f'<tr><td><a href="{html.escape(link(source=here, target=locations[key]))}">{PAGES[key]}</a></td>'
        f"<td>{html.escape(summary)}</td></tr>" for key, summary in PAGE_SUMMARIES.items())
    body = [
        "<h1>trainwell report</h1>",
        f"<p>Headline numbers of the last <code>dvc repro</code>. Test figures come from "
        f"{number_cell(test_images)} test images; missing numbers (&ndash;) belong to stages that have not run.</p>",
        f'<div class="numbers">{"".join(cards)}</div>',
        _gate(gate_rows, configured=gate_configured),
        f"<h2>Pages</h2><table>{pages}</table>",
    ]
    return page(title="trainwell report", current="index", locations=locations, body="\n".join(body))
