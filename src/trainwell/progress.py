"""Progress bars that show on a terminal and stay silent in CI logs and under -q."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

from trainwell.console import NORMAL, verbosity

T = TypeVar("T")


def progress(items: Iterable[T], *, total: int | None = None, description: str) -> Iterator[T]:
    """Wrap an iterable in a tqdm bar on an interactive stderr; pass it through unchanged otherwise."""
    hidden = (not sys.stderr.isatty() or os.environ.get("CI", "").lower() in ("1", "true")
              or verbosity() < NORMAL)
    return iter(tqdm(items, total=total, desc=description, unit="img", disable=hidden, leave=False))
