"""The evaluation page: the most confident mistakes and the least confident correct predictions."""

from __future__ import annotations

import html
from collections.abc import Callable

import numpy as np

from trainwell.reports.html import STYLE, png_data_uri

CARDS_PER_SECTION = 24


def pick_examples(*, probabilities: np.ndarray, labels: np.ndarray, count: int = CARDS_PER_SECTION) -> tuple[list[int], list[int]]:
    """(most confident mistakes, least confident correct predictions) as index lists."""
    predictions = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    wrong = np.flatnonzero(predictions != labels)
    right = np.flatnonzero(predictions == labels)
    # Stable sorts on (confidence, index) so ties never reorder between runs.
    mistakes = wrong[np.argsort(-confidence[wrong], kind="stable")][:count]
    unsure = right[np.argsort(confidence[right], kind="stable")][:count]
    return mistakes.tolist(), unsure.tolist()


def render_evaluation(*, image: Callable[[int], np.ndarray], labels: np.ndarray, probabilities: np.ndarray,
                      paths: list[str], classes: list[str], metrics: dict) -> str:
    """Self-contained page (inline CSS and images, no scripts, no network); image(index) gives a
    test image (only the few shown are read, so the split need not be in memory)."""
    mistakes, unsure = pick_examples(probabilities=probabilities, labels=labels)
    predictions = probabilities.argmax(axis=1)
    pictures = {index: image(index) for index in sorted({*mistakes, *unsure})}  # in file order: each shard read once

    def cards(indices: list[int]) -> str:
        out = []
        for index in indices:
            true, predicted = classes[labels[index]], classes[predictions[index]]
            out.append(
                f'<div class="card"><img alt="" src="{png_data_uri(pictures[index])}"><b>{html.escape(paths[index])}</b>'
                f"<br>true <b>{html.escape(true)}</b>, predicted <b>{html.escape(predicted)}</b>"
                f"<br>p(predicted) = {probabilities[index, predictions[index]]:.3f}, "
                f"p(true) = {probabilities[index, labels[index]]:.3f}</div>"
            )
        return "".join(out) or "<p>None.</p>"

    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{values['precision']:.3f}</td><td>{values['recall']:.3f}</td>"
        f"<td>{values['f1']:.3f}</td><td>{values['support']}</td></tr>"
        for name, values in metrics["per_class"].items()
    )
    return "\n".join([
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>trainwell evaluation</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>Test accuracy {metrics['accuracy']:.4f} on {metrics['test_images']} images</h1>",
        f"<p>macro F1 {metrics['macro_f1']:.4f}; expected calibration error "
        f"{metrics['expected_calibration_error']:.4f}</p>",
        "<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>images</th></tr>" + rows + "</table>",
        f"<h2>Most confident mistakes ({len(mistakes)})</h2><div class=cards>{cards(mistakes)}</div>",
        f"<h2>Least confident correct predictions ({len(unsure)})</h2><div class=cards>{cards(unsure)}</div>",
        "</body></html>",
    ])
