"""The split and training pages of the report site: counts per class and split; curves, settings and guard incidents."""

from __future__ import annotations

import html

from trainwell.reports import charts
from trainwell.reports.evaluation_page import curves_section
from trainwell.reports.site import number_cell, page

MAX_INCIDENT_FILES = 5  # per incident; incidents.json lists them all


def render_split(*, classes: list[str], counts: dict[str, dict[str, int]], excluded: int | None,
                 groups_kept_together: int | None, locations: dict[str, str]) -> str:
    """counts: split name ('training', 'validation', 'test') -> class -> images."""
    totals = {split: sum(per_class.values()) for split, per_class in counts.items()}
    everything = sum(totals.values())
    numbers = "".join(
        f'<div class="number"><b>{totals[split]}</b><small>{split} images'
        f'{f" ({100 * totals[split] / everything:.0f}%)" if everything else ""}</small></div>' for split in counts)
    numbers += (f'<div class="number"><b>{number_cell(excluded)}</b><small>left out (quarantined by the audit)</small></div>'
                f'<div class="number"><b>{number_cell(groups_kept_together)}</b><small>duplicate groups kept in one split'
                "</small></div>")
    header = "".join(f"<th class=n>{html.escape(split)}</th>" for split in counts)
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td>" + "".join(f"<td class=n>{counts[split].get(name, 0)}</td>" for split in counts)
        + f"<td class=n>{sum(counts[split].get(name, 0) for split in counts)}</td></tr>" for name in classes)
    chart = charts.render_svg(charts.split_chart(classes=classes, counts=counts), name="split-counts",
                              description="images per class in the training, validation and test splits")
    body = [
        f"<h1>Split: {everything} images in {len(classes)} classes</h1>",
        "<p>Stratified and seeded: each class is divided in the same proportions. Files the audit quarantined "
        "are left out, and exact or near duplicates always land in the same split, so no test image has a "
        "copy in training. The file lists are the split stage's CSV files.</p>",
        f'<div class="numbers">{numbers}</div>',
        f'<div class="charts">{chart}</div>',
        f"<h2>Images per class</h2><table><tr><th>class</th>{header}<th class=n>all</th></tr>{rows}</table>",
    ]
    return page(title="trainwell: split", current="split", locations=locations, body="\n".join(body))


def _incident_rows(incidents: list[dict]) -> str:
    """One table row per incident; every value is the file's (incidents.json), so every one is escaped."""
    rows = []
    for incident in incidents:
        listed = incident.get("files", [])
        files = [str(path) for path in listed] if isinstance(listed, list) else []
        shown = ", ".join(html.escape(path) for path in files[:MAX_INCIDENT_FILES])
        if len(files) > MAX_INCIDENT_FILES:
            shown += f", ... ({len(files)} files)"
        cells = [html.escape(str(incident.get(key, ""))) for key in ("epoch", "step", "kind", "loss", "action")]
        rows.append(f"<tr><td class=n>{cells[0]}</td><td class=n>{cells[1]}</td><td>{cells[2]}</td><td>{cells[3]}"
                    f"</td><td>{cells[4]}</td><td>{shown}</td></tr>")
    return "".join(rows)


def render_training(*, curves: dict[str, dict[str, list[tuple[int, float]]]], settings: dict[str, object],
                    incidents: list[dict] | None, locations: dict[str, str]) -> str:
    """curves: metric -> split ('training', 'validation') -> (epoch, value); settings: train params to show."""
    epochs = max((epoch for series in curves.values() for points in series.values() for epoch, _ in points), default=0)
    final = []
    for metric, series in sorted(curves.items(), key=lambda item: (item[0] != "loss", item[0])):
        for split, points in series.items():
            if points:
                final.append(f'<div class="number"><b>{number_cell(points[-1][1])}</b><small>{split} {metric}</small></div>')
    if incidents is None:
        guard = "<p>No incident list found (run the train stage).</p>"
    elif not incidents:
        guard = "<p>None: no batch was rolled back.</p>"
    else:
        guard = ("<table><tr><th class=n>epoch</th><th class=n>step</th><th>kind</th><th>loss</th><th>action</th>"
                 f"<th>files in the batch</th></tr>{_incident_rows(incidents)}</table>")
    setting_rows = "".join(f"<tr><td>{html.escape(key)}</td><td><code>{html.escape(str(value))}</code></td></tr>"
                           for key, value in settings.items())
    body = [
        f"<h1>Training: {epochs} epochs</h1>",
        "<p>Loss and accuracy per epoch on the <b>training</b> split (averaged over the epoch's batches while the "
        "weights change, augmented when train.augment is set) and on the <b>validation</b> split (measured after the "
        "epoch). The test split is never used in training; its figures are on the evaluation page.</p>",
        f'<div class="numbers">{"".join(final)}</div>',
        curves_section(curves, prefix="training-curves"),
        f"<h2>Divergence guard incidents ({len(incidents or [])})</h2>",
        guard,
        f"<h2>Settings</h2><table>{setting_rows}</table>",
    ]
    return page(title="trainwell: training", current="training", locations=locations, body="\n".join(body))
