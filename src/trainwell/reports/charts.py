"""Charts drawn when a page is built: Vega-Lite specs rendered to static SVG by vl-convert, with no browser and no network.

Each chart takes plain data (lists and dicts) and returns inline SVG, so a page opens offline,
prints, and shows the same picture in any browser. vl-convert runs Vega in an embedded
JavaScript engine; it is told to fetch nothing (`allowed_base_urls=[]`), and every spec carries
its data inline.
"""

from __future__ import annotations

import html
import re
from typing import cast
from xml.etree import ElementTree

# Pinned so a vl-convert upgrade that changes its default Vega-Lite does not change the SVG bytes.
VEGA_LITE_VERSION = "5.20"
SCHEMA = "https://vega.github.io/schema/vega-lite/v5.json"  # an identifier in the spec, never fetched
CONFIG = {"font": "sans-serif", "view": {"stroke": "#ddd"}, "axis": {"labelFontSize": 11, "titleFontSize": 12},
          "title": {"fontSize": 14, "anchor": "start"}, "legend": {"labelFontSize": 11}}
SPLIT_COLOURS = {"training": "#4a7bd0", "validation": "#e07b00", "test": "#2e7d32"}
CLASSES_WITH_CELL_LABELS = 20  # above this, a confusion matrix cell is too small to print its number in


def render_svg(spec: dict, *, name: str, description: str) -> str:
    """A figure holding the chart as inline SVG. `name` prefixes the SVG's element ids, which must be
    unique in the page; `description` is its accessible name (and what a text browser shows).

    The spec may be anyone's (a DVC plot template): one that asks for data from a URL or a file is
    not drawn, links (`href`) are left out, and whatever in the SVG would still fetch something is
    removed (offline_svg). A spec that cannot be drawn gives a figure saying why, never an exception.
    """
    import vl_convert  # imported here: only the stages that draw pay its start-up (~0.5 s, once a process)

    name = re.sub(r"[^A-Za-z0-9_.-]", "_", name)  # it may come from a file name (a metric's): an id, nothing more
    refusal = _fetches(spec)
    if refusal:
        return _not_drawn(name=name, description=description, reason=refusal)
    try:
        drawable = cast(dict, _without_links(spec))  # a dict in, a dict out
        svg = vl_convert.vegalite_to_svg({"$schema": SCHEMA, "config": CONFIG, **drawable},
                                         vl_version=VEGA_LITE_VERSION, allowed_base_urls=[])
        svg = offline_svg(svg)
    except ValueError as exc:  # vl-convert's error for a spec it cannot draw; offline_svg's for one it cannot clean
        return _not_drawn(name=name, description=description, reason=str(exc).split("\n")[0:2])
    # Element ids renamed by first appearance: unique in the page, and the same bytes every time
    # (vl-convert numbers gradients with a counter that runs on across the charts of one process).
    ids: dict[str, str] = {}
    for found in re.findall(r'\bid="([^"]+)"', svg):
        ids.setdefault(found, f"{name}-{len(ids)}")
    svg = re.sub(r'\bid="([^"]+)"', lambda match: f'id="{ids[match.group(1)]}"', svg)
    svg = re.sub(r"url\(#([^)]+)\)", lambda match: f"url(#{ids.get(match.group(1), match.group(1))})", svg)
    svg = re.sub(r'href="#([^"]+)"', lambda match: f'href="#{ids.get(match.group(1), match.group(1))}"', svg)
    svg = svg.replace("<svg ", f'<svg role="img" aria-label="{html.escape(description)}" ', 1)
    return f'<figure class="chart" id="{name}">{svg}</figure>'


def _not_drawn(*, name: str, description: str, reason: object) -> str:
    text = " ".join(reason) if isinstance(reason, list) else str(reason)
    return (f'<figure class="chart" id="{name}"><p>Not drawn: {html.escape(description)}. '
            f"{html.escape(text[:300])}</p></figure>")


def _fetches(node: object, key: str = "") -> str | None:
    """Why a spec would load something (data or an image from a URL or a local file), or None.

    vl-convert refuses http(s) URLs when told to (allowed_base_urls=[]) but reads file:// URLs all
    the same: a template asking for file:///etc/passwd would put that file in the page.
    """
    if key in ("values", "datasets"):  # data: a row may well have a field named "url"
        return None
    if isinstance(node, dict):
        if "url" in node:
            return f"It asks to load {str(node['url'])[:100]!r}; trainwell draws only data held in the spec"
        return next((found for child_key, child in node.items() if (found := _fetches(child, child_key))), None)
    if isinstance(node, list):
        return next((found for child in node if (found := _fetches(child))), None)
    return None


def _without_links(node: object, key: str = "") -> object:
    """The spec without `href` (links on marks, in encodings or config), outside its data values:
    a static page has nothing to link, and vl-convert fails on an href encoding."""
    if key in ("values", "datasets"):
        return node
    if isinstance(node, dict):
        return {child_key: _without_links(child, child_key) for child_key, child in node.items() if child_key != "href"}
    if isinstance(node, list):
        return [_without_links(child, key) for child in node]
    return node


# An attribute of a tag in vl-convert's SVG (values double-quoted, with & < > " escaped).
_ATTRIBUTE = re.compile(r'\s([^\s=<>"/]+)="([^"]*)"')
_TAG = re.compile(r"<[A-Za-z][^<>]*>")
_INLINE_IMAGE = re.compile(r"data:image/(png|jpeg|gif|webp)[;,]", re.IGNORECASE)
_URL_REFERENCE = re.compile(r"url\s*\(", re.IGNORECASE)
_LOCAL_REFERENCE = re.compile(r"\s*url\(\s*#[^)\s]*\)\s*", re.IGNORECASE)
_ACTIVE_ELEMENTS = {"script", "foreignobject", "iframe", "object", "embed", "style", "link", "audio", "video"}


def _attribute_fetches(name: str, value: str) -> bool:
    """Whether a browser would load something, or run script, for this attribute."""
    name, value = name.lower(), html.unescape(value)
    if name.startswith("on"):
        return True
    if name in ("href", "src") or name.endswith(":href"):
        return not (value.startswith("#") or _INLINE_IMAGE.match(value))
    # CSS values (fill, style, cursor...) may hold url(...), written with escapes (u\72l) too.
    return "\\" in value or "@import" in value.lower() or (
        bool(_URL_REFERENCE.search(value)) and not _LOCAL_REFERENCE.fullmatch(value))


def offline_svg(svg: str) -> str:
    """SVG with every attribute that would fetch something or run script removed (links, images by
    URL or path, url() other than to an element of the page, event handlers), then checked as XML:
    an element that can fetch or run anything, or markup that does not parse, is a ValueError."""
    svg = _TAG.sub(lambda tag: _ATTRIBUTE.sub(
        lambda found: "" if _attribute_fetches(found.group(1), found.group(2)) else found.group(0), tag.group(0)), svg)
    if "<!" in svg or "<?" in svg:
        raise ValueError("the drawing holds a declaration or processing instruction")
    try:
        root = ElementTree.fromstring(svg)
    except ElementTree.ParseError as exc:
        raise ValueError(f"the drawing is not well-formed SVG ({exc})") from None
    for element in root.iter():
        local = element.tag.rsplit("}", 1)[-1].lower()
        if local in _ACTIVE_ELEMENTS or any(_attribute_fetches(key.rsplit("}", 1)[-1] if "}" in key else key, value)
                                            for key, value in element.attrib.items()):
            raise ValueError(f"the drawing holds a <{local}> element or attribute that could load or run something")
    return svg


def curves_chart(*, metric: str, series: dict[str, list[tuple[int, float]]]) -> dict:
    """One metric per chart, one line per split: series maps 'training'/'validation' to (epoch, value) pairs."""
    values = [{"epoch": epoch, "value": value, "split": split}
              for split, points in series.items() for epoch, value in points]
    splits = [split for split in SPLIT_COLOURS if split in series]
    epochs = sorted({epoch for points in series.values() for epoch, _ in points})
    # Whole epochs only: a short run gets a tick per epoch (else Vega puts ticks at 1.5 and prints "2" twice).
    ticks = {"values": epochs} if len(epochs) <= 20 else {"tickMinStep": 1}
    encoding = {
        "x": {"field": "epoch", "type": "quantitative", "title": "epoch", "axis": {"format": "d", **ticks}},
        "y": {"field": "value", "type": "quantitative", "title": metric, "scale": {"zero": False}},
        "color": {"field": "split", "type": "nominal", "title": None,
                  "scale": {"domain": splits, "range": [SPLIT_COLOURS[split] for split in splits]},
                  "legend": {"orient": "bottom"}},
    }
    return {
        "title": f"{metric.capitalize()}: training and validation",
        "width": 320, "height": 220,
        "data": {"values": values},
        "encoding": encoding,
        "layer": [{"mark": {"type": "line"}}, {"mark": {"type": "point", "filled": True, "size": 30}}],
    }


def confusion_chart(*, classes: list[str], matrix: list[list[int]], normalised: bool) -> dict:
    """Rows are the actual class, columns the predicted one; counts, or each row as shares of its class."""
    values = []
    for row, actual in enumerate(classes):
        total = sum(matrix[row])
        for column, predicted in enumerate(classes):
            count = matrix[row][column]
            share = count / total if total else 0.0
            values.append({"actual": actual, "predicted": predicted, "count": count, "share": share,
                           "label": f"{share:.2f}" if normalised else str(count)})
    field = "share" if normalised else "count"
    cell = max(8, min(40, 480 // max(1, len(classes))))  # pixels; a 100-class matrix stays on screen
    axis = {"sort": classes, "type": "ordinal"}
    layers: list[dict] = [{
        "mark": "rect",
        "encoding": {"color": {"field": field, "type": "quantitative",
                               "scale": {"scheme": "blues", **({"domain": [0, 1]} if normalised else {})},
                               "title": "share of the row" if normalised else "images"}},
    }]
    if len(classes) <= CLASSES_WITH_CELL_LABELS:
        layers.append({
            "mark": {"type": "text", "fontSize": 11},
            "encoding": {"text": {"field": "label"},
                         "color": {"condition": {"test": "datum.share > 0.5", "value": "white"}, "value": "black"}},
        })
    return {
        "title": "Share of each actual class (rows sum to 1)" if normalised else "Test images (rows: actual class)",
        "width": cell * len(classes), "height": cell * len(classes),
        "data": {"values": values},
        "encoding": {"y": {"field": "actual", "title": "actual", **axis},
                     "x": {"field": "predicted", "title": "predicted", **axis, "axis": {"labelAngle": -40}}},
        "layer": layers,
    }


def reliability_chart(*, bins: list[dict]) -> dict:
    """Accuracy against mean confidence per bin, over the diagonal a calibrated model follows; each
    point labelled with its image count, and below it the count histogram (a bin of one image can
    sit anywhere, so the counts say which points to believe). bins: rows with lower, upper,
    confidence, accuracy and count."""
    points = [{**row, "label": str(row["count"])} for row in bins]
    unit = {"type": "quantitative", "scale": {"domain": [0, 1]}}
    diagonal = {"data": {"values": [{"x": 0.0, "y": 0.0}, {"x": 1.0, "y": 1.0}]},
                "mark": {"type": "line", "color": "#999", "strokeDash": [6, 4]},
                "encoding": {"x": {"field": "x", **unit}, "y": {"field": "y", **unit}}}
    x = {"field": "confidence", "title": "mean confidence in the bin (top probability)", **unit}
    y = {"field": "accuracy", "title": "accuracy in the bin", **unit}
    # Area by image count; the counts are printed beside the points, so no legend.
    size = {"field": "count", "type": "quantitative", "scale": {"range": [20, 300]}, "legend": None}
    diagram = {
        "title": "Reliability: accuracy against confidence (dashed: perfect calibration)",
        "width": 360, "height": 300,
        "layer": [
            diagonal,
            {"data": {"values": points}, "mark": {"type": "line", "color": SPLIT_COLOURS["test"]},
             "encoding": {"x": x, "y": y}},
            {"data": {"values": points}, "mark": {"type": "circle", "color": SPLIT_COLOURS["test"], "opacity": 0.8},
             "encoding": {"x": x, "y": y, "size": size}},
            {"data": {"values": points}, "mark": {"type": "text", "dy": -12, "fontSize": 10},
             "encoding": {"x": x, "y": y, "text": {"field": "label"}}},
        ],
    }
    histogram = {
        "title": "Test images per confidence bin",
        "width": 360, "height": 110,
        "data": {"values": points},
        "layer": [
            {"mark": {"type": "rect", "color": SPLIT_COLOURS["test"], "stroke": "white"},
             "encoding": {"x": {"field": "lower", "title": "confidence (top probability)", **unit}, "x2": {"field": "upper"},
                          "y": {"field": "count", "type": "quantitative", "title": "images"}, "y2": {"datum": 0}}},
            {"mark": {"type": "text", "dy": -6, "fontSize": 10},
             "encoding": {"x": {"field": "confidence", **unit},
                          "y": {"field": "count", "type": "quantitative"}, "text": {"field": "label"}}},
        ],
    }
    return {"vconcat": [diagram, histogram], "spacing": 24}


def split_chart(*, classes: list[str], counts: dict[str, dict[str, int]]) -> dict:
    """Images per class, one bar per class stacked by split: counts maps split -> class -> images."""
    values = [{"class": name, "split": split, "images": per_class.get(name, 0), "order": order}
              for order, (split, per_class) in enumerate(counts.items()) for name in classes]
    splits = [split for split in SPLIT_COLOURS if split in counts]
    return {
        "title": "Images per class and split",
        "width": 360, "height": max(60, 22 * len(classes)),
        "data": {"values": values},
        "mark": "bar",
        "encoding": {
            "y": {"field": "class", "type": "nominal", "sort": classes, "title": None},
            "x": {"field": "images", "type": "quantitative", "stack": "zero", "title": "images"},
            "color": {"field": "split", "type": "nominal", "title": None, "legend": {"orient": "bottom"},
                      "scale": {"domain": splits, "range": [SPLIT_COLOURS[split] for split in splits]}},
            "order": {"field": "order", "type": "quantitative"},
        },
    }
