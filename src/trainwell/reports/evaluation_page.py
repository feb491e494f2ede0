"""The evaluation page: test-split numbers, confusion matrix, training curves, reliability, per-class table and the mistakes."""

from __future__ import annotations

import html
from dataclasses import dataclass

import numpy as np

from trainwell.reports import charts
from trainwell.reports.html import png_data_uri
from trainwell.reports.site import number_cell, page

CARDS_PER_SECTION = 24


@dataclass
class Example:
    """One test image shown on the page, with what the model made of it."""

    path: str
    actual: str
    predicted: str
    p_predicted: float
    p_actual: float
    image: np.ndarray  # RGB uint8, as the model saw it


def pick_examples(*, confidence: np.ndarray, correct: np.ndarray,
                  count: int = CARDS_PER_SECTION) -> tuple[list[int], list[int]]:
    """(most confident mistakes, least confident correct predictions) as index lists; confidence is
    the top probability of each image, correct whether the top class was the actual one."""
    wrong = np.flatnonzero(~correct)
    right = np.flatnonzero(correct)
    # Stable sorts on (confidence, index) so ties never reorder between runs.
    mistakes = wrong[np.argsort(-confidence[wrong], kind="stable")][:count]
    unsure = right[np.argsort(confidence[right], kind="stable")][:count]
    return mistakes.tolist(), unsure.tolist()


def _cards(examples: list[Example]) -> str:
    out = []
    for example in examples:
        out.append(
            f'<div class="card"><img alt="{html.escape(example.path)}" src="{png_data_uri(example.image)}">'
            f"<b>{html.escape(example.path)}</b><br>actual <b>{html.escape(example.actual)}</b>, predicted "
            f"<b>{html.escape(example.predicted)}</b><br>p(predicted) = {example.p_predicted:.3f}, "
            f"p(actual) = {example.p_actual:.3f}</div>"
        )
    return '<div class="cards">' + "".join(out) + "</div>" if out else "<p>None.</p>"


def gallery_heading(*, shown: int, total: int, what: str, order: str) -> str:
    """'24 most confident of 252 mistakes': how many are shown out of how many there are."""
    if total == 0:
        return f"No {what}"
    if shown == total:
        return f"All {total} {what}, {order} first"
    return f"{shown} {order} of {total} {what}"


def _per_class_table(per_class: dict[str, dict]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td class=n>{number_cell(values['precision'], 3)}</td>"
        f"<td class=n>{number_cell(values['recall'], 3)}</td><td class=n>{number_cell(values['f1'], 3)}</td>"
        f"<td class=n>{number_cell(values['support'])}</td></tr>"
        for name, values in per_class.items())
    return ("<table><tr><th>class</th><th class=n>precision</th><th class=n>recall</th><th class=n>F1</th>"
            f"<th class=n>test images</th></tr>{rows}</table>")


def curves_section(curves: dict[str, dict[str, list[tuple[int, float]]]], *, prefix: str) -> str:
    """One chart per metric (loss, accuracy, ...), training and validation on the same axes."""
    if not curves:
        return "<p>No training curves found (run the train stage).</p>"
    figures = [charts.render_svg(charts.curves_chart(metric=metric, series=series), name=f"{prefix}-{metric}",
                                 description=f"{metric} per epoch on the training and validation splits")
               for metric, series in sorted(curves.items(), key=lambda item: (item[0] != "loss", item[0]))]
    return '<div class="charts">' + "".join(figures) + "</div>"


def render_evaluation(*, evaluation: dict, per_class: dict[str, dict], classes: list[str], confusion: list[list[int]],
                      reliability: list[dict], curves: dict[str, dict[str, list[tuple[int, float]]]],
                      mistakes: list[Example], mistakes_total: int, unsure: list[Example], correct_total: int,
                      locations: dict[str, str]) -> str:
    """The whole page, self-contained (inline CSS, SVG charts and PNG thumbnails; no script, no network)."""
    test_images = evaluation.get("test_images", 0)
    numbers = [("test accuracy", evaluation.get("accuracy")), ("macro F1", evaluation.get("macro_f1")),
               ("expected calibration error", evaluation.get("expected_calibration_error"))]
    if "top_5_accuracy" in evaluation:
        numbers.append(("top-5 accuracy", evaluation["top_5_accuracy"]))
    headline = "".join(f'<div class="number"><b>{number_cell(value)}</b><small>{label}</small></div>'
                       for label, value in numbers)
    confusion_charts = "".join(
        charts.render_svg(charts.confusion_chart(classes=classes, matrix=confusion, normalised=normalised),
                          name=f"confusion-{'share' if normalised else 'count'}",
                          description=f"confusion matrix of the test split, {'row shares' if normalised else 'counts'}")
        for normalised in (False, True))
    reliability_chart = charts.render_svg(
        charts.reliability_chart(bins=reliability), name="reliability",
        description="reliability diagram of the test split with the diagonal of perfect calibration, and the "
                    "number of test images per confidence bin") if reliability else "<p>No test images.</p>"
    body = [
        f"<h1>Evaluation on the test split ({number_cell(test_images)} images)</h1>",
        "<p>Every number and chart here is measured on the <b>test</b> split, which training never saw, except "
        "the training curves, which show the <b>training</b> and <b>validation</b> splits epoch by epoch.</p>",
        f'<div class="numbers">{headline}</div>',
        "<h2>Confusion matrix (test split)</h2>",
        f'<div class="charts">{confusion_charts}</div>',
        "<h2>Training curves (training and validation splits)</h2>",
        curves_section(curves, prefix="evaluation-curves"),
        "<h2>Calibration (test split)</h2>",
        "<p>Test images are grouped by the model's top probability; a calibrated model's points lie on the "
        "diagonal. Each point is labelled with the images in its bin: a bin of a few images can sit anywhere.</p>",
        f'<div class="charts">{reliability_chart}</div>',
        "<h2>Per class (test split)</h2>",
        _per_class_table(per_class),
        f"<h2>{gallery_heading(shown=len(mistakes), total=mistakes_total, what='mistakes', order='most confident')}</h2>",
        _cards(mistakes),
        f"<h2>{gallery_heading(shown=len(unsure), total=correct_total, what='correct predictions', order='least confident')}</h2>",
        _cards(unsure),
    ]
    return page(title="trainwell: evaluation", current="evaluation", locations=locations, body="\n".join(body))
