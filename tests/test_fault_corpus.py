"""The audit's fault corpus: every kind of broken or suspicious file, each named with the right kind."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from tests import faults
from tests.helpers import snapshot
from trainwell.cli import main


def build_corpus(root):
    """One file (or layout) per problem, beside good images so every class exists."""
    expected = set()
    for label in ("cat", "dog"):
        for index in range(3):
            faults.write(root / label / f"good_{index}.png", faults.png_bytes(10 * index + len(label)))

    def add(path, data, kind):
        faults.write(root / path, data)
        expected.add((path, kind))

    add("cat/truncated.jpg", faults.truncated_jpeg(), "truncated")
    add("cat/empty.jpg", b"", "empty_file")
    add("cat/notes.jpg", b"meeting notes, not a picture\n", "not_an_image")
    add("cat/broken_crc.png", faults.broken_crc_png(), "corrupt")
    add("cat/png_named.jpg", faults.png_bytes(1), "extension_mismatch")
    sixteen = (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 50).astype(np.uint16)
    add("cat/sixteen_bit.png", faults.encode(Image.fromarray(sixteen), "PNG"), "high_bit_depth")
    add("dog/cmyk.jpg", faults.encode(Image.fromarray(faults.image_array(2)).convert("CMYK"), "JPEG"), "cmyk")
    add("dog/rgba.png", faults.encode(Image.fromarray(faults.image_array(3)).convert("RGBA"), "PNG"), "alpha")
    add("dog/grey.png", faults.encode(Image.fromarray(faults.image_array(4)).convert("L"), "PNG"), "grayscale")
    frames = [Image.fromarray(faults.image_array(seed)).convert("P") for seed in (5, 6)]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:])
    add("dog/animated.gif", gif.getvalue(), "animated")
    float_image = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    float_image[4, 4] = np.nan
    add("dog/float_nan.tif", faults.encode(Image.fromarray(float_image, mode="F"), "TIFF"), "nan")
    add("dog/array_nan.npy", faults.npy_with_nan(), "nan")
    add("dog/bomb.png", faults.bomb_png_header(), "too_large")
    add("dog/flat.png", faults.encode(Image.new("RGB", (32, 32), (90, 20, 200)), "PNG"), "constant")
    twin = faults.png_bytes(77)
    add("cat/twin.png", twin, "label_conflict")
    add("dog/twin.png", twin, "label_conflict")
    original = Image.fromarray(faults.image_array(88, size=64)).resize((32, 32))
    add("cat/near_a.png", faults.encode(original, "PNG"), "near_duplicate")
    add("cat/near_b.jpg", faults.encode(original, "JPEG", quality=95), "near_duplicate")
    add("horse/stray_class.png", faults.png_bytes(9), "unknown_class")
    expected.discard(("horse/stray_class.png", "unknown_class"))
    expected.add(("horse", "unknown_class"))
    (root / "cat" / "passwd.jpg").symlink_to("/etc/passwd")
    expected.add(("cat/passwd.jpg", "symlink_outside"))
    return expected


def run_audit(capsys, *args) -> tuple[int, dict]:
    status = main(["audit", *args, "--format", "json"])
    return status, json.loads(capsys.readouterr().out)


def test_every_fault_is_named_with_its_kind_and_nothing_changes(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "images"
    expected = build_corpus(root)
    (tmp_path / "params.yaml").write_text("data:\n  classes: [cat, dog]\n")
    before = snapshot(root)
    status, report = run_audit(capsys, str(root))
    assert status == 1  # truncated, corrupt, nan, ... violate the default policy
    found = {(issue["path"], issue["kind"]) for issue in report["issues"]}
    missing = expected - found
    assert not missing, f"not detected: {sorted(missing)}"
    severities = {(issue["path"], issue["kind"]): issue["severity"] for issue in report["issues"]}
    for blocking in ("cat/truncated.jpg", "cat/empty.jpg", "cat/notes.jpg", "cat/broken_crc.png", "dog/bomb.png"):
        assert blocking in report["quarantined"]
    assert severities[("dog/grey.png", "grayscale")] == "info"
    assert severities[("cat/passwd.jpg", "symlink_outside")] == "error"
    assert "dog/float_nan.tif" in report["quarantined"] and "dog/array_nan.npy" in report["quarantined"]
    nan_detail = next(i["detail"] for i in report["issues"] if i["path"] == "dog/float_nan.tif")
    assert "1 of 1024 values are NaN" in nan_detail
    assert snapshot(root) == before  # nothing read was modified, moved or deleted


def test_labels_manifest_rows_are_checked(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "flat"
    for name in ("a.png", "b.png", "c.png", "d.png"):
        faults.write(root / "pool" / name, faults.png_bytes(len(name) + ord(name[0])))
    faults.write(tmp_path / "secret.png", faults.png_bytes(42))
    manifest = root / "labels.csv"
    manifest.write_text(
        "path,label\n"
        "pool/a.png,cat\n"
        "pool/b.png,dog\n"
        "pool/c.png,cat\n"
        "pool/c.png,dog\n"  # conflicting rows
        "pool/gone.png,cat\n"  # missing file
        "pool/d.png,zebra\n"  # unknown label
        "../secret.png,cat\n"  # escapes the root
        "/etc/passwd,dog\n"
    )
    (tmp_path / "params.yaml").write_text(f"data:\n  classes: [cat, dog]\n  manifest: {manifest}\n")
    before = snapshot(tmp_path)
    status, report = run_audit(capsys, str(root))
    found = {(issue["path"], issue["kind"]) for issue in report["issues"]}
    assert {
        ("pool/c.png", "conflicting_rows"),
        ("pool/gone.png", "missing_file"),
        ("pool/d.png", "unknown_label"),
        ("../secret.png", "path_outside_root"),
        ("/etc/passwd", "path_outside_root"),
    } <= found
    assert status == 1  # path_outside_root fails the default policy
    assert report["files_scanned"] == 2  # only a.png and b.png are trustworthy
    assert report["summary"]["class_counts"] == {"cat": 1, "dog": 1}
    assert snapshot(tmp_path) == before


def test_manifest_must_have_path_and_label_columns(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "images").mkdir()
    bad = tmp_path / "labels.csv"
    bad.write_text("file,class\nx.png,cat\n")
    (tmp_path / "params.yaml").write_text(f"data:\n  manifest: {bad}\n")
    assert main(["audit", str(tmp_path / "images")]) == 2  # a malformed manifest is bad usage
    assert "path,label" in capsys.readouterr().err


@pytest.mark.parametrize("extra", [[], ["--format", "github"]])
def test_corpus_never_crashes_any_output_format(tmp_path, capsys, monkeypatch, extra):
    monkeypatch.chdir(tmp_path)
    build_corpus(tmp_path / "images")
    assert main(["audit", str(tmp_path / "images"), *extra, "--html", str(tmp_path / "r.html")]) == 1
    assert (tmp_path / "r.html").stat().st_size > 1000
