"""Progress bars that show on a terminal and stay silent in CI logs and under -q."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

from trainwell.console import NORMAL, verbosity

T = TypeVar("T")


def _hidden() -> bool:
    return (not sys.stderr.isatty() or os.environ.get("CI", "").lower() in ("1", "true")
            or verbosity() < NORMAL)


def progress_bar(*, total: int, description: str) -> tqdm:
    """A bar to move by hand (`.n = done; .refresh()`), hidden where `progress` is; close it when done."""
    return tqdm(total=total, desc=description, unit="img", disable=_hidden(), leave=False)


def progress(items: Iterable[T], *, total: int | None = None, description: str) -> Iterator[T]:
    """Wrap an iterable in a tqdm bar on an interactive stderr; pass it through unchanged otherwise."""
    return iter(tqdm(items, total=total, desc=description, unit="img", disable=_hidden(), leave=False))
