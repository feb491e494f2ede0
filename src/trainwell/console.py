"""What the commands print, by verbosity: -q shows errors only, -v adds detail (and TensorFlow's own logs)."""

from __future__ import annotations

import sys

QUIET, NORMAL, VERBOSE = 0, 1, 2
_level = NORMAL


def set_verbosity(level: int) -> None:
    global _level
    _level = level


def verbosity() -> int:
    return _level


def say(message: str) -> None:
    """A progress or result line on stdout (hidden by -q)."""
    if _level >= NORMAL:
        print(message, flush=True)


def warn(message: str) -> None:
    """A warning on stderr (hidden by -q, which shows errors only)."""
    if _level >= NORMAL:
        print(message, file=sys.stderr, flush=True)


def detail(message: str) -> None:
    """Extra detail on stderr, shown only with -v."""
    if _level >= VERBOSE:
        print(message, file=sys.stderr, flush=True)


def error(message: str) -> None:
    """An error on stderr: always shown."""
    print(message, file=sys.stderr, flush=True)
