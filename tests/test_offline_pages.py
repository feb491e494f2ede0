"""Pages and plots fetch nothing and show whatever the files hold: hostile Vega-Lite specs, DVC templates and report inputs."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT, tiny_params, write_params
from trainwell.reports.charts import offline_svg, render_svg
from trainwell.reports.site import site_locations
from trainwell.stages import report

# What a template or a metrics file may carry to make a page fetch, run or show something it should not.
PAYLOADS = ["https://evil.example/beacon.png", "//evil.example/x.png", "file:///etc/passwd", "/etc/passwd",
            "javascript:alert(1)", "data:text/html,<script>alert(1)</script>", "url(https://evil.example/x)",
            "u\\72l(https://evil.example/x)", '"><img src=x onerror=alert(1)>', "<script>alert(1)</script>",
            "@import 'https://evil.example/a.css'"]


class Loads(HTMLParser):
    """Everything in a page that could load a resource or run script: a stricter reading than
    tests.browser.external_references, since a relative or absolute path loads a local file too."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "iframe", "object", "embed", "link", "foreignobject", "audio", "video"):
            self.found.append(f"<{tag}>")
        for name, value in attrs:
            value = value or ""
            if name.startswith("on"):
                self.found.append(f"{name}=")
            elif name in ("src", "href", "xlink:href", "srcset", "action", "background", "poster"):
                # The site's own relative links between its pages are the one kind of link allowed.
                if not (value.startswith(("#", "data:image/png;base64,")) or (tag == "a" and value.endswith(".html")
                                                                             and "://" not in value)):
                    self.found.append(f"{tag} {name}={value}")
            elif name.startswith("aria-") or name == "alt":  # text a screen reader says, never loaded
                continue
            elif "url(" in value.replace(" ", "").lower() and not value.replace(" ", "").lower().startswith("url(#"):
                self.found.append(f"{name}={value}")

    handle_startendtag = handle_starttag


def loads(text: str) -> list[str]:
    parser = Loads()
    parser.feed(text)
    return parser.found + (["@import"] if "@import" in text.replace("&#x27;", "'") and "<style>" in text else [])


def hostile_specs(count: int, seed: int = 0) -> list[dict]:
    """Vega-Lite specs with payloads in marks, encodings, config, titles and data sources."""
    rng = random.Random(seed)
    specs = []
    for _ in range(count):
        payload = rng.choice(PAYLOADS)
        values = [{"x": index, "y": index * 2, "u": payload, "t": payload} for index in range(3)]
        mark: dict = {"type": rng.choice(["point", "image", "text", "bar", "rect"]), "width": 8, "height": 8}
        encoding: dict = {"x": {"field": "x", "type": "quantitative"}, "y": {"field": "y", "type": "quantitative"}}
        spec: dict = {"data": {"values": values}, "mark": mark, "encoding": encoding}
        for place in rng.sample(["fill", "stroke", "href", "url", "cursor", "text", "description", "href-field",
                                 "url-field", "tooltip", "title", "background", "config", "data-url", "layer",
                                 "fill-value"], k=rng.randint(1, 4)):
            if place in ("fill", "stroke", "href", "url", "cursor", "text", "description"):
                mark[place] = payload
            elif place in ("href-field", "url-field", "tooltip"):
                encoding[place.removesuffix("-field")] = {"field": "u", "type": "nominal"}
            elif place == "title":
                spec["title"] = {"text": payload, "href": payload}
            elif place == "background":
                spec["background"] = payload
            elif place == "config":
                spec["config"] = {"mark": {"href": payload, "fill": payload}, "background": payload}
            elif place == "data-url":
                spec["data"] = {"url": payload}
            elif place == "layer":
                spec = {"data": spec["data"], "layer": [{"mark": dict(mark), "encoding": dict(encoding)},
                                                        {"mark": {"type": "rule", "href": payload}}]}
            else:
                encoding["fill"] = {"value": payload}
        specs.append(spec)
    return specs


def test_hostile_specs_draw_nothing_that_loads_or_runs(tmp_path):
    """A DVC template once put an image mark's https:// URL in the page (a beacon), and an href
    encoding crashed `trainwell plots`; a file:// data URL is read by vl-convert itself."""
    secret = tmp_path / "secret.csv"
    secret.write_text("a,b\nSECRET,1\n")
    specs = hostile_specs(40) + [{"data": {"url": secret.as_uri()}, "mark": "text",
                                  "encoding": {"text": {"field": "a"}}}]
    for number, spec in enumerate(specs):
        figure = render_svg(spec, name=f'x"{number} onload=alert(1)', description=PAYLOADS[number % len(PAYLOADS)])
        assert loads(figure) == [], (spec, figure[-600:])
        assert "SECRET" not in figure and figure.startswith('<figure class="chart"')


@pytest.mark.parametrize("svg", [
    '<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
    '<svg xmlns="http://www.w3.org/2000/svg"><foreignObject><p>x</p></foreignObject></svg>',
    '<svg xmlns="http://www.w3.org/2000/svg"><style>@import url(https://e/x.css)</style></svg>',
    '<!DOCTYPE svg [<!ENTITY x SYSTEM "file:///etc/passwd">]><svg xmlns="http://www.w3.org/2000/svg">&x;</svg>',
    '<svg xmlns="http://www.w3.org/2000/svg"><g>unclosed</svg>',
])
def test_markup_that_could_load_or_run_is_never_drawn(svg):
    with pytest.raises(ValueError):
        offline_svg(svg)


def test_attributes_that_would_load_something_are_dropped():
    svg = ('<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" onload="alert(1)">'
           '<image xlink:href="https://e/b.png"/><a href="javascript:x"><rect fill="url(#own)"/></a>'
           '<rect fill="url(https://e/p#a)" style="cursor: u\\72l(https://e/c)"/><use href="#own"/></svg>')
    cleaned = offline_svg(svg)
    assert loads(cleaned) == [] and 'fill="url(#own)"' in cleaned and 'href="#own"' in cleaned


TEMPLATES = {
    # An image mark's URL: once put in the page as is, a beacon fetched by whoever opened it.
    "image-mark-url": {"data": {"values": "<DVC_METRIC_DATA>"}, "mark": {"type": "image", "width": 20, "height": 20},
                       "encoding": {"x": {"field": "x", "type": "quantitative"},
                                    "y": {"field": "y", "type": "quantitative"}, "url": {"field": "u", "type": "nominal"}}},
    # An href encoding: once crashed the command (exit 3); a fill by URL fetches too.
    "href-encoding": {"data": {"values": "<DVC_METRIC_DATA>"},
                      "mark": {"type": "point", "fill": "url(https://evil.example/f#a)"},
                      "encoding": {"x": {"field": "x", "type": "quantitative"},
                                   "y": {"field": "y", "type": "quantitative"}, "href": {"field": "u", "type": "nominal"}}},
}


def test_trainwell_plots_with_hostile_templates_and_no_dvc_on_path(tmp_path):
    """Without `dvc` on PATH it once crashed with FileNotFoundError: the interpreter's own DVC is used."""
    project = tmp_path / "project"
    project.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=project, check=True)
    plots = []
    for name, template in TEMPLATES.items():
        (project / f"{name}.csv").write_text("x,y,u\n1,2,https://evil.example/a.png\n2,3,file:///etc/passwd\n")
        (project / f"{name}.json").write_text(json.dumps(template))
        plots.append(f"  - {name}.csv:\n      template: {name}.json\n      x: x\n      y: y\n")
    (project / "dvc.yaml").write_text("plots:\n" + "".join(plots))
    environment = dict(os.environ, PATH="/usr/bin:/bin", PYTHONPATH=str(REPO_ROOT / "src"))
    result = subprocess.run([sys.executable, "-m", "trainwell", "plots", "--out", "out"], cwd=project, env=environment,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    page = (project / "out" / "index.html").read_text()
    assert loads(page) == [], loads(page)
    assert page.count("<figure") == 2 and page.count("<svg") + page.count("Not drawn") == 2


HOSTILE = '<img src=x onerror=alert(1)><script>alert(2)</script>'
# Each scenario: what a file another stage writes holds instead (JSON as Python values; CSV and TSV as text).
SCENARIOS = [
    {"incidents": [{"epoch": HOSTILE, "step": HOSTILE, "kind": HOSTILE, "files": HOSTILE}, 5, "x", None, []],
     "eval": {"test_images": HOSTILE, "accuracy": HOSTILE}, "audit": {"errors": HOSTILE, "quarantined": [HOSTILE]}},
    {"incidents": {"epoch": 1}, "counts": [1, 2], "classes": {"a": 1}, "eval": [HOSTILE], "per_class": [HOSTILE],
     "confusion": [1], "split_metrics": HOSTILE},
    {"incidents": HOSTILE, "counts": {"train": {"per_class": {HOSTILE: HOSTILE}}}, "classes": [HOSTILE, 3],
     "eval": {"test_images": 3}, "per_class": {"per_class": {HOSTILE: {"precision": HOSTILE}}},
     "confusion": {"classes": [HOSTILE], "matrix": [[1, 2]]}, "reliability": "bin,lower\nx,y\n",
     "predictions": "not,a,table\n\x00\x00\n"},
    {"counts": {"train": HOSTILE, "val": {"per_class": []}}, "per_class": {"per_class": {"a": {
        "precision": 1, "recall": 1, "f1": 1, "support": HOSTILE}}}, "confusion": {"classes": "ab", "matrix": "ab"},
     "curves": {f"{HOSTILE}.tsv": "step\tx\n0\t1.5\nzero\tone\n\t\n1\n", "loss.tsv": "step\tloss\n0\tnan\n1\t1e999\n"}},
    {"incidents": [[[[[]]]]] * 3, "eval": {"test_images": 10**400, "accuracy": float("nan")},
     "labels": {"suspects": HOSTILE}, "export": {HOSTILE: 1.0, "x": HOSTILE}},
]


def write_scenario(root: Path, scenario: dict) -> None:
    paths = tiny_params()["paths"]
    files = {"incidents": f"{paths['train_report_dir']}/incidents.json", "eval": paths["eval_metrics"],
             "audit": paths["audit_metrics"], "counts": f"{paths['splits_dir']}/counts.json",
             "classes": f"{paths['splits_dir']}/classes.json", "split_metrics": paths["split_metrics"],
             "per_class": f"{paths['eval_report_dir']}/per_class.json",
             "confusion": f"{paths['eval_report_dir']}/confusion.json", "labels": paths["label_metrics"],
             "export": paths["export_metrics"], "reliability": f"{paths['eval_report_dir']}/reliability.csv",
             "predictions": f"{paths['eval_report_dir']}/predictions.csv"}
    for key, value in scenario.items():
        if key == "curves":
            for name, text in value.items():
                path = root / paths["train_log_dir"] / "plots" / "metrics" / "train" / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
            continue
        path = root / files[key]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value if key in ("reliability", "predictions") else json.dumps(value))


@pytest.mark.parametrize("number", range(len(SCENARIOS)))
def test_report_site_shows_whatever_the_stages_files_hold(workdir, number, capsys):
    """incidents.json's epoch and step once reached the page unescaped, and a list-shaped file crashed
    the stage: every page is written, escaping what it shows, whatever the files hold."""
    write_params(workdir, tiny_params())
    write_scenario(workdir, SCENARIOS[number])
    assert report.main() == 0, capsys.readouterr().err
    for key in ("index", "split", "training", "evaluation"):
        page = (workdir / site_locations()[key]).read_text()
        assert loads(page) == [], (key, loads(page))
        assert "<script>" not in page and "<img src=x" not in page, key
