"""What the audit reports: headline metrics that no policy can hide, counts per kind first, errors before warnings."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from tests import faults
from tests.helpers import tiny_params, write_params
from trainwell.audit.dataset import audit_dataset
from trainwell.audit.report import format_text
from trainwell.cli import main
from trainwell.params import Params, load_params
from trainwell.stages import audit

HEADLINE = {"files_scanned", "errors", "policy_errors", "warnings", "quarantined"}


def plant_mixed_findings(root: Path) -> None:
    """Two errors, two warnings (one of them a near-duplicate pair) and one info among the demo images."""
    faults.write(root / "circle" / "cut.jpg", faults.truncated_jpeg())
    faults.write(root / "ring" / "notes.jpg", b"not an image")
    faults.write(root / "cross" / "really_png.jpg", faults.png_bytes(5))
    faults.write(root / "square" / "grey.png", faults.encode(Image.fromarray(faults.image_array(4)).convert("L"), "PNG"))
    original = Image.open(sorted((root / "triangle").iterdir())[0])
    faults.write(root / "triangle" / "again.png", faults.encode(original.resize((64, 64)).resize((32, 32)), "PNG"))


def test_metrics_count_broken_and_quarantined_files_whatever_the_policy(demo_copy, workdir, capsys):
    """With audit.fail_on: [] the stage passes, yet the metrics still show the broken files and
    the default gate fails on them: a policy can choose to train without them, not hide them."""
    faults.write(demo_copy / "circle" / "cut.jpg", faults.truncated_jpeg())
    faults.write(demo_copy / "ring" / "notes.jpg", b"not an image")
    params = tiny_params()
    params["audit"]["fail_on"] = []
    write_params(workdir, params)
    assert audit.main() == 0
    metrics = json.loads(Path(load_params().paths.audit_metrics).read_text())
    assert metrics == {"files_scanned": 62, "errors": 2, "policy_errors": 0, "warnings": 0, "quarantined": 2}
    report = json.loads(Path(load_params().paths.audit_report).read_text())
    assert report["summary"]["issues_by_kind"] == {"not_an_image": 1, "truncated": 1}  # per kind: the report only

    faults.write(workdir / "metrics" / "eval.json", json.dumps({"accuracy": 1.0}).encode())
    capsys.readouterr()
    assert main(["gate"]) == 1
    table = capsys.readouterr().out
    assert "metrics/audit.json:errors" in table and "metrics/audit.json:quarantined" in table
    assert "gate: 3 checks, 2 FAILED" in table

    params["audit"]["fail_on"] = Params().audit.fail_on  # the default policy: the same files now fail it
    write_params(workdir, params)
    assert audit.main() == 1
    metrics = json.loads(Path(load_params().paths.audit_metrics).read_text())
    assert metrics == {"files_scanned": 62, "errors": 2, "policy_errors": 2, "warnings": 0, "quarantined": 2}


def test_default_gate_checks_errors_and_quarantined():
    metrics = {check.metric: check.max for check in Params().gate.checks if check.metric.startswith("metrics/audit")}
    assert metrics == {"metrics/audit.json:errors": 0, "metrics/audit.json:quarantined": 0}


def test_text_report_opens_with_counts_per_kind_errors_first(demo_copy, workdir, capsys):
    plant_mixed_findings(demo_copy)
    params = load_params()
    report = audit_dataset(root=demo_copy, data=params.data, policy=params.audit)
    lines = format_text(report).splitlines()
    assert lines[0] == (f"audited 65 files in {demo_copy}: 2 with errors, 3 with warnings, 2 failing the policy; "
                        "2 quarantined")
    assert lines[1].split() == ["error", "not_an_image", "1,", "truncated", "1"]
    assert lines[2].split() == ["warning", "near_duplicate", "2,", "extension_mismatch", "1"]
    assert lines[3].split() == ["info", "grayscale", "1"]
    # Then per kind, errors first: a line with its count and its findings (a few at most) indented below.
    headers = [line for line in lines[4:] if line.split()[0] in ("ERROR", "WARNING", "INFO")]
    assert [line.split()[:3] for line in headers] == [
        ["ERROR", "not_an_image:", "1"], ["ERROR", "truncated:", "1"], ["WARNING", "extension_mismatch:", "1"],
        ["WARNING", "near_duplicate:", "2"], ["INFO", "grayscale:", "1"]]
    assert lines[lines.index(headers[0]) + 1].startswith("  ring/notes.jpg: ")

    assert main(["-q", "audit", str(demo_copy)]) == 1  # -q: errors only, on stderr
    quiet = capsys.readouterr()
    assert quiet.out == ""
    assert "circle/cut.jpg" in quiet.err and "ring/notes.jpg" in quiet.err and "policy violated" in quiet.err
    assert "WARNING" not in quiet.err and "INFO" not in quiet.err and "really_png" not in quiet.err


def test_html_puts_policy_errors_first_then_warnings_then_near_duplicate_groups(demo_copy, workdir, tmp_path):
    plant_mixed_findings(demo_copy)
    page = tmp_path / "audit.html"
    assert main(["audit", str(demo_copy), "--html", str(page)]) == 1
    text = page.read_text()
    order = [text.index(marker) for marker in ("Class balance", 'id="not_an_image"', 'id="truncated"',
                                               'id="extension_mismatch"', 'id="near_duplicate"', 'id="grayscale"')]
    assert order == sorted(order)
    assert "2 with errors" in text and "2 failing the policy" in text and "2 quarantined" in text


def test_console_and_page_scale_with_the_kinds_found_not_the_files(demo_copy, workdir, tmp_path, capsys):
    """300 broken files and 300 grayscale ones among 60: the console shows each kind's count and
    three examples, the page a dozen pictures per kind and a table of the rest; -v and the JSON
    still name every file."""
    for index in range(300):
        faults.write(demo_copy / "circle" / f"broken_{index:03d}.jpg", b"not an image %d" % index)
    for index in range(40):  # a minority: per file, not a dataset note
        faults.write(demo_copy / "ring" / f"grey_{index:03d}.png",
                     faults.encode(Image.fromarray(faults.image_array(index)).convert("L"), "PNG"))
    page = tmp_path / "audit.html"
    assert main(["audit", str(demo_copy), "--html", str(page)]) == 1
    out = capsys.readouterr().out
    assert len(out.splitlines()) < 20 and "not_an_image: 300 files" in out and "... and 297 more" in out
    text = page.read_text()
    assert text.count("<img") + text.count('class="missing"') <= 2 * 12 and "12 of 300 shown as pictures" in text
    assert text.count("broken_") == 300  # every file named once: pictures, then the table
    assert main(["-v", "audit", str(demo_copy)]) == 1
    assert capsys.readouterr().out.count("broken_") == 300
    assert main(["audit", str(demo_copy), "--format", "json"]) == 1
    assert len(json.loads(capsys.readouterr().out)["issues"]) == 340


def test_a_property_the_whole_dataset_shares_is_one_note(tmp_path, capsys):
    """Grayscale scans: one grayscale note with its count, not one finding per file; a single RGB
    file among them is nothing to report, and a kind the policy quarantines stays per file."""
    root = tmp_path / "scans"
    for label in ("a", "b"):
        for index in range(20):
            faults.write(root / label / f"{index}.png",
                         faults.encode(Image.fromarray(faults.image_array(index + 40 * (label == "b"))).convert("L"), "PNG"))
    faults.write(root / "a" / "colour.png", faults.png_bytes(7))
    report = audit_dataset(root=root, data=Params().data, policy=Params().audit)
    assert not [issue for issue in report.issues if issue.kind == "grayscale"]
    assert [(note.kind, note.files) for note in report.notes] == [("grayscale", 40)]
    assert report.as_dict()["dataset_notes"][0]["detail"].startswith("40 of 41 files: ")
    assert main(["audit", str(root)]) == 0
    out = capsys.readouterr().out
    assert out.count("grayscale") == 1 and "NOTE    grayscale: 40 of 41 files" in out
    policy = Params().audit.model_copy(update={"quarantine": [*Params().audit.quarantine, "grayscale"]})
    strict = audit_dataset(root=root, data=Params().data, policy=policy)
    assert len([issue for issue in strict.issues if issue.kind == "grayscale"]) == 40 and not strict.notes
    assert len(strict.quarantined) == 40
