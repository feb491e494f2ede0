"""Hard limits per file: a decoder stuck in C code is killed with its process on time, in the audit and in predict."""

from __future__ import annotations

import csv
import io
import os
import time

import pytest
import yaml

from tests import faults
from tests.helpers import CLASSES
from trainwell.cli import main
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
    output = tmp_path / "predictions.csv"
    started = time.monotonic()
    code = main(["predict", str(folder), "--params", str(tmp_path / "params.yaml"), "--model",
                 str(predict_project / "models" / "model.keras"), "--classes", ",".join(CLASSES), "-o", str(output)])
    assert time.monotonic() - started < ON_TIME_S
    assert code == 1
    rows = {row["path"].rsplit("/", 1)[1]: row for row in csv.DictReader(io.StringIO(output.read_text(), newline=""))}
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


# -- one reader, always bounded -----------------------------------------------------------------

# Audits a folder with the cache, makes files sparse giants (same names, new sizes: the cache
# hashes them again), re-audits; prints the peak RSS after each (this process or a checker's).
MEASURED_RE_AUDIT = """
import json, os, resource, sys
from trainwell.audit.dataset import audit_dataset
from trainwell.params import Params
root, cache_file, max_pixels, giants = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
params = Params.model_validate({"audit": {"max_pixels": max_pixels}})

def audited():
    report = audit_dataset(root=root, data=params.data, policy=params.audit, cache_file=cache_file)
    peak_kib = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                   resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return {"kinds": {issue.path: issue.kind for issue in report.issues}, "decoded": report.files_decoded,
            "peak_mib": peak_kib / 1024}

first = audited()
for path, size in giants.items():
    os.truncate(os.path.join(root, path), size)
print(json.dumps([first, audited()]))
"""


def test_sparse_files_of_several_gb_are_refused_unread_with_the_cache_on(demo_copy, workdir):
    """A re-audit with the cache hashes every changed file: sparse files of 3 and 5 GB (and one
    of 16 MiB, just under the bound, which is read) cost no more memory than the first audit;
    a plain read of a 2 GB file took the audit to 2.2 GB. Peak RSS of the auditing process and
    of its checkers, measured by the kernel."""
    import json
    import subprocess
    import sys

    from tests.helpers import tool_env

    sizes = {"circle": 3 << 30, "square": 5 << 30, "ring": 16 << 20}
    giants = {f"{label}/{sorted((demo_copy / label).iterdir())[0].name}": size for label, size in sizes.items()}
    max_pixels = 1_000_000  # storage bound: 17 MiB a file
    result = subprocess.run([sys.executable, "-c", MEASURED_RE_AUDIT, str(demo_copy), str(workdir / "cache.json"),
                             str(max_pixels), json.dumps(giants)], capture_output=True, text=True, env=tool_env(),
                            timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    first, again = json.loads(result.stdout)
    assert again["decoded"] == 3
    too_large = sorted(path.split("/")[0] for path, kind in again["kinds"].items() if kind == "too_large")
    assert too_large == ["circle", "square"], again["kinds"]  # the 16 MiB one is read: a JPEG with zeros after it
    assert again["peak_mib"] < first["peak_mib"] + 64, (first["peak_mib"], again["peak_mib"])


def test_the_cache_never_blocks_on_a_file_swapped_for_a_fifo(tmp_path):
    """Listed as a regular file, a FIFO by the time the cache hashes it: refused, not waited on."""
    import numpy as np

    from trainwell.audit.cache import AuditCache
    from trainwell.audit.checks import new_columns
    from trainwell.params import AuditParams

    image = faults.write(tmp_path / "data" / "a" / "x.jpg", faults.jpeg_bytes())
    cache = AuditCache(tmp_path / "cache.json", AuditParams())
    columns = new_columns(1)
    columns["content"][0] = content_digest(image.read_bytes())
    sizes, mtimes = np.array([image.stat().st_size]), np.array([image.stat().st_mtime_ns])
    cache.save(paths=["a/x.jpg"], sizes=sizes, mtimes=mtimes, columns=columns, findings={}, near_pairs=[],
               unchanged=False)
    image.unlink()
    os.mkfifo(image)
    reloaded = AuditCache(tmp_path / "cache.json", AuditParams())
    rows, unchanged = reloaded.match(root=tmp_path / "data", paths=["a/x.jpg"], sizes=sizes + 1, mtimes=mtimes)
    assert rows.tolist() == [-1] and not unchanged.any()


def _schemes(seed: int = 0) -> list[str]:
    """URLs of schemes trainwell does not read, generated: file:// in its spellings, other
    object stores, web schemes and made-up ones."""
    import random

    rng = random.Random(seed)
    fixed = ["file:///etc", "file://localhost/etc", "FILE:///tmp", "file://", "gs://bucket/x", "hdfs://host/x",
             "http://example.invalid/x", "https://example.invalid/x.jpg", "ftp://x/y", "S3a://bucket/x"]
    made = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(1, 8)))
            + rng.choice(["", "+ssh", ".v2", "-1"]) + "://" + rng.choice(["", "x", "a/b/c.png", "../.."])
            for _ in range(20)]
    return fixed + [url for url in made if not url.startswith("s3://")]


def test_a_url_of_a_scheme_trainwell_does_not_read_is_an_error_not_a_remote_path(workdir, capsys, tmp_path,
                                                                                   predict_project):
    """file:// was taken as remote: threads without timeouts, links followed out of the dataset, a
    link cycle looped on. Only s3:// is remote; every other scheme is exit 2 naming it, from the
    command line (audit, predict) and from params (data.dir, paths.cache_dir)."""
    from trainwell import storage

    assert storage.is_remote("s3://bucket/x") and not storage.is_remote("data/x") and not storage.is_remote("a:b")
    for url in _schemes():
        with pytest.raises(Exception, match="trainwell reads local paths and s3:// URLs only"):
            storage.is_remote(url)
    for url in _schemes()[:6]:
        assert main(["audit", url]) == 2
        assert "s3:// URLs only" in capsys.readouterr().err
        assert main(["predict", url, "--classes", ",".join(CLASSES), "--model",
                     str(predict_project / "models" / "model.keras")]) == 2
        assert "s3:// URLs only" in capsys.readouterr().err
        for section, key in (("data", "dir"), ("paths", "cache_dir")):
            params = yaml.safe_load((workdir / "params.yaml").read_text())
            params[section][key] = url
            (tmp_path / "bad.yaml").write_text(yaml.safe_dump(params))
            assert main(["audit", "--params", str(tmp_path / "bad.yaml")]) == 2
            assert f"'{section}.{key}'" in capsys.readouterr().err

