"""The training curves read back for the report site: training/curves.py's TSV files (dvclive's layout), each row checked."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from trainwell import storage

# training/curves.py's folders -> the split's name on the pages; "eval" is what dvclive itself and
# trainwell before 2026 called the validation split.
CURVE_SPLITS = {"train": "training", "validation": "validation", "eval": "validation"}


def read_curves(log_dir: str | Path, *, max_bytes: int) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """metric -> split -> (epoch, value) from training/curves.py's TSV files; epochs counted from 1.
    A file that cannot be read (or is over max_bytes) is left out, and so is every row that is not
    a whole step and a number: the files are read back from the user's project."""
    curves: dict[str, dict[str, list[tuple[int, float]]]] = {}
    root = Path(log_dir) / "plots" / "metrics"
    for folder, split in CURVE_SPLITS.items():
        for table in sorted((root / folder).glob("*.tsv")):
            try:
                text = storage.read_regular_file(table, max_bytes=max_bytes).decode("utf-8", "replace")
            except OSError:
                continue
            points = []
            for row in list(csv.reader(io.StringIO(text, newline=""), delimiter="\t"))[1:]:  # header: step, name
                try:
                    points.append((int(row[0]) + 1, float(row[1])))
                except (ValueError, IndexError):
                    continue
            curves.setdefault(table.stem, {})[split] = points
    return curves
