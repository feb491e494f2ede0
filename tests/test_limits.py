"""Hard limits per file: a decoder stuck in C code is killed with its process on time, in the audit and in predict."""

from __future__ import annotations

import csv
import io
import os
import time

import pytest
import yaml

from tests import faults
from tests.helpers import CLASSES, run
from trainwell.params import load_params
from trainwell.storage import content_digest

# The scan bomb keeps a decoder in C for minutes (about 2 here); the limit in these tests is 1 s.
TIMEOUT_S = 1.0
# What "on time" allows a whole audit of ~60-130 tiny files plus one bomb on 2 busy cores: the
# bomb's own second (and the watchdog's grace), a pool restart and the other files' checks.
ON_TIME_S = 30.0


def _live_children() -> set[str]:
    """Pids of this process's children that still exist (running or not yet reaped)."""
    children: set[str] = set()
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/children") as listed:
            children.update(listed.read().split())
    return children


@pytest.fixture(scope="module")
def scan_bomb() -> bytes:
    return faults.scan_bomb_jpeg()


@pytest.mark.timeout(300)  # the bomb left alone runs for minutes
@pytest.mark.parametrize("extra", [0, 100], ids=["bare children", "process pool"])
def test_a_decoder_stuck_in_c_is_killed_on_time_and_the_rest_is_audited(demo_copy, workdir, scan_bomb, extra):
    """A real scan-bomb JPEG (no test hook: libjpeg itself never returns for minutes) is killed
    with its checker process soon after audit.file_timeout_s and reported decode_timeout; every
    other file is still checked, and no checker process is left running."""
    from trainwell.audit.dataset import audit_dataset

    for index in range(extra):
        faults.write(demo_copy / "ring" / f"more{index}.jpg", faults.jpeg_bytes(seed=500 + index))
    faults.write(demo_copy / "square" / "bomb.jpg", scan_bomb)
    params = load_params()
    before = _live_children()
    started = time.monotonic()
    report = audit_dataset(root=demo_copy, data=params.data,
                           policy=params.audit.model_copy(update={"file_timeout_s": TIMEOUT_S}))
    elapsed = time.monotonic() - started
    assert elapsed < ON_TIME_S
    errors = {issue.path: issue for issue in report.issues if issue.severity == "error"}
    assert list(errors) == ["square/bomb.jpg"]
    assert errors["square/bomb.jpg"].kind == "decode_timeout"
    assert "process was killed" in errors["square/bomb.jpg"].detail
    assert report.files_scanned == 61 + extra and report.quarantined == ["square/bomb.jpg"]
    assert _live_children() <= before


def test_predict_kills_a_stuck_decoder_on_time_and_classifies_the_rest(predict_project, tmp_path, scan_bomb):
    """`trainwell predict` checks each input as the audit does: the scan bomb is refused as
    decode_timeout soon after audit.file_timeout_s, the other inputs are classified."""
    params = yaml.safe_load((predict_project / "params.yaml").read_text())
    params["audit"]["file_timeout_s"] = TIMEOUT_S
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    folder = tmp_path / "inputs"
    faults.write(folder / "bomb.jpg", scan_bomb)
    for index in range(3):
        faults.write(folder / f"photo{index}.png", faults.png_bytes(index))
    started = time.monotonic()
    result = run(["trainwell", "predict", str(folder), "--params", str(tmp_path / "params.yaml"), "--model",
                  str(predict_project / "models" / "model.keras"), "--classes", ",".join(CLASSES)],
                 predict_project, check=False)
    assert time.monotonic() - started < ON_TIME_S + 30  # a fresh process: TensorFlow's import and the model's load
    assert result.returncode == 1, result.stderr
    rows = {row["path"].rsplit("/", 1)[1]: row for row in csv.DictReader(io.StringIO(result.stdout, newline=""))}
    assert rows["bomb.jpg"]["status"] == "refused" and rows["bomb.jpg"]["reason"].startswith("decode_timeout:")
    assert all(rows[f"photo{index}.png"]["status"] == "ok" for index in range(3))


def test_predict_decodes_only_the_bytes_its_check_timed(tmp_path, scan_bomb):
    """Predict decodes a second time, in its own process and with no one to kill a stuck decoder:
    a file whose bytes are not the ones checked (a scan bomb swapped in after the check) is
    refused unread, whatever it holds; unchanged files decode as before."""
    from trainwell.training.predict import prediction_dataset

    files = [faults.write(tmp_path / f"photo{index}.png", faults.png_bytes(index)) for index in range(4)]
    digests = [content_digest(path.read_bytes()) for path in files]
    files[1].write_bytes(scan_bomb)  # swapped after its check
    files[2].write_bytes(faults.png_bytes(7))  # another image: still not what was checked
    failures: dict[int, str] = {}
    started = time.monotonic()
    dataset = prediction_dataset(locations=[str(path) for path in files], image_size=16, max_pixels=40_000_000,
                                 batch_size=4, failures=failures, digests=digests)
    assert sum(len(batch) for batch in dataset) == 4
    assert time.monotonic() - started < ON_TIME_S
    assert sorted(failures) == [1, 2] and all(reason.startswith("changed:") for reason in failures.values())
