"""Writing stage outputs: JSON reports and metrics, always into freshly created parent folders."""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO

from trainwell import storage
from trainwell.errors import DataError, TrainwellError, UsageError

# mkstemp creates files readable by their owner only; outputs get the mode open() would give them.
# Read once at import, while the process is still single-threaded (os.umask has no getter).
_UMASK = os.umask(0)
os.umask(_UMASK)


def write_bytes_atomically(path: str | Path, data: bytes) -> None:
    """Write a whole file or nothing: a temporary file in the same folder, renamed into place.

    A local path gets its parent folders created; an object-store URL is written by one PUT,
    which is whole or absent already.
    """
    if storage.is_remote(path):
        storage.write_bytes(path, data)
        return
    write_atomically(path, lambda stream: stream.write(data))


# mkstemp's temporary beside a target: "." + the target's name + "." + 8 random characters + ".tmp".
TEMPORARY_NAME_EXTRA = len("..") + 8 + len(".tmp")


def write_atomically(path: str | Path, write: Callable[[IO[bytes]], object], *,
                     move: Callable[[str, Path], object] = os.replace) -> None:
    """write_bytes_atomically for a local file whose bytes `write` streams into the temporary file
    (np.save of a large array then needs no second copy in memory); `move` puts it in place.

    A failed write or move removes the temporary file, leaves the target as it was, and is an
    error naming the target (write_error).
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise write_error(target, exc) from None
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
        os.chmod(temporary, 0o666 & ~_UMASK)
        move(temporary, target)
    except BaseException as exc:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise write_error(target, exc) from None
        raise


def write_error(path: Path, exc: OSError) -> TrainwellError:
    """A failed write as an error that names the file: a full disk (1), or a path that cannot be a file (2)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DataError(f"no space left on the device writing '{path}'; nothing was left half-written there. "
                         "Free some space and run the stage again")
    return UsageError(f"could not write '{path}': {exc.strerror or exc}; check that the path names a file in a "
                      "folder you can write to")


def write_text_atomically(path: str | Path, text: str) -> None:
    """Text (an HTML page) as UTF-8, whole or not at all; characters a file name's odd bytes left
    unencodable are written as backslash escapes."""
    write_bytes_atomically(path, text.encode("utf-8", "backslashreplace"))


def write_json(path: str | Path, payload: dict | list) -> None:
    """Write pretty JSON (DVC metrics files are read by people too), whole or not at all;
    object-store URLs work too (the build cache's manifest). ASCII-only: a path's odd bytes
    travel as \\u escapes and come back as the same string."""
    write_bytes_atomically(path, (json.dumps(payload, indent=2) + "\n").encode())


def read_rows(path: str | Path, *, columns: list[str]) -> list[dict[str, str]]:
    """Rows of a CSV written by write_rows; a missing file reads as no rows. A file without the
    expected columns is an error naming it (someone else's file, or an older format)."""
    path = Path(path)
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8", errors="surrogateescape") as handle:
        reader = csv.DictReader(handle)
        missing = [name for name in columns if name not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"'{path}' has no column(s) {missing}; it was not written by this trainwell. "
                            "Re-run the stage that writes it (dvc repro)")
        return [{name: row[name] for name in columns} for row in reader]


# File names are data: Linux allows any bytes but '/' and NUL, which Python hands over as
# surrogate escapes. Files that list paths keep those bytes as they were (never a crash, never
# a different name), and use quoting formats (CSV, JSON), never one name per bare line.
PATH_ENCODING = {"encoding": "utf-8", "errors": "surrogateescape"}


def clear_generated_dir(path: str | Path, *, marker: str) -> None:
    """Empty a folder a stage generates, but only if that stage made it (its marker file is there).

    A folder without the marker may hold the user's own files: refuse instead of deleting them.
    """
    path = Path(path)
    if not path.exists():
        return
    clear_generated_dir_check(path, marker=marker)
    shutil.rmtree(path)


def clear_generated_dir_check(path: Path, *, marker: str) -> None:
    """Raise unless `path` is a folder an earlier run of ours made (its marker file is there) or empty."""
    if not path.is_dir() or (any(path.iterdir()) and not (path / marker).exists()):
        raise DataError(
            f"'{path}' exists and was not generated by trainwell (no {marker} inside); refusing to overwrite it. "
            "Move it away or point the path in params.yaml `paths:` somewhere else"
        )


def staging_dir(path: str | Path) -> Path:
    """Where a generated folder is built before it replaces `path` whole: a hidden sibling that only
    trainwell ever writes, so whatever a killed run left there may be deleted by the next."""
    final = Path(path)
    return final.with_name(f".{final.name}.building")


def replace_generated_dir(staging: Path, final: Path, *, marker: str) -> None:
    """Put a fully built `staging` folder at `final` (which only an earlier run of ours may occupy).

    Two renames in one folder: at every moment `final` is either the old complete folder, absent,
    or the new complete one, never half of either.
    """
    old = final.with_name(f".{final.name}.old")
    clear_generated_dir(old, marker=marker)  # left by a run killed between the two renames
    if final.exists():
        clear_generated_dir_check(final, marker=marker)
        os.rename(final, old)
    os.rename(staging, final)
    shutil.rmtree(old, ignore_errors=True)


def write_table(path: str | Path, header: list[str], rows: Iterable[Sequence[str]]) -> None:
    """A CSV with a header row from plain tuples, written whole or not at all (write_rows without
    a dict per row: a million split rows as dicts took 250 MB)."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    write_bytes_atomically(path, buffer.getvalue().encode(**PATH_ENCODING))


def read_table(path: str | Path, columns: list[str]) -> list[tuple[str, ...]]:
    """The named columns of a CSV written by write_table or write_rows, as tuples in that order;
    a file without them is an error naming it (someone else's file, or an older format)."""
    with Path(path).open(newline="", encoding="utf-8", errors="surrogateescape") as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        missing = [name for name in columns if name not in header]
        if missing:
            raise DataError(f"'{path}' has no column(s) {missing}; it was not written by this trainwell. "
                            "Re-run the stage that writes it (dvc repro)")
        positions = [header.index(name) for name in columns]
        if positions == list(range(len(header))):
            return [tuple(row) for row in reader]
        return [tuple(row[position] for position in positions) for row in reader]


def write_rows(path: str | Path, rows: Iterable[dict], *, fields: list[str] | None = None) -> None:
    """A CSV with a header row (`fields`, else the first row's keys), creating parent folders."""
    if fields is None:
        rows = list(rows)
        fields = list(rows[0]) if rows else ["empty"]
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    write_bytes_atomically(path, buffer.getvalue().encode(**PATH_ENCODING))
