"""The audit's HTML page: counts, class balance and dataset notes, then per kind a few thumbnails and a table of the rest."""

from __future__ import annotations

import html
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from trainwell import storage
from trainwell.data.decode import DecodeError, decode_image, max_file_bytes
from trainwell.reports.html import STYLE, png_data_uri

# Per kind, thumbnails of this many files show what the kind looks like; the rest are a table.
THUMBNAILS_PER_KIND = 12
# Near-duplicate groups drawn as pictures (each with up to GROUP_THUMBNAILS members); the rest a table.
GROUPS_DRAWN = 24
GROUP_THUMBNAILS = 8
# Table rows per kind: a page for a million findings must still open; audit.json lists every one.
TABLE_ROWS = 1000
# A file with a finding of one of these kinds was never decoded to pixels by the audit (or stopped
# it): the page draws no picture of it, rather than read or decode it again without the audit's limits.
UNDRAWABLE_KINDS = frozenset({
    "path_outside_root", "unreadable", "empty_file", "not_an_image", "corrupt", "truncated", "too_large",
    "symlink_outside", "special_file", "decoder_crash", "decode_timeout", "nan", "inf", "missing_file",
})
SEVERITY_ORDER = ("error", "warning", "info")


def thumbnail(path: Path | str, *, max_pixels: int) -> str | None:
    """A data: URI PNG thumbnail of an image file, or None when it cannot be decoded.

    Files are read with the audit's own reader (local regular files and s3:// objects, refused past
    what max_pixels allows), and decoded under the same pixel limit.
    """
    try:
        data = storage.read_regular_file(path, max_bytes=max_file_bytes(max_pixels))
        image = decode_image(data, suffix=os.path.splitext(str(path))[1], max_pixels=max_pixels).image
    except (OSError, DecodeError):
        return None
    return png_data_uri(image)


class _Pictures:
    """Thumbnails of the dataset's files, each drawn at most once, and never of a file the audit could not decode."""

    def __init__(self, root: Path | str, *, max_pixels: int, undrawable: set[str]) -> None:
        self.root, self.max_pixels, self.undrawable = root, max_pixels, undrawable
        self.drawn: dict[str, str | None] = {}

    def card(self, path: str, caption: str) -> str:
        if path not in self.drawn:
            self.drawn[path] = None if path in self.undrawable else self._draw(path)
        uri = self.drawn[path]
        picture = f'<img alt="" src="{uri}">' if uri else '<div class="missing">no image</div>'
        return f'<div class="card">{picture}<b>{html.escape(path)}</b><br>{html.escape(caption)}</div>'

    def _draw(self, path: str) -> str | None:
        if storage.is_remote(self.root):
            return thumbnail(storage.join(self.root, path), max_pixels=self.max_pixels)
        full = Path(self.root) / path
        # Never follow a link that leaves the dataset, even to draw a picture.
        safe = full.is_file() and (not full.is_symlink() or full.resolve().is_relative_to(Path(self.root).resolve()))
        return thumbnail(full, max_pixels=self.max_pixels) if safe else None


def _table(rows: Sequence[tuple[object, ...]], headings: tuple[str, ...]) -> str:
    head = "".join(f"<th>{html.escape(heading)}</th>" for heading in headings)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>"
                   for row in rows[:TABLE_ROWS])
    more = f"<p>... and {len(rows) - TABLE_ROWS} more in audit.json.</p>" if len(rows) > TABLE_ROWS else ""
    return f"<table><tr>{head}</tr>{body}</table>{more}"


def _kind_section(kind: str, issues: list[dict], pictures: _Pictures) -> str:
    level = issues[0]["severity"]
    shown = issues[:THUMBNAILS_PER_KIND]
    parts = [f'<h2 class="{level}" id="{kind}">{html.escape(kind)}: {len(issues)} ({level})</h2>',
             '<div class="cards">', *(pictures.card(issue["path"], issue["detail"]) for issue in shown), "</div>"]
    if len(issues) > len(shown):
        parts.append(f"<p>{len(shown)} of {len(issues)} shown as pictures; the others:</p>")
        parts.append(_table([(issue["path"], issue["detail"]) for issue in issues[len(shown):]], ("file", "detail")))
    return "\n".join(parts)


def _groups_section(groups: list[dict], pictures: _Pictures) -> str:
    """Near-duplicate groups as AuditReport holds them: representative, members, size, lowest_similarity."""
    parts = [f'<h2 class="warning" id="near_duplicate">near_duplicate: {len(groups)} groups</h2>',
             "<p>Every member of a group looks like its representative (drawn first); the split keeps a group "
             "in one split.</p>"]
    for group in groups[:GROUPS_DRAWN]:
        members, representative = group["members"], group["representative"]
        ordered = [representative, *(member for member in members if member != representative)]
        title = f"{len(members)} files, each correlating >= {group['lowest_similarity']} with the first"
        cards = "".join(pictures.card(path, path.split("/")[0]) for path in ordered[:GROUP_THUMBNAILS])
        more = f"<p>and {len(members) - GROUP_THUMBNAILS} more</p>" if len(members) > GROUP_THUMBNAILS else ""
        parts.append(f'<p>{html.escape(title)}</p><div class="group">{cards}{more}</div>')
    if len(groups) > GROUPS_DRAWN:
        rest = [(group["representative"], group["size"], group["lowest_similarity"]) for group in groups[GROUPS_DRAWN:]]
        parts.append(f"<p>{GROUPS_DRAWN} of {len(groups)} groups drawn; the others:</p>")
        parts.append(_table(rest, ("representative", "files", "lowest similarity")))
    return "\n".join(parts)


def _balance(class_counts: dict[str, int]) -> str:
    rows = ["<h2>Class balance (usable images)</h2><table>"]
    largest = max(class_counts.values(), default=0) or 1
    for label, count in class_counts.items():
        width = int(240 * count / largest)
        rows.append(f'<tr><td>{html.escape(label)}</td><td>{count}</td><td><div class="bar" style="width:{width}px">'
                    "</div></td></tr>")
    rows.append("</table>")
    return "\n".join(rows)


def _notes(notes: list[dict]) -> str:
    if not notes:
        return ""
    items = "".join(f"<li><b>{html.escape(note['kind'])}</b>: {html.escape(note['detail'])}</li>" for note in notes)
    return f"<h2>What the whole dataset shares (said once, not per file)</h2><ul>{items}</ul>"


def render_html(report: dict, *, root: str | Path, max_pixels: int, navigation: str = "") -> str:
    """A self-contained page (inline CSS and data: images, no scripts, no network) for an audit report:
    the counts, class balance and dataset notes, then per kind (errors, warnings, near-duplicate
    groups, info) a few thumbnails and a table of the rest. Its size follows the number of kinds
    and groups, not of findings. navigation: the report site's bar (reports.site.navigation)."""
    root = root if storage.is_remote(root) else Path(root)
    summary = report["summary"]
    by_kind: dict[str, list[dict]] = defaultdict(list)
    undrawable: set[str] = set()
    for issue in report["issues"]:
        if issue["kind"] in UNDRAWABLE_KINDS:
            undrawable.add(issue["path"])
        if issue["kind"] != "near_duplicate":  # shown as groups, below the warnings
            by_kind[issue["kind"]].append(issue)
    pictures = _Pictures(root, max_pixels=max_pixels, undrawable=undrawable)
    # Errors first, then warnings, then info; the most frequent kind first within each, as in the text report.
    ordered = sorted(by_kind.items(), key=lambda item: (SEVERITY_ORDER.index(item[1][0]["severity"]), -len(item[1]),
                                                        item[0]))
    groups = report.get("near_duplicate_groups", [])
    counts = ", ".join(f'<a href="#{kind}">{html.escape(kind)}</a> {len(issues)}' for kind, issues in ordered)
    if groups:
        counts += f'{", " if counts else ""}<a href="#near_duplicate">near_duplicate</a> {len(groups)} groups'
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
        _balance(summary["class_counts"]),
        _notes(report.get("dataset_notes", [])),
    ]
    for kind, issues in ordered:
        if issues[0]["severity"] == "info" and groups:
            parts.append(_groups_section(groups, pictures))
            groups = []
        parts.append(_kind_section(kind, issues, pictures))
    if groups:
        parts.append(_groups_section(groups, pictures))
    if not report["issues"]:
        parts.append("<h2>No findings</h2><p>Every file decoded cleanly.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)
