"""The model card: one plain mapping built from the pipeline's outputs, rendered as Markdown (Jinja2) and JSON."""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

import jinja2

# What Markdown (CommonMark with GitHub's extensions) acts on anywhere in a line: escapes, code,
# emphasis, strikethrough, links and images, HTML and entities, table cells, headings, and the ":"
# and "@" of GitHub's bare-URL and e-mail autolinks. Other punctuation (a path's "/" and ".") is
# left as it reads: `models/model.keras`, not `models\/model\.keras`.
_ACTIVE = frozenset("\\`*_~[]<>|&!#:@{}")
# ... and what only acts at the start of a line or list item: a list marker, a setext underline,
# an ordered-list number ("1." or "1)"), and GitHub's "www." autolink anywhere.
_LEADING = re.compile(r"^(\s*)([-+=]|\d+(?=[.)]))")
_WWW = re.compile(r"(?i)(www)\.")


def markdown_text(value: object) -> str:
    """A value shown literally in Markdown, on one line: the punctuation Markdown acts on is
    backslash-escaped (CommonMark allows it for every ASCII punctuation character), so no link,
    image, emphasis, HTML, entity, table column or list can come from it; control characters such
    as a newline are shown as their escape (\\n), so `a<newline>b` and `a b` stay distinguishable."""
    parts = []
    for character in str(value):
        if character in _ACTIVE:
            parts.append("\\" + character)
        elif not character.isprintable():
            parts.append("\\" + repr(character)[1:-1])  # \n, \t, \x1b, ...
        else:
            parts.append(character)
    text = _WWW.sub(r"\1\\.", "".join(parts))
    # "1." -> "1\." and a leading "-" -> "\-": the marker is escaped, the digits stay.
    leading = _LEADING.match(text)
    if leading and leading.group(2)[0].isdigit():
        end = leading.end()
        return text[:end] + "\\" + text[end:]
    return _LEADING.sub(lambda match: match.group(1) + "\\" + match.group(2), text, count=1)


def markdown_paragraphs(value: object) -> str:
    """Free text (card.intended_use) with its paragraphs kept: blank lines separate them, each escaped."""
    paragraphs = [" ".join(block.split()) for block in str(value).replace("\r\n", "\n").split("\n\n")]
    return "\n\n".join(markdown_text(paragraph) for paragraph in paragraphs if paragraph)


def limitations(*, image_size: int, splits: dict, label_review: dict | None, audit: dict,
                images: dict | None = None) -> list[str]:
    """What a reader must know before trusting the numbers, derived from the data (not boilerplate).

    images: the data's `median_side` (pixels), `headers` read and how many were `grey`, or None.
    """
    side = (images or {}).get("median_side")
    size = f"{image_size}x{image_size}"
    if isinstance(side, int) and side < image_size:
        lines = [f"The images are small (median shorter side {side} pixels) and are enlarged to {size}: the model "
                 "sees no detail the originals lack, and images of other sizes are resized to the same."]
    elif isinstance(side, int) and side == image_size:
        lines = [f"The model sees the images at their native size, {size} pixels (a median); images of other sizes "
                 "are resized to it."]
    else:
        seen = f" (the images' median shorter side is {side} pixels)" if isinstance(side, int) else ""
        lines = [f"Every image is resized to {size} pixels before the model sees it{seen}; detail smaller than a "
                 "pixel at that size is invisible to it."]
    grey, headers = (images or {}).get("grey", 0), (images or {}).get("headers", 0)
    if headers and grey == headers:
        lines.append("Every image it was trained on is grayscale (given as three equal channels): colour images "
                     "are outside what it has seen.")
    elif headers and grey:
        lines.append(f"{grey} of {headers} images sampled are grayscale, the rest colour.")
    totals = {name: int(entry.get("total", 0)) for name, entry in splits.items() if isinstance(entry, dict)}
    if totals:
        lines.append(f"Trained on {totals.get('train', 0)} images and tuned on {totals.get('val', 0)}; the test "
                     f"figures come from {totals.get('test', 0)} images, so one image moves accuracy by "
                     f"{100 / max(1, totals.get('test', 0)):.2f} percentage points.")
    if label_review and label_review.get("suspects"):
        lines.append(f"The label review flagged {label_review['suspects']} possibly mislabelled images; they were "
                     "trained on as labelled.")
    quarantined = next((value for key, value in audit.items() if "quarantined" in key and isinstance(value, int)), 0)
    if quarantined:
        lines.append(f"{quarantined} files failed the audit and were left out of every split.")
    return lines


def render_card_markdown(card: dict[str, Any]) -> str:
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                                     autoescape=False)  # Markdown, escaped by the `md` filter instead
    environment.filters["md"] = markdown_text
    environment.filters["md_paragraphs"] = markdown_paragraphs
    source = resources.files("trainwell").joinpath("templates", "card.md.in").read_text(encoding="utf-8")
    return environment.from_string(source).render(card=card)


def render_card_json(card: dict[str, Any]) -> str:
    return json.dumps(card, indent=2, sort_keys=False) + "\n"
