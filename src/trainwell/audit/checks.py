"""Per-file audit checks: read and fully decode one file with the training decoder, then measure its content."""

from __future__ import annotations

import functools
import hashlib
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from trainwell import storage
from trainwell.audit.cache import COLUMNS, SCORE_COLUMNS
from trainwell.audit.similarity import grey_of, similarity_features, tiny_thumbnail
from trainwell.data.decode import DecodeError, decode_image, max_file_bytes
from trainwell.params import AuditParams

Findings = list[tuple[str, str]]  # (kind, detail) pairs


def new_columns(count: int) -> dict[str, np.ndarray]:
    """Empty result columns (cache.COLUMNS) for `count` files: no digests, NaN scores ("no score":
    a file that never decodes is not a black one)."""
    columns = {name: np.zeros((count, *empty.shape[1:]), dtype=empty.dtype) for name, empty in COLUMNS.items()}
    for name in SCORE_COLUMNS:
        columns[name][:] = np.nan
    return columns


def clear_row(columns: dict[str, np.ndarray], row: int) -> None:
    """Row `row` back to "not checked" (what a file whose check was cut short leaves behind)."""
    for name, column in columns.items():
        # b"" for the digests: numpy stores an integer 0 in a bytes column as b"0", a digest that
        # looked real (a timed-out file was cached, and two of them were "exact duplicates").
        column[row] = np.nan if name in SCORE_COLUMNS else b"" if column.dtype.kind == "S" else 0


@dataclass
class FileResult:
    """What decoding one file found: its issues (kind, detail) and a hash of its decoded pixels."""

    path: str
    label: str
    findings: Findings = field(default_factory=list)
    content_hash: str | None = None  # of the file's bytes, for the incremental cache
    pixel_hash: str | None = None
    perceptual_hash: np.ndarray | None = None  # 8 packed bytes
    fine: np.ndarray | None = None  # 16x16 grey, 256 uint8 values
    thumbnail: np.ndarray | None = None  # 8x8 RGB, 192 uint8 values
    scores: dict[str, float] | None = None  # property_scores; None when not decoded or one flat colour


def content_findings(image: np.ndarray, *, policy: AuditParams, grey: np.ndarray | None = None) -> Findings:
    """Shape problems and a flat colour: what one decoded RGB uint8 image shows on its own.

    The image properties (dark, light, low_information, blurry) are not judged here: a score means
    something only beside the rest of the dataset (audit/properties.py), so property_scores keeps it.
    """
    findings = []
    height, width = image.shape[:2]
    if min(height, width) < policy.min_side:
        findings.append(("too_small", f"{width}x{height}; shorter side below {policy.min_side} pixels"))
    aspect = max(height, width) / max(1, min(height, width))
    if aspect > policy.max_aspect_ratio:
        findings.append(("odd_aspect_ratio", f"{width}x{height} (ratio {aspect:.1f} > {policy.max_aspect_ratio}); "
                         "a square resize will distort it"))
    # A flat colour has a flat luma, so the exact all-pixels comparison (16x the luma's work) runs
    # only when the luma's extremes meet: ~2 us instead of ~30 for a 75x75 image.
    luma = grey_of(image) if grey is None else grey
    low, high, _, _ = cv2.minMaxLoc(luma)
    if low == high and (image == image[0, 0]).all():
        findings.append(("constant", f"every pixel has the colour {tuple(int(v) for v in image[0, 0])}"))
    return findings


_LEVELS = np.arange(256)


def _scores(grey: np.ndarray) -> tuple[float, float, float, float]:
    """(brightest, darkest, sharpness, entropy): see property_scores."""
    # Array methods, not numpy's module functions: these run once per file, and the functions'
    # Python wrappers cost about a microsecond each.
    size = grey.size
    histogram = np.bincount(grey.ravel(), minlength=256)
    # The first grey level at which 1% (99%) of the pixels are reached.
    darkest, brightest = histogram.cumsum().searchsorted((0.01 * size, 0.99 * size)).tolist()
    # Entropy from the counts: sum(c log2 c) over the occupied levels, then log2(n) - that / n.
    counts = histogram[histogram.nonzero()]
    entropy = math.log2(size) - float(counts.dot(np.log2(counts))) / size
    # cv2 reductions: a tenth of numpy's per-call overhead on 75x75 images. The Laplacian of 8-bit
    # values fits int16 exactly (at most 4 x 255), a third faster than float32, same result.
    sharpness = float(cv2.meanStdDev(cv2.Laplacian(grey, cv2.CV_16S))[1][0, 0]) ** 2
    return float(brightest), float(darkest), sharpness, max(0.0, entropy)


def property_scores(grey: np.ndarray) -> dict[str, float]:
    """The raw image-property scores of a luma image, named as the audit cache's float columns.

    Brightness is read from the histogram's tails, as cleanvision does, not its mean: a photo of a
    white flower on a black ground has a low mean but bright highlights, so it is not dark; an
    underexposed one has no bright pixel at all.
    """
    return dict(zip(("brightest", "darkest", "sharpness", "entropy"), _scores(grey)))


def pixel_digest(image: np.ndarray) -> bytes:
    """128 bits of the SHA-256 of the decoded pixels and their shape: equal for files that decode alike."""
    digest = hashlib.sha256(str(image.shape).encode())
    digest.update(np.ascontiguousarray(image).data)
    return digest.digest()[:16]


def check_into(columns: dict[str, np.ndarray], row: int, *, root: Path | str, path: str,
               policy: AuditParams) -> Findings:
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
                policy: AuditParams) -> Findings:
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
    findings = decoded.notes
    image = decoded.image
    grey = grey_of(image)
    content = content_findings(image, policy=policy, grey=grey)
    findings.extend(content)
    if not any(kind == "constant" for kind, _ in content):
        (columns["brightest"][row], columns["darkest"][row], columns["sharpness"][row],
         columns["entropy"][row]) = _scores(grey)
    columns["pixel_hash"][row] = pixel_digest(image)
    columns["perceptual_hash"][row], columns["fine"][row] = similarity_features(grey)
    columns["thumbnail"][row] = tiny_thumbnail(image)
    return findings


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
        grey = grey_of(image)
        _scores(grey), pixel_digest(image), similarity_features(grey), tiny_thumbnail(image)


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
            result.scores = {name: float(columns[name][0]) for name in SCORE_COLUMNS}
    return result
