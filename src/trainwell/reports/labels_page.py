"""HTML page of likely label errors: thumbnails with the given and the suggested label."""

from __future__ import annotations

import html

import numpy as np

from trainwell.reports.html import STYLE, png_data_uri
from trainwell.reports.site import navigation

MAX_CARDS = 300


def render_suspects(*, suspects: list[tuple[str, str, str, float, np.ndarray]], reviewed: int) -> str:
    """Self-contained page (no scripts, no network): most suspicious first."""
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>trainwell label review</title>",
        f"<style>{STYLE}</style></head><body>{navigation('labels')}",
        f"<h1>Likely label errors: {len(suspects)} of {reviewed} images</h1>",
        "<p>Ranked by confident learning (cleanlab) on out-of-fold predictions. Nothing was relabelled; "
        "suggested_labels.csv is a manifest you may adopt after checking.</p><div class=cards>",
    ]
    for path, given, suggested, score, image in suspects[:MAX_CARDS]:
        parts.append(
            f'<div class="card"><img alt="" src="{png_data_uri(image)}"><b>{html.escape(path)}</b><br>'
            f"given <b>{html.escape(given)}</b>, looks like <b>{html.escape(suggested)}</b><br>"
            f"p(given) = {score:.3f}</div>"
        )
    parts.append("</div>")
    if len(suspects) > MAX_CARDS:
        parts.append(f"<p>... and {len(suspects) - MAX_CARDS} more in suspects.csv.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)
