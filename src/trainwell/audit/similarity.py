"""Per-file perceptual hashes and thumbnails, the inputs of the near-duplicate search (near_duplicates.py)."""

from __future__ import annotations

import cv2
import numpy as np


def grey_of(image: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of an RGB uint8 image, uint8."""
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def perceptual_hash(grey: np.ndarray) -> np.ndarray:
    """64-bit pHash of a grey uint8 image as 8 packed bytes: signs of the lowest 8x8 DCT terms of
    its 32x32 area-resized copy against their median. Robust to re-encoding and resizing, not to
    crops or rotations."""
    small = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8].ravel()
    # The DC term is the mean brightness: left out of the median so brightness does not bias it.
    # The median of the other 63 terms is the 32nd smallest (np.median costs 10x a partition here).
    return np.packbits(low > np.partition(low[1:], 31)[31])


def tiny_thumbnail(image: np.ndarray) -> np.ndarray:
    """8x8 RGB box-filtered thumbnail (192 uint8 values): the colour layout pHash ignores."""
    return cv2.resize(image, (8, 8), interpolation=cv2.INTER_AREA).ravel()
