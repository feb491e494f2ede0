"""Hostile files: one bad file never stops a stage, memory is bounded from the header, only regular files inside the root are read."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tests import faults, fuzzing
from tests.helpers import tiny_params, tool_env, write_params
from trainwell.cli import main
from trainwell.data.decode import DecodeError, decode_image, resize_image
from trainwell.outputs import read_rows
from trainwell.params import load_params
from trainwell.stages import audit, split

# The audit's memory bound for the fuzz run: a worker's baseline (numpy, OpenCV, Pillow and, once a
# TIFF needs libtiff's codecs, TensorFlow and tensorflow-io running: ~650 MiB, measured in the test)
# plus max_pixels x 16 bytes for a decode, twice, plus slack: about 1 GiB here, where one TIFF of
# 600 float64 samples a pixel used to take the audit to 2.35 GB.
FUZZ_MAX_PIXELS = 4_000_000
BASELINE = """
import io, resource, cv2, numpy, PIL.Image, tifffile, tensorflow_io
buffer = io.BytesIO()
PIL.Image.new("RGB", (8, 8)).save(buffer, format="TIFF", compression="tiff_lzw")
tensorflow_io.experimental.image.decode_tiff(buffer.getvalue()).numpy()  # TensorFlow's runtime started
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""

MEASURED_AUDIT = """
import json, resource, sys
from trainwell.audit.dataset import audit_dataset
from trainwell.params import Params
params = Params.model_validate({"audit": {"max_pixels": int(sys.argv[2])}})
report = audit_dataset(root=sys.argv[1], data=params.data, policy=params.audit)
peak_kib = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
print(json.dumps({"report": report.as_dict(), "peak_mib": peak_kib / 1024}))
"""


@pytest.mark.tf_process
def test_fuzzed_files_never_crash_the_audit_and_what_passes_builds(tmp_path):
    """3,000 seeded mutations of 16 valid files of every format: the audit reports each without a
    traceback, stays under its memory bound, and every file it lets through decodes and resizes
    the way build does (what the audit passes, training can read)."""
    root = tmp_path / "data"
    files = fuzzing.corpus(3000, seed=0)
    for relative, data in files.items():
        faults.write(root / relative, data)
    result = subprocess.run([sys.executable, "-c", MEASURED_AUDIT, str(root), str(FUZZ_MAX_PIXELS)],
                            capture_output=True, text=True, env=tool_env(), timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    measured = json.loads(result.stdout)
    report = measured["report"]
    assert report["files_scanned"] == len(files)
    baseline = float(subprocess.run([sys.executable, "-c", BASELINE], capture_output=True, text=True, env=tool_env(),
                                    check=True).stdout.split()[-1])
    # Slack for allocator and thread-pool growth measured up to ~240 MiB over the baseline in a busy suite.
    assert measured["peak_mib"] < baseline + 2 * (FUZZ_MAX_PIXELS * 16 >> 20) + 256, (measured["peak_mib"], baseline)
    blocked = {issue["path"] for issue in report["issues"] if issue["severity"] == "error"}
    for relative in sorted(set(files) - blocked):
        decoded = decode_image(files[relative], suffix=Path(relative).suffix, max_pixels=FUZZ_MAX_PIXELS)
        assert resize_image(decoded.image, size=32).shape == (32, 32, 3), relative
    assert len(files) - len(blocked) > 300 and len(blocked) > 300  # the mutations made both kinds


@pytest.mark.parametrize("array", [
    np.array(["2020-01-01"] * 12, dtype="datetime64[D]").reshape(2, 2, 3),
    np.array([["a", "b"], ["c", "d"]]),
    np.zeros((2, 2), dtype=[("x", "u1"), ("y", "f4")]),
    np.zeros((2, 2, 3), dtype="V4"),
    np.zeros((2, 2, 3), dtype=np.complex64),
    np.zeros((0, 5)),
    np.zeros((5, 0, 3)),
], ids=["datetime64", "unicode", "structured", "void", "complex", "0x5", "5x0x3"])
def test_npy_that_is_not_pixels_is_a_finding(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    with pytest.raises(DecodeError) as raised:
        decode_image(buffer.getvalue(), suffix=".npy")
    assert raised.value.kind == "not_an_image"


@pytest.mark.slow  # compressing 733 MiB of zeros takes 5-6 s: kept out of the 3-minute fast tier
def test_memory_is_bounded_from_the_header_not_the_pixel_count():
    # 400x400 pixels pass max_pixels, but 600 float64 samples a pixel would take 733 MiB.
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.zeros((400, 400, 600), dtype=np.float64), planarconfig="contig",
                     photometric="minisblack", compression="zlib")
    assert len(buffer.getvalue()) < 2_000_000
    with pytest.raises(DecodeError) as raised:
        decode_image(buffer.getvalue(), suffix=".tif", max_pixels=40_000_000)
    assert raised.value.kind == "too_large" and "MiB" in raised.value.detail
    # A .npy whose header promises 10^10 float64 values in a few bytes: refused before numpy allocates.
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (100_000, 100_000)})
    with pytest.raises(DecodeError) as raised:
        decode_image(b"\x93NUMPY\x01\x00" + header.getvalue()[8:], suffix=".npy")
    assert raised.value.kind == "too_large"


def test_links_fifos_and_loops_are_findings_and_never_block(demo_copy, workdir, tmp_path):
    outside = tmp_path / "outside"
    faults.write(outside / "secret.jpg", faults.jpeg_bytes(seed=3))
    os.mkfifo(demo_copy / "ring" / "pipe.jpg")
    os.mkfifo(demo_copy / "fifo-target")
    (demo_copy / "ring" / "to-fifo.jpg").symlink_to(demo_copy / "fifo-target")
    (demo_copy / "ring" / "loop.jpg").symlink_to(demo_copy / "ring" / "loop.jpg")
    (demo_copy / "ring" / "out.jpg").symlink_to(outside / "secret.jpg")
    (demo_copy / "square" / "dir-out").symlink_to(outside)
    # In a subprocess with a deadline: a FIFO that is opened blocks for ever.
    result = subprocess.run([sys.executable, "-m", "trainwell", "audit", str(demo_copy), "--format", "json"],
                            cwd=workdir, env=tool_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    kinds = {issue["path"]: issue["kind"] for issue in json.loads(result.stdout)["issues"]}
    assert kinds["ring/pipe.jpg"] == "special_file"
    assert kinds["ring/to-fifo.jpg"] == "special_file"
    assert kinds["ring/loop.jpg"] == "unreadable"
    assert kinds["ring/out.jpg"] == "symlink_outside"


def test_manifest_rows_through_a_linked_folder_never_leave_the_root(demo_copy, workdir, tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere" / "s"
    faults.write(elsewhere / "img000.png", faults.png_bytes(seed=5))
    (demo_copy / "lnk").symlink_to(elsewhere.parent)
    rows = [f"{path.relative_to(demo_copy).as_posix()},{path.parent.name}"
            for path in sorted(demo_copy.glob("*/*.jpg"))] + ["lnk/s/img000.png,circle"]
    (demo_copy / "labels.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    params = tiny_params()
    params["data"]["manifest"] = str(demo_copy / "labels.csv")
    write_params(workdir, params)
    assert audit.main() == 1  # symlink_outside fails the default policy
    assert {row["path"] for row in read_rows(load_params().paths.quarantine, columns=["path"])} == set()
    report = json.loads(Path(load_params().paths.audit_report).read_text())
    assert {"path": "lnk/s/img000.png", "kind": "symlink_outside"} in [
        {key: issue[key] for key in ("path", "kind")} for issue in report["issues"]]
    assert split.main() == 0
    splits = "".join(Path(load_params().paths.splits_dir, f"{name}.csv").read_text() for name in ("train", "val", "test"))
    assert "img000" not in splits


@pytest.mark.parametrize("content, expected", [
    (b"path,label\ncircle/a.jpg,circle,extra\n", "line 2: 3 columns"),
    (b"path,label\ncircle/a.jpg\n", "line 2: 1 columns"),
    (b"path,label\ncircle/\xff\xfe.jpg,circle\n", "not UTF-8"),
    (b"name,class\nx,y\n", "header row with columns path,label"),
])
def test_malformed_manifest_is_a_usage_error_naming_the_line(demo_copy, workdir, capsys, content, expected):
    manifest = demo_copy / "labels.csv"
    manifest.write_bytes(content)
    params = tiny_params()
    params["data"]["manifest"] = str(manifest)
    write_params(workdir, params)
    assert main(["audit"]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


@pytest.mark.parametrize("content", [b'{"fingerprint": "5", "paths": {}}', b'{"format": 4, "fingerprint": "x", "paths": 3}',
                                     b'{"format": 4, "fingerprint": "ab', b'{"format": 99, "fingerprint": "x\xff\x00'])
def test_a_damaged_audit_cache_is_a_miss_with_one_warning(demo_copy, workdir, capsys, content):
    cache = workdir / "cache.json"
    cache.write_bytes(content)
    assert main(["audit", str(demo_copy), "--cache", str(cache), "--format", "json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["files_scanned"] == 60
    assert captured.err.count("ignoring the audit cache") <= 1
    assert json.loads(cache.read_text())["paths"]  # rebuilt


@pytest.mark.parametrize("content", [b"[1, 2, 3]", b'{"fingerprint": 5, "paths": {}}', b"\xff\x00", b'"text"'])
def test_a_file_that_is_not_an_audit_cache_is_refused_not_rebuilt(demo_copy, workdir, capsys, content):
    cache = workdir / "cache.json"
    cache.write_bytes(content)
    assert main(["audit", str(demo_copy), "--cache", str(cache), "--format", "json"]) == 2
    assert "is not a trainwell audit cache" in capsys.readouterr().err
    assert cache.read_bytes() == content


@pytest.mark.parametrize("layout, expected", [
    ({"cat": 30}, "at least 2 classes"),
    ({"cat": 3, "dog": 3}, "the val split is empty; images per class (train/val/test): cat 3/0/0, dog 3/0/0"),
    ({"cat": 30, "dog": 30, "fox": 0}, "classes ['fox'] have no training images"),
])
def test_a_dataset_too_small_to_train_is_refused_at_split_with_counts(tmp_path, monkeypatch, capsys, layout, expected):
    monkeypatch.chdir(tmp_path)
    for position, (label, count) in enumerate(layout.items()):
        for index in range(count):
            faults.write(tmp_path / "data" / "images" / label / f"{index}.jpg",
                         faults.jpeg_bytes(seed=1000 * position + index))
    params = tiny_params()
    params["data"]["dir"] = "data/images"
    params["data"]["classes"] = list(layout)  # a configured class may have no images at all
    params["audit"]["max_class_imbalance"] = 100.0
    params["split"].update(val_fraction=0.15, test_fraction=0.15)  # the shipped fractions
    write_params(tmp_path, params)
    assert main(["audit"]) == 0
    assert main(["split"]) == 1
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


def _fragile_decoder(monkeypatch) -> None:
    """checks.decode_image, except that bytes ending in CRASH kill the process (SIGSEGV, as a C
    library bug would) and bytes ending in HANG never return. Forked checkers inherit it."""
    import signal
    import time

    from trainwell.audit import checks

    real_decode = checks.decode_image

    def fragile_decode(data: bytes, **options):
        if data.endswith(b"CRASH"):
            os.kill(os.getpid(), signal.SIGSEGV)
        if data.endswith(b"HANG"):
            time.sleep(600)
        return real_decode(data, **options)

    monkeypatch.setattr(checks, "decode_image", fragile_decode)


def _plant_crasher_and_hanger(root: Path) -> None:
    faults.write(root / "circle" / "crasher.jpg", faults.jpeg_bytes(seed=1) + b"CRASH")
    faults.write(root / "square" / "hanger.jpg", faults.jpeg_bytes(seed=2) + b"HANG")


@pytest.mark.parametrize("extra", [0, 120], ids=["few files", "many files"])
def test_a_decoder_that_crashes_or_hangs_is_isolated(demo_copy, workdir, monkeypatch, extra):
    """A decoder killing its process or hanging is one finding; the audit goes on. The crash is
    real; which bytes trigger it is arranged by the test."""
    import time

    from trainwell.audit.dataset import audit_dataset

    _fragile_decoder(monkeypatch)
    for index in range(extra):
        faults.write(demo_copy / "ring" / f"more{index}.jpg", faults.jpeg_bytes(seed=500 + index))
    _plant_crasher_and_hanger(demo_copy)
    params = load_params()
    started = time.monotonic()
    report = audit_dataset(root=demo_copy, data=params.data,
                           policy=params.audit.model_copy(update={"file_timeout_s": 1.0}))
    assert time.monotonic() - started < 60
    kinds = {issue.path: issue.kind for issue in report.issues if issue.severity == "error"}
    assert kinds == {"circle/crasher.jpg": "decoder_crash", "square/hanger.jpg": "decode_timeout"}
    assert report.files_scanned == 62 + extra
    assert set(report.quarantined) == {"circle/crasher.jpg", "square/hanger.jpg"}


def _zombie_children() -> set[str]:
    """This process's children that have exited and not been reaped (state Z in /proc)."""
    children: list[str] = []
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/children") as listed:
            children += listed.read().split()
    zombies = set()
    for pid in children:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                    zombies.add(pid)
        except FileNotFoundError:
            continue
    return zombies


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_a_re_audit_isolates_a_crash_and_reaps_every_checker(demo_copy, workdir, monkeypatch, workers):
    """A re-audit with a cache checks its few changed files in bare forked children, reaped only
    after the dataset-level checks (workers.reap_all): a crash or hang there is the same finding,
    the other changed files keep their results, and no child is left behind."""
    from trainwell.audit.dataset import audit_dataset

    params = load_params()
    policy = params.audit.model_copy(update={"file_timeout_s": 1.0, "workers": workers})
    cache_file = workdir / "cache" / "audit.json"
    zombies_before = _zombie_children()  # other tests' servers and browsers are children too
    first = audit_dataset(root=demo_copy, data=params.data, policy=policy, cache_file=cache_file)
    _fragile_decoder(monkeypatch)
    _plant_crasher_and_hanger(demo_copy)
    faults.write(demo_copy / "ring" / "cut.jpg", faults.truncated_jpeg(seed=3))
    report = audit_dataset(root=demo_copy, data=params.data, policy=policy, cache_file=cache_file)
    assert report.files_decoded == 3
    kinds = {issue.path: issue.kind for issue in report.issues if issue.severity == "error"}
    assert kinds == {"circle/crasher.jpg": "decoder_crash", "square/hanger.jpg": "decode_timeout",
                     "ring/cut.jpg": "truncated"} | {issue.path: issue.kind for issue in first.issues
                                                     if issue.severity == "error"}
    assert _zombie_children() <= zombies_before  # every child forked for the audit has been reaped
    # Nothing changed since, but a crash or a timeout says nothing certain about the bytes (the
    # machine may have been short of memory or busy): both are checked again, with the same result.
    again = audit_dataset(root=demo_copy, data=params.data, policy=policy, cache_file=cache_file)
    assert again.files_decoded == 2 and again.issues == report.issues
    # With them gone, nothing is decoded and no child is forked.
    (demo_copy / "square" / "hanger.jpg").unlink()
    (demo_copy / "circle" / "crasher.jpg").unlink()
    last = audit_dataset(root=demo_copy, data=params.data, policy=policy, cache_file=cache_file)
    assert last.files_decoded == 0 and len(last.issues) == len(report.issues) - 2
    assert _zombie_children() <= zombies_before
