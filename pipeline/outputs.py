"""Writing stage outputs: JSON reports and metrics, always into freshly created parent folders."""

from __future__ import annotations

import json
from pathlib import Path


def write_json(path: str | Path, payload: dict | list) -> None:
    """Write pretty JSON (DVC metrics files are read by people too), creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


def write_lines(path: str | Path, lines: list[str], *, header: str | None = None) -> None:
    """Write one item per line after an optional '# header' line, creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = f"# {header}\n" if header else ""
    path.write_text(text + "".join(f"{line}\n" for line in lines))
