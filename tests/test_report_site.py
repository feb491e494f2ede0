"""The report site built from plain data: one navigation on every page, an evaluation page with its matrix,
curves, reliability diagram and counted gallery, and pages that need no network (parsed, and opened in Chromium)."""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

import numpy as np
import pytest

from tests.browser import external_references, open_page
from trainwell.params import GateCheck, PathsParams
from trainwell.reports import charts
from trainwell.reports.audit_page import render_html
from trainwell.reports.evaluation_page import Example, gallery_heading, pick_examples, render_evaluation
from trainwell.reports.gate import evaluate_checks
from trainwell.reports.index_page import headlines, render_index
from trainwell.reports.labels_page import render_review
from trainwell.reports.run_pages import render_split, render_training
from trainwell.reports.site import PAGES, navigation, site_locations

CLASSES = ["circle", "cross", "ring"]
CONFUSION = [[40, 3, 2], [1, 44, 0], [7, 0, 38]]  # rows actual; 13 mistakes of 135
CURVES = {"loss": {"training": [(1, 1.1), (2, 0.7), (3, 0.5)], "validation": [(1, 1.0), (2, 0.8), (3, 0.75)]},
          "accuracy": {"training": [(1, 0.5), (2, 0.8), (3, 0.9)], "validation": [(1, 0.55), (2, 0.7), (3, 0.78)]}}
RELIABILITY = [{"bin": 4, "lower": 4 / 15, "upper": 5 / 15, "confidence": 0.31, "accuracy": 1.0, "count": 1},
               {"bin": 10, "lower": 10 / 15, "upper": 11 / 15, "confidence": 0.70, "accuracy": 0.6, "count": 17},
               {"bin": 14, "lower": 14 / 15, "upper": 1.0, "confidence": 0.97, "accuracy": 0.95, "count": 117}]


def picture(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, size=(32, 32, 3), dtype=np.uint8)


def example(index: int) -> Example:
    return Example(path=f"circle/img_{index}.jpg", actual="circle", predicted="ring", p_predicted=0.9 - index / 1000,
                   p_actual=0.05, image=picture(index))


def evaluation_page(*, mistakes_total: int = 30, locations: dict[str, str] | None = None) -> str:
    return render_evaluation(
        evaluation={"test_images": 135, "accuracy": 0.9037, "macro_f1": 0.9031, "expected_calibration_error": 0.0412},
        per_class={name: {"precision": 0.9, "recall": 0.88, "f1": 0.89, "support": 45} for name in CLASSES},
        classes=CLASSES, confusion=CONFUSION, reliability=RELIABILITY, curves=CURVES,
        mistakes=[example(index) for index in range(min(24, mistakes_total))], mistakes_total=mistakes_total,
        unsure=[example(100)], correct_total=105, locations=locations or site_locations())


def write_site(root: Path) -> dict[str, Path]:
    """Every page of the site, from plain data, where a project keeps them; returns page key -> file."""
    locations = site_locations()
    audit = {"root": "data/demo", "files_scanned": 3, "issues": [], "near_duplicate_groups": [],
             "summary": {"errors": 0, "policy_errors": 0, "warnings": 0, "quarantined": 0, "policy_holds": True,
                         "class_counts": {name: 1 for name in CLASSES}}}
    checks = [GateCheck(metric="metrics/eval.json:accuracy", min=0.95), GateCheck(metric="metrics/audit.json:errors", max=0)]
    rows = evaluate_checks(checks=checks, current={"metrics/eval.json": {"accuracy": 0.9037},
                                                   "metrics/audit.json": {"errors": 0}}, baseline=None)
    pages = {
        "index": render_index(numbers=headlines(evaluation={"accuracy": 0.9037, "macro_f1": 0.9031,
                                                            "expected_calibration_error": 0.0412},
                                                audit={"errors": 0, "quarantined": 2}, labels={"suspects": 4},
                                                export={"int8_agreement": 0.9973}),
                              gate_rows=rows, gate_configured=True, test_images=135, locations=locations),
        "audit": render_html(audit, root=root, max_pixels=10_000, navigation=navigation("audit", locations)),
        "split": render_split(classes=CLASSES, counts={"training": {name: 30 for name in CLASSES},
                                                       "validation": {name: 7 for name in CLASSES},
                                                       "test": {name: 8 for name in CLASSES}},
                              excluded=2, groups_kept_together=1, locations=locations),
        "training": render_training(curves=CURVES, settings={"epochs": 3, "learning_rate": 0.001},
                                    incidents=[{"epoch": 2, "step": 7, "kind": "nan_loss", "loss": "nan",
                                                "action": "rolled back", "files": ["a.jpg", "b.jpg"]}],
                                    locations=locations),
        "evaluation": evaluation_page(locations=locations),
        "labels": render_review(
            suspects=[{"index": 0, "path": "ring/r_1.jpg", "split": "test", "given_label": "ring",
                       "suggested_label": "circle", "score": 0.04}],
            outliers=[{"index": 1, "path": "circle/c_2.jpg", "split": "train", "label": "circle", "score": 0.001}],
            image=lambda index: picture(7 + index), reviewed=90, counts={"train": 60, "val": 15, "test": 15},
            locations=locations),
    }
    files = {}
    for key, text in pages.items():
        files[key] = root / locations[key]
        files[key].parent.mkdir(parents=True, exist_ok=True)
        files[key].write_text(text, encoding="utf-8")
    return files


def test_gallery_heading_says_how_many_of_how_many():
    assert gallery_heading(shown=24, total=252, what="mistakes", order="most confident") == \
        "24 most confident of 252 mistakes"
    assert gallery_heading(shown=3, total=3, what="mistakes", order="most confident") == \
        "All 3 mistakes, most confident first"
    assert gallery_heading(shown=0, total=0, what="mistakes", order="most confident") == "No mistakes"


def test_gallery_picks_the_most_confident_mistakes_and_least_confident_hits():
    confidence = np.array([0.9, 0.5, 0.99, 0.6, 0.7, 0.99])
    correct = np.array([False, True, False, True, False, True])
    assert pick_examples(confidence=confidence, correct=correct, count=2) == ([2, 0], [1, 3])


def test_every_page_links_every_page_relative_to_itself():
    for locations in (site_locations(), site_locations(PathsParams(audit_html="out/audit report.html", eval_report_dir="a/b/c"))):
        for here in PAGES:
            bar = navigation(here, locations)
            hrefs = re.findall(r'href="([^"]+)"', bar)
            targets = [posixpath.normpath(posixpath.join(posixpath.dirname(locations[here]), href.replace("&amp;", "&")))
                       for href in hrefs]
            assert targets == [locations[key] for key in PAGES]
            assert re.findall(r'<a [^>]*aria-current="page"[^>]*>([^<]+)</a>', bar) == [PAGES[here]]


def test_evaluation_page_has_matrix_curves_reliability_table_and_counted_gallery():
    text = evaluation_page()
    # Confusion matrix, counts and row shares: every count is printed in its cell.
    assert "Test images (rows: actual class)" in text and "Share of each actual class" in text
    cells = re.findall(r"<text[^>]*>(\d+)</text>", text)
    assert {str(count) for row in CONFUSION for count in row} <= set(cells)
    assert ">0.89<" in text  # 40 of 45 circles, as a share
    # Training and validation on ONE chart per metric.
    for metric in ("Loss", "Accuracy"):
        chart = re.search(rf'<figure class="chart" id="evaluation-curves-{metric.lower()}">.*?</figure>', text, re.S)
        assert chart and f"{metric}: training and validation" in chart.group(0)
        assert ">training<" in chart.group(0) and ">validation<" in chart.group(0)
    # Reliability: the diagonal is drawn (a dashed line across the plot), each bin labelled with its count,
    # and the count histogram below it.
    reliability = re.search(r'<figure class="chart" id="reliability">.*?</figure>', text, re.S).group(0)
    assert re.search(r'<path[^>]*stroke-dasharray="6,4"', reliability)
    assert {">1<", ">17<", ">117<"} <= set(re.findall(r">\d+<", reliability))
    assert "Test images per confidence bin" in reliability
    assert "<td>ring</td><td class=n>0.900</td>" in text  # the per-class table
    assert "<h2>24 most confident of 30 mistakes</h2>" in text
    # The test split is "test", the one during training "validation": nothing here says "eval".
    visible = re.sub(r"<[^>]+>", " ", text)
    assert not re.search(r"\beval\b", visible)


def test_pages_are_the_same_bytes_every_time(tmp_path):
    first = {key: path.read_bytes() for key, path in write_site(tmp_path / "one").items()}
    second = {key: path.read_bytes() for key, path in write_site(tmp_path / "two").items()}
    assert first == second


def test_no_page_refers_to_anything_outside_the_project(tmp_path):
    files = write_site(tmp_path)
    for key, path in files.items():
        text = path.read_text()
        assert external_references(text) == [], key
        assert "<nav" in text, key  # every page carries the site's navigation
    # The check itself catches what it must.
    assert external_references('<img src="https://cdn.example/x.png"><a href="//x.org">') == \
        ["https://cdn.example/x.png", "//x.org"]
    assert external_references("<style>@import 'a.css'</style><script></script>") == ["@import", "<script>"]


def test_charts_never_fetch_data():
    figure = charts.render_svg({"data": {"url": "https://example.com/data.csv"}, "mark": "point"}, name="x",
                               description="x")
    assert "Not drawn" in figure and "<svg" not in figure and external_references(figure) == []


@pytest.mark.browser
def test_every_page_renders_in_chromium_with_no_network(tmp_path):
    files = write_site(tmp_path / "project")
    shown = {key: open_page(path, tmp_path / f"chromium-{key}") for key, path in files.items()}
    for key, page in shown.items():
        assert page.requests == [], key
        # A blank page draws nothing below the navigation bar; the sparsest here (an audit without
        # findings) inks about 1% of it.
        assert page.ink > 0.005, f"{key} looks blank ({page.ink:.4f} of the page drawn)"
        assert page.dom.count('<nav class="site"') == 1 and "<h1>" in page.dom, key
    # 2 confusion matrices, 2 curves, 1 reliability diagram with its histogram.
    assert shown["evaluation"].dom.count("<svg") == 5
    # The request check is real: a page that fetches is caught even though nothing answers.
    fetching = tmp_path / "fetching.html"
    fetching.write_text('<html><body><h1>x</h1><img src="https://example.com/a.png"></body></html>')
    assert open_page(fetching, tmp_path / "chromium-fetching").requests == ["https://example.com/a.png"]


def test_the_overviews_labels_link_names_every_split_the_review_covers():
    from trainwell.reports.index_page import PAGE_SUMMARIES
    from trainwell.training.label_review import REVIEWED_SPLITS

    for split in REVIEWED_SPLITS:
        assert {"train": "training", "val": "validation"}.get(split, split) in PAGE_SUMMARIES["labels"], split


def test_the_labels_page_marks_a_wrong_test_label_in_red_and_a_test_outlier_not():
    """A wrong test label skews the reported accuracy; an unusual test image with its right label
    does not, so an outlier card never says so (issue #22: 60 ordinary "1"s shown in red)."""
    page = render_review(
        suspects=[{"index": 0, "path": "ring/r_1.jpg", "split": "test", "given_label": "ring",
                   "suggested_label": "circle", "score": 0.04}],
        outliers=[{"index": 1, "path": "one/o_2.jpg", "split": "test", "label": "one", "score": 0.001}],
        image=picture, reviewed=90, counts={"train": 60, "val": 15, "test": 15})
    suspects, outliers = page.split("<h2>Outliers")
    assert suspects.count("skews the reported accuracy") == 1
    assert "skews the reported accuracy" not in outliers and "one/o_2.jpg" in outliers
    assert "test split" in outliers
