"""Per-file audit checks: read and fully decode one file with the training decoder, then measure its content."""

from __future__ import annotations

import contextlib
import functools
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from trainwell import storage
from trainwell.audit import file_checks
from trainwell.audit.file_checks import (  # noqa: F401 (content_findings, property_scores: the checks' library API)
    KindDetails,
    Sample,
    content_findings,
    pixel_digest,
    property_scores,
)
from trainwell.audit.similarity import grey_of
from trainwell.data.decode import DecodeError, decode_image, max_file_bytes
from trainwell.params import AuditParams


def new_columns(count: int) -> dict[str, np.ndarray]:
    """Empty result columns (file_checks.stored_columns) for `count` files: no digests, NaN scores
    ("no score": a file that never decodes is not a black one)."""
    columns = {name: np.zeros((count, *empty.shape[1:]), dtype=empty.dtype)
               for name, empty in file_checks.stored_columns().items()}
    for column in columns.values():
        if column.dtype.kind == "f":
            column[:] = np.nan
    return columns


def clear_row(columns: dict[str, np.ndarray], row: int) -> None:
    """Row `row` back to "not checked" (what a file whose check was cut short leaves behind)."""
    for column in columns.values():
        # b"" for the digests: numpy stores an integer 0 in a bytes column as b"0", a digest that
        # looks real (a timed-out file would be cached, and two of them be "exact duplicates").
        column[row] = np.nan if column.dtype.kind == "f" else b"" if column.dtype.kind == "S" else 0


@dataclass
class FileResult:
    """What decoding one file found: its issues (kind, detail) and a hash of its decoded pixels."""

    path: str
    label: str
    findings: KindDetails = field(default_factory=list)
    content_hash: str | None = None  # of the file's bytes, for the incremental cache
    pixel_hash: str | None = None
    perceptual_hash: np.ndarray | None = None  # 8 packed bytes
    fine: np.ndarray | None = None  # 16x16 grey, 256 uint8 values
    thumbnail: np.ndarray | None = None  # 8x8 RGB, 192 uint8 values
    scores: dict[str, float] | None = None  # property_scores; None when not decoded or one flat colour


def check_into(columns: dict[str, np.ndarray], row: int, *, root: Path | str, path: str,
               policy: AuditParams) -> KindDetails:
    """Read and fully decode one file, write its results into row `row` of `columns` (new_columns)
    and return its findings; never raises for a bad file, records why it is bad instead.

    Results go straight into columns, not into one object per file: a worker hands back a whole
    chunk as a few arrays, which costs a fraction of pickling per-file objects.
    """
    try:
        return _check_into(columns, row, root=root, path=path, policy=policy)
    except Exception as exc:  # one bad file is a finding for that file, never the end of the audit
        clear_row(columns, row)
        return [("corrupt", f"checking failed: {type(exc).__name__}: {str(exc)[:200]}")]


def _check_into(columns: dict[str, np.ndarray], row: int, *, root: Path | str, path: str,
                policy: AuditParams) -> KindDetails:
    try:
        # Non-blocking, regular files only, refused past what max_pixels allows (see storage);
        # objects past it are refused by their listed size.
        location = storage.join(root, path) if storage.is_remote(root) else os.path.join(root, path)
        data = storage.read_regular_file(location, max_bytes=max_file_bytes(policy.max_pixels))
    except storage.FileTooLarge as exc:
        return [("too_large", str(exc))]
    except OSError as exc:
        return [("unreadable", f"could not read the file: {exc.strerror or exc}")]
    columns["content"][row] = storage.content_digest(data)
    try:
        decoded = decode_image(data, suffix=os.path.splitext(path)[1], max_pixels=policy.max_pixels)
    except DecodeError as exc:
        return [(exc.kind, exc.detail)]
    sample = Sample(image=decoded.image, grey=grey_of(decoded.image), findings=decoded.notes, columns=columns, row=row)
    for measure in file_checks.measures():
        sample.findings.extend(measure(sample, policy))
    return sample.findings


@functools.cache
def warm_up() -> None:
    """Run once per process before forking checkers: Pillow's plugins for the common formats and
    the first calls into OpenCV and numpy load and set up code that every forked child would
    otherwise load again for itself (~25 ms per child, half a re-audit of a handful of files)."""
    Image.preinit()
    pixels = np.zeros((16, 16, 3), dtype=np.uint8)
    pixels[::2] = 255
    for fmt in ("PNG", "JPEG"):
        encoded = io.BytesIO()
        Image.fromarray(pixels).save(encoded, format=fmt)
        image = decode_image(encoded.getvalue(), max_pixels=1024).image
        sample = Sample(image=image, grey=grey_of(image), findings=[], columns=new_columns(1), row=0)
        for measure in file_checks.measures():
            with contextlib.suppress(Exception):  # a warm-up that fails costs only the time it would save
                measure(sample, AuditParams())


def check_file(*, root: Path | str, path: str, label: str, policy: AuditParams) -> FileResult:
    """check_into for one file, as one object (for a caller checking a file or two by hand)."""
    columns = new_columns(1)
    findings = check_into(columns, 0, root=root, path=path, policy=policy)
    result = FileResult(path=path, label=label, findings=findings)
    if columns["content"][0]:
        result.content_hash = columns["content"][0].ljust(16, b"\0").hex()
    if columns["pixel_hash"][0]:
        result.pixel_hash = columns["pixel_hash"][0].ljust(16, b"\0").hex()
        result.perceptual_hash = columns["perceptual_hash"][0].copy()
        result.fine = columns["fine"][0].copy()
        result.thumbnail = columns["thumbnail"][0].copy()
        if np.isfinite(columns["brightest"][0]):
            result.scores = {name: float(columns[name][0]) for name in file_checks.score_columns()}
    return result
