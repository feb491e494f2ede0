"""Object storage for real: a moto S3 server on 127.0.0.1, data and cache read through tensorflow-io, DVC push/pull."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import make_project, run, tiny_params, tool_env, write_params

BUCKET = "trainwell-tests"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def s3_endpoint() -> str:
    """moto's S3 server on a free localhost port, with one bucket; stopped after the module."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.2)
        _client(endpoint).create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=10)


def _client(endpoint: str):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"], region_name=CREDENTIALS["AWS_REGION"])


def s3_env(endpoint: str) -> dict[str, str]:
    """What a user exports for tensorflow-io (S3_*) and DVC/boto (AWS_*) to reach the server."""
    env = tool_env()
    env.update(CREDENTIALS)
    env.update({"S3_ENDPOINT": endpoint, "S3_USE_HTTPS": "0", "S3_VERIFY_SSL": "0", "AWS_ENDPOINT_URL": endpoint})
    return env


def upload(endpoint: str, folder: Path, prefix: str) -> int:
    s3 = _client(endpoint)
    count = 0
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            s3.upload_file(str(path), BUCKET, f"{prefix}/{path.relative_to(folder).as_posix()}")
            count += 1
    return count


def objects(endpoint: str, prefix: str) -> list[str]:
    pages = _client(endpoint).get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def trainwell(command: list[str], cwd: Path, endpoint: str) -> subprocess.CompletedProcess:
    return subprocess.run(["trainwell", *command], cwd=cwd, env=s3_env(endpoint), capture_output=True, text=True,
                          timeout=300)


@pytest.mark.train
def test_s3_data_dir_audits_builds_and_trains(s3_endpoint, demo_set, tmp_path):
    prefix = f"run-{tmp_path.name}"
    assert upload(s3_endpoint, demo_set, f"{prefix}/demo") == 61  # 60 images + the demo marker
    params = tiny_params()
    params["data"]["dir"] = f"s3://{BUCKET}/{prefix}/demo"
    # The decoded cache lives in the bucket too: train streams it shard by shard inside tf.data
    # (tf.io.read_file on s3://), evaluate reads the test split back whole through gfile.
    params["paths"]["cache_dir"] = f"s3://{BUCKET}/{prefix}/cache"
    params["train"]["memory_budget_mb"] = 0
    write_params(tmp_path, params)

    outputs = {}
    for stage in ("audit", "split", "build", "train", "evaluate"):
        result = trainwell([stage], tmp_path, s3_endpoint)
        # tensorflow-io aborts at interpreter exit after S3 use (exit 134); trainwell must not.
        assert result.returncode == 0, f"trainwell {stage} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
        outputs[stage] = result.stdout
    assert "streaming the train split from 2 shards" in outputs["train"]
    report = json.loads((tmp_path / "reports" / "audit" / "audit.json").read_text())
    assert report["root"] == params["data"]["dir"] and report["files_scanned"] == 60
    cache = objects(s3_endpoint, f"{prefix}/cache/")
    assert f"{prefix}/cache/manifest.json" in cache
    assert {f"{prefix}/cache/{split}/paths.json" for split in ("train", "val", "test")} <= set(cache)
    assert (tmp_path / "models" / "model.keras").is_file()
    assert '"test_images": 15' in (tmp_path / "metrics" / "eval.json").read_text()


@pytest.mark.tf_process
def test_s3_audit_names_a_broken_object_and_exits_1(s3_endpoint, demo_set, tmp_path):
    """Also: objects are fetched bounded by audit.max_pixels (one past it is refused by its listed
    size) and checked from a temporary copy in forked processes, so a decoder stuck in C (a real
    scan-bomb JPEG, minutes of libjpeg) is killed on time, as for local files; in threads it ran on."""
    from tests import faults

    prefix = f"broken-{tmp_path.name}"
    local = tmp_path / "demo"
    shutil.copytree(demo_set, local)
    victim = sorted((local / "circle").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[: len(victim.read_bytes()) // 2])
    faults.write(local / "square" / "bomb.jpg", faults.scan_bomb_jpeg(1000, 1000, 400_000))  # within 1M pixels
    faults.write(local / "ring" / "big.jpg", faults.jpeg_bytes() + bytes(18 << 20))  # past 1M pixels' 17 MiB
    upload(s3_endpoint, local, prefix)
    params = tiny_params()
    params["audit"].update(file_timeout_s=1.0, max_pixels=1_000_000)
    write_params(tmp_path, params)
    url = f"s3://{BUCKET}/{prefix}"
    started = time.monotonic()
    result = trainwell(["audit", url, "--format", "github"], tmp_path, s3_endpoint)
    assert time.monotonic() - started < 90  # a fresh process importing TensorFlow; the bomb alone runs minutes
    assert result.returncode == 1, result.stderr
    assert f"::error file={url.replace(':', '%3A')}/square/bomb.jpg,title=decode_timeout::" in result.stdout
    assert f"::error file={url.replace(':', '%3A')}/ring/big.jpg,title=too_large::" in result.stdout
    # Cut mid-header this small JPEG is `corrupt`; cut later it would be `truncated`. Either way
    # the object is named by its full URL.
    # ':' in a workflow command's property is escaped as %3A (GitHub's rules; the runner unescapes it).
    escaped = re.escape(url.replace(":", "%3A"))
    assert re.search(rf"::error file={escaped}/circle/{victim.name},title=(corrupt|truncated)::", result.stdout)


@pytest.mark.tf_process
def test_build_never_writes_over_objects_it_did_not_make(s3_endpoint, demo_set, tmp_path):
    prefix = f"foreign-{tmp_path.name}"
    upload(s3_endpoint, demo_set, f"{prefix}/demo")
    _client(s3_endpoint).put_object(Bucket=BUCKET, Key=f"{prefix}/cache/train/paths.json", Body=b"the user's own file")
    params = tiny_params()
    params["data"]["dir"] = f"s3://{BUCKET}/{prefix}/demo"
    params["paths"]["cache_dir"] = f"s3://{BUCKET}/{prefix}/cache"
    write_params(tmp_path, params)
    for stage in ("audit", "split"):
        assert trainwell([stage], tmp_path, s3_endpoint).returncode == 0
    result = trainwell(["build"], tmp_path, s3_endpoint)
    assert result.returncode == 1
    assert "holds objects that trainwell did not write" in result.stderr and "paths.cache_dir" in result.stderr
    assert objects(s3_endpoint, f"{prefix}/cache/") == [f"{prefix}/cache/train/paths.json"]
    body = _client(s3_endpoint).get_object(Bucket=BUCKET, Key=f"{prefix}/cache/train/paths.json")["Body"].read()
    assert body == b"the user's own file"


@pytest.mark.tf_process
def test_unreachable_bucket_is_a_clear_error(s3_endpoint, tmp_path):
    write_params(tmp_path, tiny_params())
    result = trainwell(["audit", f"s3://no-such-bucket-{tmp_path.name}/data"], tmp_path, s3_endpoint)
    assert result.returncode == 1
    assert "does not exist or holds no objects" in result.stderr and "set data.dir" in result.stderr


@pytest.mark.dvc
def test_dvc_push_then_pull_restores_data_and_cache_bit_for_bit(s3_endpoint, tmp_path):
    project = make_project(tmp_path, tiny_params())
    env = s3_env(s3_endpoint)
    url = f"s3://{BUCKET}/dvc-{tmp_path.name}"
    for command in (["dvc", "remote", "add", "-d", "store", url],
                    ["dvc", "remote", "modify", "store", "endpointurl", s3_endpoint]):
        run(command, project)
    result = subprocess.run(["dvc", "repro", "build"], cwd=project, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr

    tracked = ["data/demo", "data/cache", "data/splits"]

    def digests() -> dict[str, str]:
        return {str(path.relative_to(project)): hashlib.sha256(path.read_bytes()).hexdigest()
                for folder in tracked for path in sorted((project / folder).rglob("*")) if path.is_file()}

    before = digests()
    assert any(name.endswith(".npy") for name in before) and any(name.endswith(".jpg") for name in before)
    pushed = subprocess.run(["dvc", "push", "--with-deps", "build"], cwd=project, env=env, capture_output=True, text=True)
    assert pushed.returncode == 0, pushed.stderr
    assert objects(s3_endpoint, f"dvc-{tmp_path.name}/files/md5/")

    # A fresh machine: no outputs, no local cache.
    for folder in tracked:
        shutil.rmtree(project / folder)
    shutil.rmtree(project / ".dvc" / "cache")
    pulled = subprocess.run(["dvc", "pull", "--with-deps", "build"], cwd=project, env=env, capture_output=True, text=True)
    assert pulled.returncode == 0, pulled.stderr
    assert digests() == before
    status = subprocess.run(["dvc", "status", "--with-deps", "build"], cwd=project, env=env, capture_output=True, text=True)
    # Only the versions stage shows: it is always_changed by design (README, "Use trainwell in your own project").
    assert status.stdout.split() == ["versions:", "always", "changed"], status.stdout


def test_object_store_paths_keep_their_double_slash():
    from trainwell import storage

    assert storage.join("s3://bucket/data", "circle", "a.jpg") == "s3://bucket/data/circle/a.jpg"
    assert storage.join("s3://bucket/data/", "/x") == "s3://bucket/data/x"
    assert storage.join("data", "circle", "a.jpg") == os.path.join("data", "circle", "a.jpg")
    assert storage.is_remote("s3://b/x") and not storage.is_remote("/tmp/x")


@pytest.mark.tf_process
def test_predict_reads_objects_and_prefixes(s3_endpoint, demo_set, tmp_path, predict_project):
    prefix = f"predict-{tmp_path.name}"
    local = tmp_path / "demo"
    shutil.copytree(demo_set, local)
    victim = sorted((local / "ring").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:100])
    upload(s3_endpoint, local, prefix)
    url = f"s3://{BUCKET}/{prefix}"
    result = trainwell(["predict", f"{url}/ring", f"{url}/circle/{sorted((local / 'circle').iterdir())[0].name}",
                        f"{url}/nothing-here", "--format", "json"], predict_project, s3_endpoint)
    assert result.returncode == 1, result.stderr  # one broken object, one missing prefix
    rows = {row["path"]: row for row in json.loads(result.stdout)}
    ring = [path for path in rows if path.startswith(f"{url}/ring/")]
    assert len(ring) == 12
    assert rows[f"{url}/ring/{victim.name}"]["status"] == "refused"
    assert rows[f"{url}/ring/{victim.name}"]["reason"].split(":")[0] in ("corrupt", "truncated")
    assert sum(rows[path]["status"] == "ok" for path in ring) == 11
    assert rows[f"{url}/nothing-here"]["reason"].startswith("unreadable")
    assert [row["status"] for path, row in rows.items() if "/circle/" in path] == ["ok"]

