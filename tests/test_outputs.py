"""Outputs appear whole or not at all: a full disk, a SIGKILL mid-build, and the next run recovers by itself."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import keras
import pytest

from tests.helpers import tool_env
from trainwell.errors import DataError
from trainwell.outputs import write_bytes_atomically
from trainwell.stages import audit, split
from trainwell.training.model_files import save_model_file


@pytest.fixture
def small_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on a 256 KiB tmpfs where this test may mount one (root); elsewhere a folder whose
    writes fail with ENOSPC past 256 KiB, injected where trainwell writes."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)],
                             capture_output=True).returncode == 0
    if not mounted:
        real_fdopen = os.fdopen

        class FillingStream:
            def __init__(self, stream):
                self.stream = stream

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.stream.close()

            def write(self, data: bytes) -> int:
                if len(data) > 256 << 10:
                    raise OSError(errno.ENOSPC, "No space left on device")
                return self.stream.write(data)

        monkeypatch.setattr(os, "fdopen", lambda *args, **kwargs: FillingStream(real_fdopen(*args, **kwargs)))
    try:
        yield folder
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=False)


def test_full_disk_is_a_clear_error_and_leaves_the_old_file_whole(small_disk):
    target = small_disk / "report.json"
    target.write_bytes(b'{"old": true}\n')
    with pytest.raises(DataError, match=r"no space left on the device writing '.*report\.json'"):
        write_bytes_atomically(target, b"x" * (1 << 20))
    assert target.read_bytes() == b'{"old": true}\n'
    assert sorted(path.name for path in small_disk.iterdir()) == ["report.json"]  # no temporary left


def test_full_disk_while_saving_the_model_leaves_no_half_model(small_disk):
    if not os.path.ismount(small_disk):
        pytest.skip("needs a real small filesystem: Keras writes the archive itself")
    inputs = keras.Input((64,))
    model = keras.Model(inputs, keras.layers.Dense(5, activation="softmax")(keras.layers.Dense(2048)(inputs)))
    target = small_disk / "model.keras"  # ~530 KB of weights on a 256 KiB disk
    with pytest.raises(DataError, match="no space left"):
        save_model_file(model, target)
    assert list(small_disk.iterdir()) == []  # neither a half model at the final path nor a temporary


@pytest.mark.slow  # a build killed at many moments: 5.5 s, kept out of the 3-minute fast tier
def test_build_killed_at_any_moment_recovers_on_the_next_run(demo_copy, workdir):
    assert audit.main() == 0 and split.main() == 0
    cache = workdir / "data" / "cache"
    for delay in (0.2, 0.5, 0.8, 1.1, 1.5):
        process = subprocess.Popen(["trainwell", "build"], cwd=workdir, env=tool_env(),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        # Whatever the moment: the cache folder is absent or a whole earlier build, never half of one.
        if cache.exists():
            manifest = json.loads((cache / "manifest.json").read_text())
            assert sum(entry["count"] for entry in manifest["splits"].values()) == 60
    result = subprocess.run(["trainwell", "build"], cwd=workdir, env=tool_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((cache / "manifest.json").read_text())
    assert sum(entry["count"] for entry in manifest["splits"].values()) == 60
    assert not (workdir / "data" / ".cache.building").exists()
