"""Local paths and s3:// URLs behind one small API, and the one bounded, regular-file-only reader of a user's files.

Remote URLs go through tf.io.gfile with tensorflow-io's S3 filesystem; the endpoint and
credentials come from the usual variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_REGION, and S3_ENDPOINT / S3_USE_HTTPS / S3_VERIFY_SSL for S3-compatible servers).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from trainwell.errors import DataError, UsageError

if TYPE_CHECKING:
    import numpy as np

_remote_used = False
# The URL schemes trainwell reads (tested against a real S3-compatible server). Any other
# `scheme://` is refused, not taken as remote: file:// through gfile followed links out of the
# dataset, looped on a link cycle and ran the checks in threads no timeout could stop.
REMOTE_SCHEMES = ("s3://",)
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def is_remote(path: str | Path) -> bool:
    """True for an s3:// URL, False for a local path; a URL of any other scheme is a UsageError."""
    text = str(path)
    if text.startswith(REMOTE_SCHEMES):
        return True
    problem = url_problem(text)
    if problem:
        raise UsageError(problem)
    return False


def url_problem(location: str) -> str | None:
    """Why a URL that is not s3:// is refused, and what to give instead; None for an s3:// URL or a local path."""
    if location.startswith(REMOTE_SCHEMES) or not _SCHEME.match(location):
        return None
    scheme = location.split("://", 1)[0]
    local = f" (for a local file, the path itself: '{location[len('file://'):]}')" if scheme.lower() == "file" else ""
    return (f"'{location}' is a {scheme}:// URL; trainwell reads local paths and {', '.join(REMOTE_SCHEMES)} URLs "
            f"only{local}")


def join(root: str | Path, *parts: str) -> str:
    """root/part/...: URLs keep their '//' (pathlib would fold s3://bucket into s3:/bucket)."""
    if is_remote(root):
        return "/".join([str(root).rstrip("/"), *(part.strip("/") for part in parts)])
    return str(Path(root, *parts))


def _gfile():
    """tf.io.gfile with tensorflow-io's filesystems (s3://) registered."""
    global _remote_used
    import tensorflow as tf
    import tensorflow_io  # noqa: F401  (registers the s3:// filesystem)

    _remote_used = True
    return tf.io.gfile


def _remote_error(path: str, exc: Exception) -> DataError:
    return DataError(
        f"cannot reach '{path}': {exc}. Check the URL and the AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_REGION "
        "variables (and S3_ENDPOINT, S3_USE_HTTPS=0 for a local S3-compatible server)"
    )


def read_bytes(path: str | Path) -> bytes:
    """A file's bytes, whole: for trainwell's own outputs (the build cache). A user's files go
    through read_regular_file. Local errors stay OSError, so callers can name the file and go on."""
    if not is_remote(path):
        with open(path, "rb") as handle:
            return handle.read()
    gfile = _gfile()
    try:
        with gfile.GFile(str(path), "rb") as handle:
            return handle.read()
    except Exception as exc:  # tf.errors.* for remote files; the audit reports it like an I/O error
        raise OSError(f"{exc.__class__.__name__}: {getattr(exc, 'message', exc)}") from None


# What FileTooLarge says a limit is, unless the caller says otherwise.
IMAGE_LIMIT = "an image within audit.max_pixels can take"


class FileTooLarge(OSError):
    """A file bigger than its reader allows (for an image: than the pixel limit allows): refused before reading (`too_large`)."""


def _open_checked(path: str | Path, *, max_bytes: int, limit: str) -> tuple[int, int]:
    """(descriptor, size) of a local regular file of at most max_bytes, opened so it cannot block.

    Checked on the open descriptor (not the name), so a file swapped for a FIFO or a device after
    an earlier check is refused instead of hanging, and a sparse many-GB file is refused before a
    byte is read. Raises OSError with the reason (FileTooLarge past max_bytes).
    """
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise OSError(f"'{path}' is {_file_type(status.st_mode)}, not a regular file; not read")
        if status.st_size > max_bytes:
            raise FileTooLarge(f"{status.st_size} bytes, more than the {max_bytes} {limit}; not read")
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor, status.st_size


def _file_type(mode: int) -> str:
    """What a file that is not a regular file is, in words."""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a special file"


def read_regular_file(path: str | Path, *, max_bytes: int, limit: str = IMAGE_LIMIT) -> bytes:
    """A user's file's bytes: a local regular file of at most max_bytes (see _open_checked), or an
    s3:// object of at most max_bytes. `limit` says in FileTooLarge's message what the bound is."""
    if is_remote(path):
        return _read_remote(str(path), max_bytes=max_bytes, limit=limit)
    descriptor, size = _open_checked(path, max_bytes=max_bytes, limit=limit)
    with os.fdopen(descriptor, "rb", buffering=0, closefd=True) as handle:
        # One read sized by fstat (unbuffered: no copy through a buffer object); more only if the
        # file grew since, and never past max_bytes.
        data = handle.read(size + 1) or b""
        while len(data) > size and len(data) <= max_bytes:
            more = handle.read(min(1 << 20, max_bytes + 1 - len(data)))
            if not more:
                break
            data += more
    if len(data) > max_bytes:
        raise FileTooLarge(f"more than {max_bytes} bytes ({limit}); not read")
    return data


def _read_remote(url: str, *, max_bytes: int, limit: str) -> bytes:
    """An object's bytes, refused by its listed size past max_bytes and never read past it."""
    gfile = _gfile()
    try:
        size = gfile.stat(url).length
        if size > max_bytes:
            raise FileTooLarge(f"{size} bytes, more than the {max_bytes} {limit}; not read")
        with gfile.GFile(url, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError:
        raise
    except Exception as exc:  # tf.errors.* for remote files; the audit reports it like an I/O error
        raise OSError(f"{exc.__class__.__name__}: {getattr(exc, 'message', exc)}") from None
    if len(data) > max_bytes:
        raise FileTooLarge(f"more than {max_bytes} bytes ({limit}); not read")
    return data


class _Bounded(io.RawIOBase):
    """A raw reader over an open descriptor that raises FileTooLarge instead of reading past max_bytes."""

    def __init__(self, descriptor: int, *, max_bytes: int, limit: str) -> None:
        self._file = io.FileIO(descriptor, "rb", closefd=True)
        self._left, self._max_bytes, self._limit = max_bytes, max_bytes, limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer)
        count = self._file.readinto(view[:self._left + 1]) or 0
        if count > self._left:
            raise FileTooLarge(f"more than {self._max_bytes} bytes ({self._limit}); not read")
        self._left -= count
        return count

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        position = self._file.seek(offset, whence)
        self._left = max(0, self._max_bytes - position)
        return position

    def tell(self) -> int:
        return self._file.tell()

    def close(self) -> None:
        self._file.close()
        super().close()


@contextmanager
def open_regular(path: str | Path, *, max_bytes: int, limit: str) -> Iterator[IO[bytes]]:
    """A local regular file of at most max_bytes, open for streaming (CSV rows, hashing, np.load):
    opened as read_regular_file opens one, and raising FileTooLarge rather than read past max_bytes."""
    descriptor, _ = _open_checked(path, max_bytes=max_bytes, limit=limit)
    with io.BufferedReader(_Bounded(descriptor, max_bytes=max_bytes, limit=limit), buffer_size=1 << 20) as handle:
        yield handle


def file_digest(path: str | Path, *, max_bytes: int, limit: str = IMAGE_LIMIT) -> bytes:
    """The SHA-256 of a local regular file of at most max_bytes (its first 16 bytes are the file's
    content_digest), read 1 MiB at a time: its memory is the block, not the file (a plain read of
    a 2 GB file took the audit cache to 2.2 GB)."""
    digest = hashlib.sha256()
    with open_regular(path, max_bytes=max_bytes, limit=limit) as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.digest()


def content_digest(data: bytes) -> bytes:
    """The first 128 bits of the SHA-256 of a file's bytes: the key under which its audit results
    are reused (SHA-256 rather than blake2b: CPUs with SHA instructions hash it twice as fast)."""
    return hashlib.sha256(data).digest()[:16]


# The largest JSON or YAML document read whole (bytes) when no tighter bound applies: a million-file
# audit report or cache path list is a few hundred MB.
MAX_DOCUMENT_BYTES = 1 << 30
DOCUMENT_LIMIT = "a document trainwell reads may have"


def read_json(path: str | Path, *, max_bytes: int = MAX_DOCUMENT_BYTES, limit: str = DOCUMENT_LIMIT) -> Any:
    """The JSON value in a user's file, read by read_regular_file. Every way it can be bad is an
    OSError (missing, not a regular file, too large) or a ValueError (not UTF-8, not JSON, nested
    too deeply, an integer of more digits than Python converts), with the reason."""
    return parse_json(read_regular_file(path, max_bytes=max_bytes, limit=limit))


def read_json_or_none(path: str | Path, *, max_bytes: int = MAX_DOCUMENT_BYTES) -> Any:
    """The JSON value in a file another stage wrote, or None when it is missing, unreadable, too big
    or not JSON: a page or card then says that stage has not run. Its shape is the caller's to check."""
    try:
        return read_json(path, max_bytes=max_bytes)
    except (OSError, ValueError):
        return None


def read_json_object_or_none(path: str | Path, *, max_bytes: int = MAX_DOCUMENT_BYTES) -> dict | None:
    """read_json_or_none, and None for any value but a JSON object."""
    value = read_json_or_none(path, max_bytes=max_bytes)
    return value if isinstance(value, dict) else None


def parse_json(data: bytes) -> Any:
    """The JSON value in bytes from anywhere (a file, `git show`); a ValueError with the reason when
    they are not UTF-8, not JSON, nested too deeply or hold an integer Python will not convert."""
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text (byte {exc.start} is {data[exc.start]:#04x})") from None
    except RecursionError:
        raise ValueError("JSON nested too deeply to read") from None
    except ValueError as exc:  # json.JSONDecodeError, or int's 4300-digit conversion limit
        raise ValueError(f"not valid JSON: {str(exc)[:200]}") from None


def write_bytes(path: str | Path, data: bytes) -> None:
    if not is_remote(path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(data)
        return
    gfile = _gfile()
    try:
        with gfile.GFile(str(path), "wb") as handle:
            handle.write(data)
    except Exception as exc:
        raise _remote_error(str(path), exc) from None


def exists(path: str | Path) -> bool:
    if not is_remote(path):
        return Path(path).exists()
    return _gfile().exists(str(path))


def load_npy(path: str | Path) -> np.ndarray:
    import numpy as np  # here, not at the top: reading params (params_file) needs this module, not numpy

    if not is_remote(path):
        return np.load(path, allow_pickle=False)
    return np.load(io.BytesIO(read_bytes(path)), allow_pickle=False)


def save_npy(path: str | Path, array: np.ndarray) -> None:
    import numpy as np

    if not is_remote(path):
        np.save(path, array, allow_pickle=False)
        return
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    write_bytes(path, buffer.getvalue())


# Where DVC puts the temporary workspaces of queued experiments (`dvc exp run --queue`, `dvc queue
# start`) and of `dvc exp run --temp`: somewhere under <project>/.dvc/tmp/exps/ (DVC 3's EXEC_TMP_DIR).
EXPERIMENT_WORKSPACES = (".dvc", "tmp", "exps")


def project_path(path: str, *, cwd: str | Path | None = None) -> str:
    """A relative path of the project's own scratch state, as every workspace of the project finds it.

    DVC runs a queued experiment in a fresh clone under <project>/.dvc/tmp/exps/, holding only what
    git and DVC track: a scratch file there (the audit cache) starts empty every time, and an
    experiment that changes an `audit.*` param decodes every image again. Inside such a workspace
    a relative path names the file in the project that queued it; anywhere else, and for an
    absolute path or a URL, the path is returned as given.
    """
    if is_remote(path) or Path(path).is_absolute():
        return path
    here = Path(cwd if cwd is not None else os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if folder.parts[-len(EXPERIMENT_WORKSPACES):] == EXPERIMENT_WORKSPACES and folder != here:
            project = folder.parents[len(EXPERIMENT_WORKSPACES) - 1]
            return str(project / path)
    return path


def walk_files(root: str) -> list[str]:
    """Every non-hidden file below a remote root, as sorted posix paths relative to it.

    One listing per folder. gfile.walk and glob ask "is this a folder?" once per object (a
    request each: 500 objects took 9-13 s against a local server, listing per folder 0.1 s),
    so only names without a file extension get that question.
    """
    gfile = _gfile()
    base = root.rstrip("/")
    found: list[str] = []

    def visit(folder: str, relative: str) -> None:
        for name in gfile.listdir(folder):
            name = name.rstrip("/")
            if not name or name.startswith("."):
                continue
            child, child_relative = f"{folder}/{name}", f"{relative}/{name}" if relative else name
            if "." not in name and gfile.isdir(child):
                visit(child, child_relative)
            else:
                found.append(child_relative)

    try:
        if not gfile.isdir(base):
            raise DataError(f"dataset location '{root}' does not exist or holds no objects; set data.dir")
        visit(base, "")
    except DataError:
        raise
    except Exception as exc:
        raise _remote_error(root, exc) from None
    return sorted(found)


def exit_process(status: int) -> None:
    """Return status to the shell; once TensorFlow or remote I/O was used, without the interpreter's teardown.

    A process that imported TensorFlow spends about 1.2 s of CPU after its last line of work
    tearing its modules down (measured on 2 cores: an import alone, or a fit, then exit): every
    TensorFlow stage of a `dvc repro` paid it. And tensorflow-io 0.37.1 aborts the interpreter at
    that point ("pure virtual method called", exit 134; tensorflow/io#2039) once its S3 filesystem
    has been used, which would make DVC and CI see every remote run as failed. So, as the
    interpreter would, finish the non-daemon threads and the atexit handlers (thread pools,
    multiprocessing children, temporary folders), flush the standard streams, and leave with
    os._exit. Every output is already written whole (outputs.write_atomically). Not for a worker
    of a multi-worker cluster (TF_CONFIG): TensorFlow's own teardown there tells the other workers.
    """
    if not (_remote_used or "tensorflow" in sys.modules) or "TF_CONFIG" in os.environ:
        sys.exit(status)
    import atexit
    import threading

    shutdown = getattr(threading, "_shutdown", None)  # what the interpreter runs first: joins non-daemon threads
    if shutdown is not None:
        shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):  # a closed pipe or stream: nothing more can reach it
            stream.flush()
    os._exit(status)
