"""Stage export: the SavedModel read on raw image bytes, TFLite parity judged on decided images, byte-identical artifacts; the model card."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests import faults
from tests.helpers import CLASSES, EXPORT_SIZE, run, save_export_model, tiny_params, trainwell_in_process, write_params
from trainwell.data.decode import prepare_image
from trainwell.reports.card import markdown_text, render_card_markdown

# The exported project and most tests run `trainwell` commands in their own processes.
pytestmark = pytest.mark.tf_process
SIZE = EXPORT_SIZE


def test_saved_model_reads_raw_jpeg_and_png_bytes_as_training_saw_them(exported):
    import tensorflow as tf

    from trainwell.training.model_files import load_model_file

    model = load_model_file(exported / "models" / "model.keras", compile=False)
    loaded = tf.saved_model.load(str(exported / "models" / "export" / "saved_model"))
    serve = loaded.signatures["serving_default"]
    jpegs = sorted((exported / "data" / "demo").rglob("*.jpg"))[:6]
    blobs = [path.read_bytes() for path in jpegs]
    pixels = np.stack([prepare_image(blob, suffix=".jpg", size=SIZE, max_pixels=10**7) for blob in blobs])
    expected = model.predict(pixels, verbose=0)
    response = serve(image_bytes=tf.constant(blobs))
    # The same decoder settings as Pillow: a file already at the training size gives identical pixels.
    np.testing.assert_allclose(response["probabilities"].numpy(), expected, atol=1e-6)
    assert [name.decode() for name in response["class_name"].numpy()] == [
        sorted(CLASSES)[index] for index in expected.argmax(axis=1)]
    assert [name.decode() for name in response["class_names"].numpy()[0]] == sorted(CLASSES)

    # Other sizes and formats go through TensorFlow's resize: close to Pillow's, not always equal.
    rng = np.random.default_rng(0)
    others = [faults.encode(rng.integers(0, 256, (SIZE * 2, SIZE * 2, 3), dtype=np.uint8), "PNG"),
              faults.encode(rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8), "PNG"),
              faults.encode(rng.integers(0, 256, (SIZE * 3, SIZE * 3, 3), dtype=np.uint8), "BMP")]
    pixels = np.stack([prepare_image(blob, suffix=".png", size=SIZE, max_pixels=10**7) for blob in others])
    served = serve(image_bytes=tf.constant(others))["probabilities"].numpy()
    assert np.abs(served - model.predict(pixels, verbose=0)).max() < 0.02


def test_parity_is_measured_and_written(exported):
    metrics = json.loads((exported / "metrics" / "export.json").read_text())
    assert set(metrics) == {"saved_model_agreement", "encoded_agreement", "float16_agreement", "int8_agreement",
                            "bars_missed"}
    assert metrics["saved_model_agreement"] == 1.0 and metrics["encoded_agreement"] == 1.0
    parity = json.loads((exported / "models" / "export" / "parity.json").read_text())
    assert parity["test_images"] == 15 and parity["encoded"]["images"] == 15
    assert parity["saved_model"]["max_probability_difference"] == 0.0
    for kind in ("model_float16.tflite", "model_int8.tflite"):
        assert (exported / "models" / "export" / kind).stat().st_size > 1000


def test_tflite_files_run_on_uint8_pixels(exported):
    from trainwell.data.cache import load_split
    from trainwell.training.export import parity, tflite_probabilities
    from trainwell.training.model_files import load_model_file

    test = load_split(cache_dir=exported / "data" / "cache", split="test")
    reference = load_model_file(exported / "models" / "model.keras", compile=False).predict(test.images, verbose=0)
    for kind, bound in (("float16", 0.01), ("int8", 0.1)):
        content = (exported / "models" / "export" / f"model_{kind}.tflite").read_bytes()
        measured = parity(reference, tflite_probabilities(content, test.images, batch_size=4))
        assert measured["max_probability_difference"] < bound, (kind, measured)


def digests(folder: Path) -> dict[str, str]:
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def test_a_second_export_writes_the_same_bytes(exported):
    before = digests(exported / "models" / "export")
    run(["trainwell", "export"], exported)  # a new process: nothing carried over in memory
    assert digests(exported / "models" / "export") == before
    assert "saved_model/saved_model.pb" in before and "saved_model/variables/variables.index" in before


def test_near_ties_are_counted_but_not_judged(exported, tmp_path):
    """A model whose classes are a hair apart: int8 reorders them, and at the shipped bars and margin
    that is no miss (no decided image), so the stage passes and says how many images it judged."""
    project = tmp_path / "project"
    shutil.copytree(exported, project, symlinks=True)
    params = tiny_params()
    params["export"].update({"min_agreement_int8": 0.995, "min_agreement_float16": 0.999})  # the shipped bars
    write_params(project, params)
    save_export_model(project / "models" / "model.keras", near_ties=True)
    result = trainwell_in_process(["export"], project)
    parity = json.loads((project / "models" / "export" / "parity.json").read_text())
    assert parity["int8"]["decided_images"] == 0 and parity["bars_missed"] == []
    assert json.loads((project / "metrics" / "export.json").read_text())["bars_missed"] == 0
    assert "int8 1.0000 of 0 decided" in result.stdout and "decided test images, below" not in result.stderr


def test_a_missed_bar_warns_writes_the_export_and_fails_the_gate(exported, tmp_path):
    project = tmp_path / "project"
    shutil.copytree(exported, project, symlinks=True)
    before = digests(project / "models" / "export")
    params = tiny_params()
    # Every image judged (no margin): int8 arithmetic cannot keep near-tied probabilities in order.
    params["export"].update({"min_agreement_int8": 0.995, "tie_margin": 0.0})
    params["gate"]["checks"].append({"metric": "metrics/export.json:bars_missed", "max": 0})
    write_params(project, params)
    save_export_model(project / "models" / "model.keras", near_ties=True)
    result = trainwell_in_process(["export"], project)  # an experiment finishes: exit 0
    assert "int8 agrees on" in result.stderr and "decided test images, below 0.995" in result.stderr
    assert digests(project / "models" / "export") != before  # the new model's export, whole
    parity = json.loads((project / "models" / "export" / "parity.json").read_text())
    assert parity["int8"]["decided_images"] == 15 and len(parity["bars_missed"]) >= 1
    assert json.loads((project / "metrics" / "export.json").read_text())["bars_missed"] >= 1
    assert not (project / "models" / ".export.building").exists()
    gate = run(["trainwell", "gate"], project, check=False)  # a release is still held to the bar
    assert gate.returncode == 1 and "metrics/export.json:bars_missed" in gate.stdout


HOSTILE_TEXT = ["a|b", "# heading", "<script>alert(1)</script>", "![i](http://evil.example/t.png)",
                "[x](javascript:alert(1))", "*bold* _u_", "&amp; &lt;b&gt;", "a\nb", "`code`", "\\", "<http://x.example>",
                "line\n\nnext paragraph", "\x1b[31mred"]


def test_card_text_cannot_break_its_markdown():
    """Rendered by a CommonMark parser: no tag, link, image, emphasis or code from the data, every table row whole."""
    from markdown_it import MarkdownIt

    card = {
        "trainwell_version": "0", "intended_use": " ".join(HOSTILE_TEXT),
        "model": {"file": HOSTILE_TEXT[3], "sha256": "0" * 64, "network": HOSTILE_TEXT[4], "input": HOSTILE_TEXT[5]},
        "classes": HOSTILE_TEXT, "data": {"dir": HOSTILE_TEXT[2], "version": HOSTILE_TEXT[4], "splits": {"test": {"total": 3}}},
        "audit": {"errors": 0}, "training": {text: text for text in HOSTILE_TEXT},
        "metrics": {"test_images": 3, "accuracy": 0.5},
        "per_class": {text: {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1} for text in HOSTILE_TEXT},
        "label_review": None, "label_review_file": HOSTILE_TEXT[0], "export": None, "limitations": HOSTILE_TEXT,
        "served_refusals": HOSTILE_TEXT,
    }
    text = render_card_markdown(card)
    parser = MarkdownIt("commonmark").enable("table")
    rendered = parser.render(text)
    for tag in ("<script", "<img", "<a ", "<em>", "<strong>", "<code>code</code>", "<h1>heading", "\x1b"):
        assert tag not in rendered, tag
    # The class list renders each name literally: what the data says, not what Markdown makes of it.
    for name in ("a|b", "*bold* _u_", "[x](javascript:alert(1))", "&amp;amp; &amp;lt;b&amp;gt;", "a\\nb"):
        assert name in rendered, name
    for token in parser.parse(text):
        if token.type == "tr_open":
            assert token.map is not None
    tables = [block for block in rendered.split("<table>")[1:]]
    for table in tables:
        rows = table.split("</table>")[0].split("<tr>")[1:]
        widths = {row.count("<td") + row.count("<th") for row in rows}
        assert len(widths) == 1, widths  # no cell split into two columns by a stray |
    assert markdown_text("a\nb") != markdown_text("a b")
    # Paths and keys read as they are: not models\/model\.keras (issue #25).
    assert markdown_text("models/model.keras") == "models/model.keras" and markdown_text("data.dir") == "data.dir"


@pytest.mark.parametrize("seed", range(30))
def test_generated_card_text_renders_as_itself(seed):
    """Random strings of Markdown's punctuation, digits and letters render to exactly their own text."""
    import html

    from markdown_it import MarkdownIt

    rng = np.random.default_rng(seed)
    alphabet = list("\\`*_~[]<>|&!#:@{}()-+=.1a /'\"%$^;,?") + ["www.", "http://", "1. ", "- "]
    text = "".join(rng.choice(alphabet, size=int(rng.integers(1, 40))))
    rendered = MarkdownIt("commonmark").enable("table").render(f"| x |\n|---|\n| {markdown_text(text)} |\n")
    cell = rendered.split("<td>")[1].split("</td>")[0]
    assert html.unescape(cell) == text.strip(), (text, markdown_text(text), cell)


def test_parity_figures_do_not_depend_on_the_last_bits_of_the_math_kernels():
    """A fresh clone on another CPU wrote models/export with other bytes: the largest probability
    difference carried kernel noise (~1e-7) into parity.json, which DVC hashes."""
    from trainwell.training.export import parity

    rng = np.random.default_rng(0)
    reference = rng.dirichlet(np.ones(5), size=400).astype(np.float32)
    candidate = np.clip(reference + rng.normal(0, 2e-3, reference.shape), 0, 1).astype(np.float32)
    figures = {json.dumps(parity(reference, candidate + rng.normal(0, 1e-7, candidate.shape).astype(np.float32)))
               for _ in range(20)}
    assert len(figures) == 1, figures
    assert 0 < json.loads(figures.pop())["max_probability_difference"] < 0.05
