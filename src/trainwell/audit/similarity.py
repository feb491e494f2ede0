"""Per-file perceptual hashes and thumbnails, the inputs of the near-duplicate search (near_duplicates.py)."""

from __future__ import annotations

import cv2
import numpy as np


def grey_of(image: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of an RGB uint8 image, uint8."""
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


# The fine thumbnail's side (pixels): what confirms a pHash match (see fine_similarities).
FINE_SIDE = 16
# Below this spread (standard deviation, grey levels) a fine thumbnail's differences are measured
# against this spread rather than its own: JPEG noise on a hazy sky is not a different picture, and
# near-uniform pictures pair only when they differ by a fraction of a grey level.
LOW_CONTRAST = 8.0


def similarity_features(grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pHash, fine thumbnail) of a grey uint8 image.

    The pHash is 64 bits as 8 packed bytes: signs of the lowest 8x8 DCT terms of the image's 32x32
    area-resized copy against their median. Robust to re-encoding, resizing and brightness, not to
    crops or rotations; it finds candidates. The fine thumbnail is the same 32x32 copy halved to
    16x16 grey (256 uint8 values): the finer measure a candidate must pass (fine_similarities),
    because different pictures of one simple shape (two people's "1"s) share a pHash.
    """
    small = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8].ravel()
    # The DC term is the mean brightness: left out of the median so brightness does not bias it.
    # The median of the other 63 terms is the 32nd smallest (np.median costs 10x a partition here).
    code = np.packbits(low > np.partition(low[1:], 31)[31])
    fine = cv2.resize(small, (FINE_SIDE, FINE_SIDE), interpolation=cv2.INTER_AREA)
    return code, np.clip(np.rint(fine), 0, 255).astype(np.uint8).ravel()


def _standardised(thumbnails: np.ndarray) -> np.ndarray:
    """Rows centred on their mean and divided by their spread (at least LOW_CONTRAST), as float32."""
    rows = thumbnails.astype(np.float32)
    rows -= rows.mean(axis=1, keepdims=True)
    rows /= np.maximum(rows.std(axis=1, keepdims=True), LOW_CONTRAST)
    return rows


def fine_similarities(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """How alike pairs of fine thumbnails are, at most 1 (the same picture).

    first and second are (n, 256) rows of fine thumbnails, pair i being (first[i], second[i]).
    The central 14x14 of the first is compared with the 14x14 windows of the second shifted by
    up to one pixel either way (1/16 of the picture: a crop of a few percent or a resize's
    rounding), and the best of the nine is kept. Each window is centred and divided by its
    spread, so brightness and contrast do not count, and the similarity is 1 minus half their
    mean squared difference: their correlation, when both spreads are at least LOW_CONTRAST.
    """
    side = FINE_SIDE
    a = _standardised(first.reshape(-1, side, side)[:, 1:-1, 1:-1].reshape(len(first), -1))
    b_all = second.reshape(-1, side, side)
    best = np.full(len(first), -np.inf, dtype=np.float32)
    for down in range(3):
        for across in range(3):
            b = _standardised(b_all[:, down:down + side - 2, across:across + side - 2].reshape(len(second), -1))
            np.maximum(best, 1 - 0.5 * np.square(a - b).mean(axis=1), out=best)
    return best


def colour_differences(first: np.ndarray, second: np.ndarray, first_fine: np.ndarray,
                       second_fine: np.ndarray) -> np.ndarray:
    """Mean difference (0-255) of the colour of pairs of 8x8 RGB thumbnails, brightness and contrast evened out.

    pHash and the fine thumbnail see only grey: a pink and a lilac circle share both. Colour is
    compared as chroma (R - G and B - G per thumbnail pixel), which a brightness shift leaves as
    it is; the second's is scaled by the ratio of the two fine thumbnails' contrasts (clamped to
    1/2..2), which a contrast change multiplies it by.
    """
    def chroma(thumbnails: np.ndarray) -> np.ndarray:
        rgb = thumbnails.reshape(len(thumbnails), thumbnails.shape[1] // 3, 3).astype(np.float32)
        return rgb[:, :, [0, 2]] - rgb[:, :, 1:2]

    first_spread = np.maximum(first_fine.astype(np.float32).std(axis=1), LOW_CONTRAST)
    second_spread = np.maximum(second_fine.astype(np.float32).std(axis=1), LOW_CONTRAST)
    scale = np.clip(first_spread / second_spread, 0.5, 2.0)[:, None, None]
    return np.abs(chroma(first) - chroma(second) * scale).mean(axis=(1, 2))


def tiny_thumbnail(image: np.ndarray) -> np.ndarray:
    """8x8 RGB box-filtered thumbnail (192 uint8 values): the colour layout pHash ignores."""
    return cv2.resize(image, (8, 8), interpolation=cv2.INTER_AREA).ravel()
