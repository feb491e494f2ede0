"""Per-file audit checks: read and fully decode one file with the training decoder, then measure its content."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from trainwell import storage
from trainwell.audit.cache import content_hash
from trainwell.audit.similarity import grey_of, perceptual_hash, tiny_thumbnail
from trainwell.data.decode import DecodeError, decode_image
from trainwell.params import AuditParams


@dataclass
class FileResult:
    """What decoding one file found: its issues (kind, detail) and a hash of its decoded pixels."""

    path: str
    label: str
    findings: list[tuple[str, str]] = field(default_factory=list)
    content_hash: str | None = None  # of the file's bytes, for the incremental cache
    pixel_hash: str | None = None
    perceptual_hash: np.ndarray | None = None  # 8 packed bytes
    thumbnail: np.ndarray | None = None  # 8x8 RGB, 192 uint8 values
    scores: dict[str, float] | None = None  # property_scores; None when not decoded or one flat colour


def content_findings(image: np.ndarray, *, policy: AuditParams) -> list[tuple[str, str]]:
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
    if (image == image[0, 0]).all():
        findings.append(("constant", f"every pixel has the colour {tuple(int(v) for v in image[0, 0])}"))
    return findings


def property_scores(grey: np.ndarray) -> dict[str, float]:
    """The raw image-property scores of a luma image, named as the audit cache's float columns.

    Brightness is read from the histogram's tails, as cleanvision does, not its mean: a photo of a
    white flower on a black ground has a low mean but bright highlights, so it is not dark; an
    underexposed one has no bright pixel at all.
    """
    histogram = np.bincount(grey.ravel(), minlength=256)
    cumulative = np.cumsum(histogram)
    # The first grey level at which 1% (99%) of the pixels are reached.
    darkest, brightest = np.searchsorted(cumulative, (0.01 * grey.size, 0.99 * grey.size)).tolist()
    shares = histogram[histogram > 0] / grey.size
    # cv2 reductions: a tenth of numpy's per-call overhead on 75x75 images.
    sharpness = float(cv2.meanStdDev(cv2.Laplacian(grey, cv2.CV_32F))[1][0, 0]) ** 2
    return {"brightest": float(brightest), "darkest": float(darkest), "sharpness": sharpness,
            "entropy": float(-(shares * np.log2(shares)).sum())}


def check_file(*, root: Path | str, path: str, label: str, policy: AuditParams) -> FileResult:
    """Read and fully decode one file; never raises for a bad file, records why it is bad instead."""
    try:
        return _check_file(root=root, path=path, label=label, policy=policy)
    except Exception as exc:  # one bad file is a finding for that file, never the end of the audit
        return FileResult(path=path, label=label,
                          findings=[("corrupt", f"checking failed: {type(exc).__name__}: {str(exc)[:200]}")])


def _check_file(*, root: Path | str, path: str, label: str, policy: AuditParams) -> FileResult:
    result = FileResult(path=path, label=label)
    try:
        data = storage.read_bytes(storage.join(root, path) if storage.is_remote(root) else os.path.join(root, path))
    except OSError as exc:
        result.findings.append(("unreadable", f"could not read the file: {exc.strerror or exc}"))
        return result
    result.content_hash = content_hash(data)
    try:
        decoded = decode_image(data, suffix=os.path.splitext(path)[1], max_pixels=policy.max_pixels)
    except DecodeError as exc:
        result.findings.append((exc.kind, exc.detail))
        return result
    result.findings.extend(decoded.notes)
    image = decoded.image
    grey = grey_of(image)
    content = content_findings(image, policy=policy)
    result.findings.extend(content)
    if not any(kind == "constant" for kind, _ in content):
        result.scores = property_scores(grey)
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str(image.shape).encode())
    digest.update(np.ascontiguousarray(image).data)
    result.pixel_hash = digest.hexdigest()
    result.perceptual_hash = perceptual_hash(grey)
    result.thumbnail = tiny_thumbnail(image)
    return result
