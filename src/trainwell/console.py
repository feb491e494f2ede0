"""What the commands print, by verbosity: -q shows errors only, -v adds detail (and TensorFlow's own logs)."""

from __future__ import annotations

import sys
from typing import TextIO

QUIET, NORMAL, VERBOSE = 0, 1, 2
_level = NORMAL


def set_verbosity(level: int) -> None:
    global _level
    _level = level


def verbosity() -> int:
    return _level


def emit(message: str, stream: TextIO | None = None) -> None:
    """Print a line that may hold any file name: characters the stream cannot encode (a name's
    undecodable bytes, as surrogate escapes) are shown as backslash escapes, never an exception."""
    stream = stream or sys.stdout
    encoding = getattr(stream, "encoding", None) or "utf-8"
    print(message.encode(encoding, "backslashreplace").decode(encoding), file=stream, flush=True)


def say(message: str) -> None:
    """A progress or result line on stdout (hidden by -q)."""
    if _level >= NORMAL:
        emit(message)


def warn(message: str) -> None:
    """A warning on stderr (hidden by -q, which shows errors only)."""
    if _level >= NORMAL:
        emit(message, sys.stderr)


def detail(message: str) -> None:
    """Extra detail on stderr, shown only with -v."""
    if _level >= VERBOSE:
        emit(message, sys.stderr)


def error(message: str) -> None:
    """An error on stderr: always shown."""
    emit(message, sys.stderr)
