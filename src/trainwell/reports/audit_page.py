"""The audit's HTML page: counts and class balance, then thumbnails of flagged files grouped by kind."""

from __future__ import annotations

import html
import os
from collections import defaultdict
from pathlib import Path

from trainwell import storage
from trainwell.data.decode import DecodeError, decode_image
from trainwell.reports.html import STYLE, png_data_uri

# Per kind: enough to see the pattern, bounded so a dataset with 10,000 findings stays a small page.
MAX_THUMBNAILS_PER_KIND = 120


def thumbnail(path: Path | str, *, max_pixels: int) -> str | None:
    """A data: URI PNG thumbnail of an image file, or None when it cannot be decoded."""
    try:
        image = decode_image(storage.read_bytes(path), suffix=os.path.splitext(str(path))[1], max_pixels=max_pixels).image
    except (OSError, DecodeError):
        return None
    return png_data_uri(image)


def _card(root: Path | str, path: str, caption: str, *, max_pixels: int, cache: dict[str, str | None]) -> str:
    if path not in cache:
        if storage.is_remote(root):
            cache[path] = thumbnail(storage.join(root, path), max_pixels=max_pixels)
        else:
            full = Path(root) / path
            # Never follow a link that leaves the dataset, even to draw a picture.
            safe = full.is_file() and (not full.is_symlink() or full.resolve().is_relative_to(Path(root).resolve()))
            cache[path] = thumbnail(full, max_pixels=max_pixels) if safe else None
    uri = cache[path]
    picture = f'<img alt="" src="{uri}">' if uri else '<div class="missing">no image</div>'
    return f'<div class="card">{picture}<b>{html.escape(path)}</b><br>{html.escape(caption)}</div>'


def _kind_section(root: Path | str, kind: str, issues: list[dict], *, max_pixels: int, cache: dict[str, str | None]) -> str:
    level = issues[0]["severity"]
    parts = [f'<h2 class="{level}" id="{kind}">{html.escape(kind)} ({len(issues)}, {level})</h2><div class="cards">']
    parts += [_card(root, issue["path"], issue["detail"], max_pixels=max_pixels, cache=cache)
              for issue in issues[:MAX_THUMBNAILS_PER_KIND]]
    parts.append("</div>")
    if len(issues) > MAX_THUMBNAILS_PER_KIND:
        parts.append(f"<p>... and {len(issues) - MAX_THUMBNAILS_PER_KIND} more in the JSON report.</p>")
    return "\n".join(parts)


def render_html(report: dict, *, root: str | Path, max_pixels: int, navigation: str = "") -> str:
    """A self-contained page (inline CSS and data: images, no scripts, no network) for an audit report:
    the counts, then what fails the policy, then warnings, near-duplicate groups, info and class balance.
    navigation: the report site's bar (reports.site.navigation) when the page is part of the site."""
    root = root if storage.is_remote(root) else Path(root)
    summary = report["summary"]
    cache: dict[str, str | None] = {}
    by_kind: dict[str, list[dict]] = defaultdict(list)
    for issue in report["issues"]:
        if issue["kind"] != "near_duplicate":  # shown as groups, below the warnings
            by_kind[issue["kind"]].append(issue)
    # Most frequent kind first within each severity, as in the text report.
    ordered = sorted(by_kind.items(), key=lambda item: (-len(item[1]), item[0]))
    counts = ", ".join(f'<a href="#{kind}">{html.escape(kind)}</a> {len(issues)}' for kind, issues in ordered)
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>trainwell audit</title>",
        f"<style>{STYLE}</style></head><body>{navigation}",
        f"<h1>Dataset audit: {html.escape(str(report['root']))}</h1>",
        '<p class="summary">'
        f"<span>{report['files_scanned']} files scanned</span>"
        f'<span class="error">{summary["errors"]} with errors</span>'
        f'<span class="error">{summary["policy_errors"]} failing the policy</span>'
        f'<span class="warning">{summary["warnings"]} with warnings</span>'
        f"<span>{summary['quarantined']} quarantined</span>"
        f"<span>policy {'holds' if summary['policy_holds'] else '<b class=error>violated</b>'}</span></p>",
        f"<p>{counts}</p>" if counts else "",
    ]
    for severity in ("error", "warning"):
        parts += [_kind_section(root, kind, issues, max_pixels=max_pixels, cache=cache)
                  for kind, issues in ordered if issues[0]["severity"] == severity]

    groups = report.get("near_duplicate_groups", [])
    if groups:
        parts.append(f'<h2 class="warning" id="near_duplicate">Near-duplicate groups ({len(groups)})</h2>')
        for group in groups[:MAX_THUMBNAILS_PER_KIND]:
            cards = "".join(_card(root, path, path.split("/")[0], max_pixels=max_pixels, cache=cache) for path in group)
            parts.append(f'<div class="group">{cards}</div>')
        if len(groups) > MAX_THUMBNAILS_PER_KIND:
            parts.append(f"<p>... and {len(groups) - MAX_THUMBNAILS_PER_KIND} more groups in the JSON report.</p>")
    parts += [_kind_section(root, kind, issues, max_pixels=max_pixels, cache=cache)
              for kind, issues in ordered if issues[0]["severity"] == "info"]
    if not report["issues"]:
        parts.append("<h2>No findings</h2><p>Every file decoded cleanly.</p>")

    parts.append("<h2>Class balance (usable images)</h2><table>")
    largest = max(summary["class_counts"].values(), default=0) or 1
    for label, count in summary["class_counts"].items():
        width = int(240 * count / largest)
        parts.append(f'<tr><td>{html.escape(label)}</td><td>{count}</td><td><div class="bar" style="width:{width}px">'
                     "</div></td></tr>")
    parts.append("</table></body></html>")
    return "\n".join(parts)
