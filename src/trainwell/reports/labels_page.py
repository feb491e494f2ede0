"""HTML page of the label review: likely label errors (given and suggested label) and outliers, as thumbnails."""

from __future__ import annotations

import html
from collections.abc import Callable

import numpy as np

from trainwell.reports.html import STYLE, png_data_uri
from trainwell.reports.site import navigation

MAX_CARDS = 300
TEST_NOTE = "<b class=error>test split: skews the reported accuracy</b><br>"


def _card(*, image: np.ndarray, path: str, split: str, lines: str, alarm: bool = True) -> str:
    """One thumbnail card. `alarm`: a test image here makes the reported accuracy wrong (a wrong
    label does; an unusual image with its right label does not, so outliers never say so in red)."""
    note = TEST_NOTE if split == "test" and alarm else f"{html.escape(split)} split<br>"
    return (f'<div class="card"><img alt="" src="{png_data_uri(image)}"><b>{html.escape(path)}</b><br>'
            f"{note}{lines}</div>")


def render_review(
    *,
    suspects: list[dict],
    outliers: list[dict],
    image: Callable[[int], np.ndarray],
    reviewed: int,
    counts: dict[str, int],
    locations: dict[str, str] | None = None,
) -> str:
    """Self-contained page (no scripts, no network), most suspicious first in each section.

    suspects: rows with index, path, split, given_label, suggested_label, score (p(given));
    outliers: rows with index, path, split, label, score (cleanlab's outlier score); image(index)
    gives a row's pixels (only the first MAX_CARDS of each list are asked for); counts: files per split.
    """
    test_suspects = sum(row["split"] == "test" for row in suspects)
    split_counts = ", ".join(f"{count} {name}" for name, count in counts.items())
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>trainwell label review</title>",
        f"<style>{STYLE}</style></head><body>{navigation('labels', locations)}",
        f"<h1>Label review of {reviewed} images</h1>",
        f"<p class=summary><span>{split_counts}</span><span><b>{len(suspects)}</b> likely label errors</span>"
        f"<span class=error><b>{test_suspects}</b> of them in the test split</span>"
        f"<span><b>{len(outliers)}</b> outliers</span></p>",
        "<p>Each image was scored by a model that never saw it (k-fold). Nothing was relabelled or moved; "
        "suggested_labels.csv is a manifest you may adopt after checking. A wrong label in the test split "
        "makes the reported accuracy wrong: check those by eye, not by the suggestion.</p>",
        f"<h2>Likely label errors ({len(suspects)})</h2>",
        "<p>Ranked by confident learning (cleanlab) on out-of-fold predictions.</p><div class=cards>",
    ]
    for row in suspects[:MAX_CARDS]:
        parts.append(_card(image=image(row["index"]), path=row["path"], split=row["split"], lines=(
            f"given <b>{html.escape(row['given_label'])}</b>, looks like <b>{html.escape(row['suggested_label'])}</b>"
            f"<br>p(given) = {row['score']:.3f}")))
    parts.append("</div>")
    if len(suspects) > MAX_CARDS:
        parts.append(f"<p>... and {len(suspects) - MAX_CARDS} more in suspects.csv.</p>")
    parts += [
        f"<h2>Outliers ({len(outliers)})</h2>",
        "<p>Images unlike the rest of their class: far from their nearest neighbours in the fold models' "
        "embeddings (the last convolution block, pooled; cleanlab's outlier score, lower is stranger), farther than "
        "their own class's images mostly are, strangest first. Worth a look: one may be no image of any class; an "
        "unusual image with its right label is no fault.</p><div class=cards>",
    ]
    for row in outliers[:MAX_CARDS]:
        parts.append(_card(image=image(row["index"]), path=row["path"], split=row["split"], lines=(
            f"labelled <b>{html.escape(row['label'])}</b><br>outlier score {row['score']:.3g}"), alarm=False))
    parts.append("</div>")
    if len(outliers) > MAX_CARDS:
        parts.append(f"<p>... and {len(outliers) - MAX_CARDS} more in outliers.csv.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)
