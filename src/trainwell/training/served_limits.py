"""What the served model refuses, as plain numbers (no TensorFlow): the export bakes them into its signature, the model card states them."""

from __future__ import annotations

from dataclasses import dataclass

from trainwell.data.decode import max_file_bytes
from trainwell.params import Params

# Start-of-scan markers a JPEG may hold. libjpeg writes 10 scans for a progressive colour JPEG
# and 1 to 4 for a baseline one; each scan is a pass over every block of the image, so a 94 KB
# file of 5,000 empty scans once kept a request busy for 40 s.
MAX_JPEG_SCANS = 64


@dataclass(frozen=True)
class ServedLimits:
    """Per image of a request: pixels a decoder may allocate, bytes, JPEG scans."""

    max_pixels: int
    max_image_bytes: int
    max_jpeg_scans: int = MAX_JPEG_SCANS


def served_limits(params: Params) -> ServedLimits:
    """The limits for this project: `trainwell predict`'s pixel limit (audit.max_pixels), and
    export.max_image_bytes, never more than the largest file predict would read for that limit."""
    max_pixels = params.audit.max_pixels
    return ServedLimits(max_pixels=max_pixels,
                        max_image_bytes=min(params.export.max_image_bytes, max_file_bytes(max_pixels)))


def describe(limits: ServedLimits) -> list[str]:
    """The limits in words, one refusal per line, for the model card."""
    return [
        f"an image of more than {limits.max_pixels:,} pixels (from its header, before decoding; a GIF's "
        "logical screen counts too)",
        f"an image of more than {limits.max_image_bytes:,} bytes",
        f"a JPEG of more than {limits.max_jpeg_scans} scans",
        "a file that is not JPEG, PNG, GIF or BMP (by its first bytes)",
        "a GIF whose first image cannot be found by reading its blocks (truncated, malformed, or "
        "sub-blocks of ever-changing lengths); only a GIF's first image is ever decoded",
    ]
