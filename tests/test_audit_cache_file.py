"""The audit cache file is the user's choice (--cache FILE): trainwell overwrites only a cache it wrote itself."""

from __future__ import annotations

import io
import json
import os
import random
from pathlib import Path

import numpy as np
import pytest

from tests import faults
from tests.helpers import snapshot
from trainwell.audit.dataset import audit_dataset
from trainwell.cli import main
from trainwell.errors import UsageError
from trainwell.params import AuditParams, DataParams


def _images(root: Path) -> Path:
    for index in range(4):
        faults.write(root / ("cat" if index % 2 else "dog") / f"{index}.png", faults.png_bytes(index))
    return root


def _audit(root: Path, cache: Path):
    return audit_dataset(root=root, data=DataParams(dir=str(root)), policy=AuditParams(), cache_file=cache)


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _foreign_contents(seed: int) -> list[bytes]:
    """Files a user might have under the name given to --cache: their own JSON (some starting like
    a cache, or a cache's first bytes with one byte changed), text, NumPy arrays and random bytes."""
    rng = random.Random(seed)
    own = json.dumps({"format": 4, "fingerprint": "ab" * 32, "paths": []}).encode()
    contents = [b'{"format": "png", "quality": 90}', b'{"fingerprint": 3}', b"[1, 2, 3]", b"notes\n",
                b' {"format": 4, "fingerprint": "x"}', _npy(np.arange(10.0)), b"\x93NUMPY\x01\x00garbage"]
    for _ in range(12):
        changed = bytearray(own)
        # A byte of the start that marks a cache, other than the format number (another number
        # there is still a trainwell cache, of another format).
        changed[rng.choice([position for position in range(30) if position != own.index(b"4")])] ^= 1 << rng.randrange(7)
        contents.append(bytes(changed))
        contents.append(rng.randbytes(rng.randrange(1, 300)))
    return contents


@pytest.mark.parametrize("index", range(len(_foreign_contents(0))))
def test_a_file_trainwell_did_not_write_is_never_overwritten(tmp_path, index):
    root, cache = _images(tmp_path / "images"), tmp_path / "mine" / "notes.json"
    faults.write(cache, _foreign_contents(0)[index])
    before = snapshot(tmp_path)
    with pytest.raises(UsageError, match=r"would overwrite '.*notes\.json'.*Name a new file with --cache"):
        _audit(root, cache)
    assert snapshot(tmp_path) == before


def test_a_users_array_where_the_sidecar_goes_is_never_overwritten(tmp_path):
    root, cache = _images(tmp_path / "images"), tmp_path / "features"
    faults.write(tmp_path / "features.npy", _npy(np.random.default_rng(0).normal(size=(5, 3))))
    before = snapshot(tmp_path)
    with pytest.raises(UsageError, match=r"features\.npy', which is a NumPy array of other data"):
        _audit(root, cache)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("kind", ["folder", "fifo", "dangling link", "link to a user file"])
def test_a_cache_path_that_is_not_a_regular_file_is_refused(tmp_path, kind):
    root, cache = _images(tmp_path / "images"), tmp_path / "cache.json"
    if kind == "folder":
        cache.mkdir()
    elif kind == "fifo":
        os.mkfifo(cache)  # opening it to read would block for ever
    elif kind == "dangling link":
        cache.symlink_to(tmp_path / "nowhere")
    else:
        faults.write(tmp_path / "essay.txt", b"my essay\n")
        cache.symlink_to(tmp_path / "essay.txt")
    with pytest.raises(UsageError, match="would overwrite"):
        _audit(root, cache)
    assert (tmp_path / "essay.txt").read_bytes() == b"my essay\n" if kind == "link to a user file" else True


@pytest.mark.parametrize("start", [b"", b'{"fingerprint": "0123", "paths": []}',
                                   b'{"format": 3, "fingerprint": "0123", "paths": [], "digest": "x"}'])
def test_an_empty_file_or_an_older_cache_is_rebuilt(tmp_path, start):
    """Empty is what a crash can leave; formats 1 and 3 are trainwell's own, from older versions."""
    root, cache = _images(tmp_path / "images"), tmp_path / "cache.json"
    faults.write(cache, start)
    assert _audit(root, cache).files_decoded == 4
    assert _audit(root, cache).files_decoded == 0  # rewritten as today's cache and trusted


def test_saving_never_touches_a_file_beside_the_cache(tmp_path):
    """The new cache is written under a fresh temporary name before it is moved into place."""
    root, cache = _images(tmp_path / "images"), tmp_path / "cache.json"
    for name in ("cache.json.tmp", "cache.json.npy.tmp.npy", "cache.json.tmp.npy"):
        faults.write(tmp_path / name, b"the user's " + name.encode())
    _audit(root, cache)
    for name in ("cache.json.tmp", "cache.json.npy.tmp.npy", "cache.json.tmp.npy"):
        assert (tmp_path / name).read_bytes() == b"the user's " + name.encode()
    assert sorted(path.name for path in tmp_path.iterdir() if "cache.json" in path.name) == [
        "cache.json", "cache.json.npy", "cache.json.npy.tmp.npy", "cache.json.tmp", "cache.json.tmp.npy"]


def test_the_cache_is_written_with_the_umasks_permissions(tmp_path):
    """As any file the user writes: a cache shared by a team stays readable to the others."""
    root, cache = _images(tmp_path / "images"), tmp_path / "cache.json"
    previous = os.umask(0o022)
    try:
        _audit(root, cache)
    finally:
        os.umask(previous)
    assert oct(cache.stat().st_mode & 0o777) == oct(cache.with_name("cache.json.npy").stat().st_mode & 0o777) == "0o644"


def test_the_cli_refuses_with_a_usage_error_naming_the_file(tmp_path, capsys):
    root, essay = _images(tmp_path / "images"), tmp_path / "essay.txt"
    faults.write(essay, b"my essay\n")
    assert main(["audit", str(root), "--cache", str(essay)]) == 2
    assert "essay.txt" in capsys.readouterr().err
    assert essay.read_bytes() == b"my essay\n"


def test_a_failed_write_leaves_the_old_cache_and_no_temporary_file(tmp_path):
    from trainwell.audit.cache import _replace

    target = faults.write(tmp_path / "cache.json", b'{"format": 4, "fingerprint": "old"}')

    def full_disk(handle) -> None:
        handle.write(b"half of a new cache")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        _replace(target, full_disk)
    assert [path.name for path in tmp_path.iterdir()] == ["cache.json"]
    assert target.read_bytes() == b'{"format": 4, "fingerprint": "old"}'
