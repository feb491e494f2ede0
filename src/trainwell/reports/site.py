"""The report site: where each page lives, the navigation every page shares, and the frame of the pages built at the end."""

from __future__ import annotations

import html
import posixpath

from trainwell.params import PathsParams
from trainwell.reports.html import STYLE

# Page key -> the name in the navigation bar, in the order a run produces them.
PAGES = {"index": "Overview", "audit": "Audit", "split": "Split", "training": "Training",
         "evaluation": "Evaluation", "labels": "Labels"}

def site_locations(paths: PathsParams | None = None) -> dict[str, str]:
    """Each page's path relative to the project root, from params.yaml `paths:` (defaults without it)."""
    paths = paths or PathsParams()
    return {"index": paths.report_index, "audit": paths.audit_html,
            "split": posixpath.join(paths.split_report_dir, "index.html"),
            "training": posixpath.join(paths.train_report_dir, "index.html"),
            "evaluation": posixpath.join(paths.eval_report_dir, "index.html"),
            "labels": posixpath.join(paths.label_report_dir, "index.html")}


def link(*, source: str, target: str) -> str:
    """The relative URL from the page at `source` to the file at `target` (both project-relative):
    relative links keep the site working wherever the project folder is, offline, from file://."""
    return posixpath.relpath(posixpath.normpath(target), posixpath.dirname(posixpath.normpath(source)) or ".")


def navigation(current: str, locations: dict[str, str] | None = None) -> str:
    """The bar at the top of every page: one link per page, the current one marked."""
    locations = locations or site_locations()
    here = locations[current]
    links = []
    for key, name in PAGES.items():
        marker = ' aria-current="page"' if key == current else ""
        links.append(f'<a href="{html.escape(link(source=here, target=locations[key]))}"{marker}>{name}</a>')
    return f'<nav class="site" aria-label="trainwell report">{"".join(links)}</nav>'


def page(*, title: str, current: str, locations: dict[str, str], body: str) -> str:
    """A whole self-contained page: inline CSS, inline SVG and data: images, no script, no network."""
    return "\n".join([
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>",
        f"<style>{STYLE}</style></head><body>",
        navigation(current, locations),
        body,
        "</body></html>",
    ])


def number_cell(value: object, digits: int = 4) -> str:
    """A metric for a table or a headline: floats rounded, integers as they are, absent as a dash."""
    if value is None:
        return "&ndash;"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return html.escape(str(value))
