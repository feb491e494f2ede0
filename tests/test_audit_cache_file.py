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
from trainwell.errors import DataError, UsageError
from trainwell.outputs import write_atomically
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
    umask = os.umask(0o022)  # os.umask has no getter: set, then put back
    os.umask(umask)
    _audit(root, cache)
    expected = oct(0o666 & ~umask)
    assert oct(cache.stat().st_mode & 0o777) == oct(cache.with_name("cache.json.npy").stat().st_mode & 0o777) == expected


def test_the_cli_refuses_with_a_usage_error_naming_the_file(tmp_path, capsys):
    root, essay = _images(tmp_path / "images"), tmp_path / "essay.txt"
    faults.write(essay, b"my essay\n")
    assert main(["audit", str(root), "--cache", str(essay)]) == 2
    assert "essay.txt" in capsys.readouterr().err
    assert essay.read_bytes() == b"my essay\n"


def test_a_failed_write_leaves_the_old_cache_and_no_temporary_file(tmp_path):
    """The cache is written as every output is (outputs.write_atomically), with its own move."""
    from trainwell.audit.cache import _move

    target = faults.write(tmp_path / "cache.json", b'{"format": 4, "fingerprint": "old"}')

    def full_disk(handle) -> None:
        handle.write(b"half of a new cache")
        raise OSError(28, "No space left on device")

    with pytest.raises(DataError, match=r"no space left on the device writing '.*cache\.json'"):
        write_atomically(target, full_disk, move=_move)
    assert [path.name for path in tmp_path.iterdir()] == ["cache.json"]
    assert target.read_bytes() == b'{"format": 4, "fingerprint": "old"}'


@pytest.mark.parametrize("given", [".", "/", "..", "parent is a file/cache.json", "dangling/deeper/cache.json",
                                   "c" * 238, "a\0b.json"])
def test_a_cache_name_that_could_never_be_saved_is_refused_before_the_audit(tmp_path, monkeypatch, given):
    """These crashed (exit 3) with the whole audit done: '.' and '/' have no name to add .npy to, a
    dangling link cannot be made a folder, and a 238-byte name leaves no room for the sidecar's
    temporary's 18 more bytes. A NUL can come from params.yaml ("\\0")."""
    root = _images(tmp_path / "images")
    faults.write(tmp_path / "parent is a file", b"notes\n")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(UsageError, match="audit cache"):
        _audit(root, Path(given) if "\0" not in given else given)
    assert snapshot(tmp_path) == before


def test_the_longest_name_that_fits_is_saved_and_trusted(tmp_path):
    root, cache = _images(tmp_path / "images"), tmp_path / ("c" * 237)
    assert _audit(root, cache).files_decoded == 4
    assert _audit(root, cache).files_decoded == 0
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(["images", cache.name, cache.name + ".npy"])


@pytest.mark.parametrize("inside", ["cache.json", "cat/cache.json", "cat/new.png", "audit/cache.json"])
def test_a_cache_inside_the_dataset_folder_is_refused(tmp_path, inside):
    """It would be written among the files it audits: the next audit found the cache itself as a
    stray file, a class or an image that does not decode (policy violated, exit 1)."""
    root = _images(tmp_path / "images")
    before = snapshot(tmp_path)
    with pytest.raises(UsageError, match="inside the dataset folder"):
        _audit(root, root / inside)
    (tmp_path / "link").symlink_to(root)  # the same folder by another name
    with pytest.raises(UsageError, match="inside the dataset folder"):
        _audit(root, tmp_path / "link" / inside)
    (tmp_path / "link").unlink()
    assert snapshot(tmp_path) == before


def test_paths_with_any_characters_make_a_cache_the_next_run_trusts(tmp_path):
    """Undecodable bytes (surrogates), a newline and an encoded surrogate half, in the cache's name
    and in the dataset's file names: what this code wrote must be accepted next time."""
    root = _images(tmp_path / "images")
    odd = os.fsdecode(b"odd \xff\xfe\n\xed\xa0\x80 \xe2\x80\xae")
    faults.write(root / "cat" / f"{odd}.png", faults.png_bytes(7))
    cache = tmp_path / f"{odd}.json"
    assert _audit(root, cache).files_decoded == 5
    assert _audit(root, cache).files_decoded == 0


def test_a_sidecar_claiming_a_huge_header_is_refused_without_reading_it(tmp_path):
    """numpy reads every claimed header byte before judging it: 4 GiB from a sparse file."""
    root, cache = _images(tmp_path / "images"), tmp_path / "cache.json"
    sidecar = faults.write(tmp_path / "cache.json.npy", b"\x93NUMPY\x02\x00\xff\xff\xff\xff{'descr': [('size', '<i8')")
    os.truncate(sidecar, 5 << 30)
    with pytest.raises(UsageError, match=r"cache\.json\.npy', which is a NumPy array of other data"):
        _audit(root, cache)
    assert sidecar.stat().st_size == 5 << 30


def test_a_file_that_appears_while_the_audit_runs_is_not_overwritten(tmp_path):
    """Checked again just before saving: a user's file written there meanwhile survives."""
    from trainwell.audit.cache import AuditCache

    cache_file = tmp_path / "cache.json"
    cache = AuditCache(cache_file, AuditParams())
    faults.write(cache_file, b"written meanwhile\n")
    empty = np.zeros(0, dtype=np.int64)
    with pytest.raises(UsageError, match="would overwrite"):
        cache.save(paths=[], sizes=empty, mtimes=empty, columns={}, findings={}, near_pairs=[], unchanged=False)
    assert cache_file.read_bytes() == b"written meanwhile\n"
    assert [path.name for path in tmp_path.iterdir()] == ["cache.json"]


def test_a_failed_move_leaves_no_temporary_file(tmp_path):
    """A folder made at the target's name meanwhile (a racing command) fails the move."""
    from trainwell.audit.cache import _move

    target = tmp_path / "cache.json"

    def race(handle) -> None:  # after the writer's checks, while it writes the temporary file
        target.mkdir()
        handle.write(b"{}")

    with pytest.raises(UsageError, match=r"could not write '.*cache\.json'"):
        write_atomically(target, race, move=_move)
    assert [path.name for path in tmp_path.iterdir()] == ["cache.json"]


def _damaged_sidecars(seed: int, count: int) -> list[bytes]:
    """A real sidecar with one to three bytes of its header changed, some also cut short."""
    from trainwell.audit.cache import record_type

    rng = random.Random(seed)
    real = _npy(np.zeros(3, dtype=record_type()))
    damaged = []
    for _ in range(count):
        changed = bytearray(real)
        for _ in range(rng.randrange(1, 4)):
            changed[rng.randrange(140)] = rng.randrange(256)
        damaged.append(bytes(changed[:rng.randrange(140)] if rng.random() < 0.3 else changed))
    return damaged


def test_a_damaged_sidecar_header_is_judged_never_a_crash(tmp_path):
    """numpy parses an .npy header as Python source: a changed quote raised tokenize.TokenError
    (a fourth of 3,000 such files: an internal error, exit 3)."""
    from trainwell.audit.cache import _foreign

    sidecar = tmp_path / "cache.json.npy"
    for content in _damaged_sidecars(0, 300):
        sidecar.write_bytes(content)
        reason = _foreign(sidecar, sidecar=True)
        assert reason is None or isinstance(reason, str)


def test_the_cli_refuses_a_sidecar_whose_header_does_not_tokenize(tmp_path, capsys):
    root, cache = _images(tmp_path / "images"), tmp_path / "cache.json"
    header = b"{'descr': [('size', \"<i8'), ('mtime_ns', '<i8')], 'fortran_order': False, 'shape': (3,), }"
    faults.write(tmp_path / "cache.json.npy", b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header)
    before = snapshot(tmp_path)
    assert main(["audit", str(root), "--cache", str(cache)]) == 2
    assert "cache.json.npy', which is a NumPy file with a header trainwell cannot read" in capsys.readouterr().err
    assert snapshot(tmp_path) == before


def test_with_a_manifest_a_cache_under_the_root_is_allowed(tmp_path):
    """Only the manifest's rows are read, so `data.dir: .` with the cache in data/audit/ is fine."""
    root = _images(tmp_path / "project")
    manifest = root / "labels.csv"
    manifest.write_text("path,label\n" + "".join(f"{path.relative_to(root)},{path.parent.name}\n"
                                                for path in sorted(root.glob("*/*.png"))))
    data = DataParams(dir=str(root), manifest=str(manifest))
    cache = root / "data" / "audit" / "cache.json"
    first = audit_dataset(root=root, data=data, policy=AuditParams(), cache_file=cache)
    again = audit_dataset(root=root, data=data, policy=AuditParams(), cache_file=cache)
    assert (first.files_scanned, first.files_decoded, again.files_decoded) == (4, 4, 0)
    assert again.as_dict() == first.as_dict()


@pytest.mark.parametrize("shape", [(-1, 1), (1, -1)])
def test_records_of_another_shape_under_a_valid_digest_are_a_rebuild(tmp_path, shape, capsys):
    """The sidecar's records saved as a 2-D array and the digest recomputed (what a hand-made or
    buggy writer could leave): a warning and a fresh audit, never an IndexError."""
    from trainwell.audit import cache as cache_module

    root, cache = _images(tmp_path / "data"), tmp_path / "audit-cache.json"
    expected = _audit(root, cache).as_dict()
    sidecar = Path(f"{cache}.npy")
    document = json.loads(cache.read_text())
    document.pop("digest")
    records = np.load(sidecar).reshape(*shape)
    np.save(sidecar, records, allow_pickle=False)
    body = json.dumps(document)[:-1]
    cache.write_text(f"{body}{cache_module._DIGEST_KEY}{cache_module._digest(body, records)}\"}}")
    assert _audit(root, cache).as_dict() == expected
    assert "ignoring the audit cache" in capsys.readouterr().err
