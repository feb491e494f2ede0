"""The per-file audit checks, one registry entry each: the kinds it reports, the cache columns it stores, its params."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from trainwell.audit.close_look import NATIVE_SIDE, native_patch
from trainwell.audit.similarity import (
    CROP_PROBES,
    DETAIL_SIDE,
    crop_hashes,
    grey_of,
    similarity_features,
    tiny_thumbnail,
)
from trainwell.kinds import DEFAULT_SEVERITY
from trainwell.params import AuditParams

KindDetails = list[tuple[str, str]]  # one file's (kind, detail) pairs; a Finding adds the path


@dataclass(slots=True)
class Sample:
    """One decoded file as the checks see it, and the cache row its results go to.

    A check writes its values straight into `columns` (each a column of the whole chunk), never
    into an object per file: a worker hands a chunk back as a few arrays (see workers.CheckedBatch).
    """

    image: np.ndarray  # RGB uint8, as training decodes it
    grey: np.ndarray  # its luma, uint8
    findings: KindDetails  # what the decoder and the checks before this one found
    columns: dict[str, np.ndarray]
    row: int


@dataclass(frozen=True)
class FileCheck:
    """One per-file check: the finding kinds it can report, the cache columns it stores (name ->
    an empty array giving the dtype and a row's shape) and the AuditParams fields its results
    depend on. The cache's layout and fingerprint are made from these, so a check's results are
    measured again whenever one of its params changes.

    `measure` runs once per decoded file, in registry order; None marks a step the checker does
    itself before decoding (reading) or around the whole check (its time limit).
    """

    name: str
    kinds: tuple[str, ...]
    columns: dict[str, np.ndarray]
    params: tuple[str, ...]
    measure: Callable[[Sample, AuditParams], KindDetails] | None

    @property
    def severities(self) -> dict[str, str]:
        """The default severity of each kind: kinds.DEFAULT_SEVERITY's, warning for a kind it lacks
        (the policy's audit.fail_on makes a kind an error; kinds.severity_for is the one rule)."""
        return {kind: DEFAULT_SEVERITY.get(kind, "warning") for kind in self.kinds}


def pixel_digest(image: np.ndarray) -> bytes:
    """128 bits of the SHA-256 of the decoded pixels and their shape: equal for files that decode alike."""
    digest = hashlib.sha256(str(image.shape).encode())
    digest.update(np.ascontiguousarray(image).data)
    return digest.digest()[:16]


def shape_findings(image: np.ndarray, *, policy: AuditParams) -> KindDetails:
    """too_small and odd_aspect_ratio: what an image's size says on its own."""
    findings = []
    height, width = image.shape[:2]
    if min(height, width) < policy.min_side:
        findings.append(("too_small", f"{width}x{height}; shorter side below {policy.min_side} pixels"))
    aspect = max(height, width) / max(1, min(height, width))
    if aspect > policy.max_aspect_ratio:
        findings.append(("odd_aspect_ratio", f"{width}x{height} (ratio {aspect:.1f} > {policy.max_aspect_ratio}); "
                         "a square resize will distort it"))
    return findings


def constant_findings(image: np.ndarray, grey: np.ndarray) -> KindDetails:
    """constant: every pixel one colour."""
    # A flat colour has a flat luma, so the exact all-pixels comparison (16x the luma's work) runs
    # only when the luma's extremes meet: ~2 us instead of ~30 for a 75x75 image.
    low, high, _, _ = cv2.minMaxLoc(grey)
    if low == high and (image == image[0, 0]).all():
        return [("constant", f"every pixel has the colour {tuple(int(v) for v in image[0, 0])}")]
    return []


def content_findings(image: np.ndarray, *, policy: AuditParams, grey: np.ndarray | None = None) -> KindDetails:
    """Shape problems and a flat colour: what one decoded RGB uint8 image shows on its own.

    The image properties (dark, light, low_information, blurry) are not judged here: a score means
    something only beside the rest of the dataset (audit/properties.py), so property_scores keeps it.
    """
    return shape_findings(image, policy=policy) + constant_findings(image, grey_of(image) if grey is None else grey)


# The raw image-property scores, each a float column of the audit cache, in the order `scores`
# returns them: name -> what it measures.
PROPERTY_SCORES = {
    "brightest": "luma (0-255) of the brightest 1% of pixels",
    "darkest": "luma of the darkest 1%",
    "sharpness": "variance of the Laplacian of the luma",
    "entropy": "of the luma histogram, in bits (0-8)",
}


def scores(grey: np.ndarray) -> tuple[float, float, float, float]:
    """(brightest, darkest, sharpness, entropy), PROPERTY_SCORES' order: see property_scores."""
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
    return dict(zip(PROPERTY_SCORES, scores(grey)))


def _measure_pixels(sample: Sample, policy: AuditParams) -> KindDetails:
    sample.columns["pixel_hash"][sample.row] = pixel_digest(sample.image)
    return []


def _measure_shape(sample: Sample, policy: AuditParams) -> KindDetails:
    return shape_findings(sample.image, policy=policy)


def _measure_constant(sample: Sample, policy: AuditParams) -> KindDetails:
    return constant_findings(sample.image, sample.grey)


def _measure_similarity(sample: Sample, policy: AuditParams) -> KindDetails:
    row = sample.row
    code, fine, detail = similarity_features(sample.grey)
    sample.columns["perceptual_hash"][row], sample.columns["fine"][row], sample.columns["detail"][row] = code, fine, detail
    sample.columns["native"][row], sample.columns["native_shape"][row] = native_patch(sample.grey)
    sample.columns["thumbnail"][row] = tiny_thumbnail(sample.image)
    sample.columns["crop_hashes"][row] = crop_hashes(sample.grey)
    return []


def _measure_properties(sample: Sample, policy: AuditParams) -> KindDetails:
    # A flat colour has no score (NaN), not a black one: it is reported as constant instead.
    if not any(kind == "constant" for kind, _ in sample.findings):
        for name, value in zip(PROPERTY_SCORES, scores(sample.grey)):
            sample.columns[name][sample.row] = value
    return []


# `content` and `pixel_hash` are 128-bit SHA-256 digests (pixel_hash empty for a file that did not
# decode); perceptual_hash is 8 packed bytes, fine a 16x16 grey, detail a 24x24 grey, native the central 24x24 grey
# pixels as decoded with native_shape the image's (height, width) (audit/close_look.py), thumbnail an 8x8 RGB box filter
# and crop_hashes the pHashes of five crops of a few percent, 8 packed bytes each (see similarity.py). The float columns are the raw image-property scores, NaN for a file that has
# none (not decoded, or one flat colour): they are judged against the whole dataset on every run
# (audit/properties.py), so a re-audit needs no decoding for them.
FILE_CHECKS: tuple[FileCheck, ...] = (
    # Reading is bounded by what max_pixels allows (data.decode.max_file_bytes); the cache finds a
    # moved or touched file by its content digest.
    FileCheck("read", ("unreadable", "too_large"), {"content": np.zeros(0, "S16")}, ("max_pixels",), None),
    FileCheck("decode", ("empty_file", "not_an_image", "corrupt", "truncated", "too_large", "nan", "inf",
                         "extension_mismatch", "decoder_warning", "grayscale", "alpha", "cmyk", "high_bit_depth",
                         "palette", "animated"),
              {"pixel_hash": np.zeros(0, "S16")}, ("max_pixels",), _measure_pixels),
    # Run by audit/workers.py around each file's whole check (an alarm, and a watchdog that kills).
    FileCheck("time_limit", ("decode_timeout", "decoder_crash"), {}, ("file_timeout_s",), None),
    FileCheck("shape", ("too_small", "odd_aspect_ratio"), {}, ("min_side", "max_aspect_ratio"), _measure_shape),
    FileCheck("constant", ("constant",), {}, (), _measure_constant),
    FileCheck("similarity", (), {"perceptual_hash": np.zeros((0, 8), np.uint8), "fine": np.zeros((0, 256), np.uint8),
                                 "detail": np.zeros((0, DETAIL_SIDE * DETAIL_SIDE), np.uint8),
                                 "native": np.zeros((0, NATIVE_SIDE * NATIVE_SIDE), np.uint8),
                                 "native_shape": np.zeros((0, 2), np.uint32),
                                 "thumbnail": np.zeros((0, 192), np.uint8),
                                 "crop_hashes": np.zeros((0, len(CROP_PROBES), 8), np.uint8)}, (), _measure_similarity),
    FileCheck("properties", (), {name: np.zeros(0, np.float32) for name in PROPERTY_SCORES}, (), _measure_properties),
)


def stored_columns() -> dict[str, np.ndarray]:
    """Every column the checks store, in registry order (the audit cache's layout)."""
    return {name: empty for check in FILE_CHECKS for name, empty in check.columns.items()}


def score_columns() -> tuple[str, ...]:
    """The float columns: scores, NaN where a file has none."""
    return tuple(name for name, empty in stored_columns().items() if empty.dtype.kind == "f")


def policy_fields() -> tuple[str, ...]:
    """The AuditParams fields some per-file result depends on, each once, in registry order."""
    return tuple(dict.fromkeys(field for check in FILE_CHECKS for field in check.params))


def measures() -> tuple[Callable[[Sample, AuditParams], KindDetails], ...]:
    """What runs on each decoded file, in registry order (the order of its findings)."""
    return tuple(check.measure for check in FILE_CHECKS if check.measure is not None)
