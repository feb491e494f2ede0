"""Per-file perceptual hashes and thumbnails, the inputs of the near-duplicate search (near_duplicates.py)."""

from __future__ import annotations

import cv2
import numpy as np


def grey_of(image: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of an RGB uint8 image, uint8."""
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


# The fine thumbnail's side (pixels): what confirms a pHash match (see fine_similarities).
FINE_SIDE = 16
# Below this standard deviation (grey levels) a fine thumbnail is near-uniform: its shape is noise,
# so correlations are taken against this floor and two such pictures never look alike by shape.
FLAT_STD = 2.0


def perceptual_hash(grey: np.ndarray) -> np.ndarray:
    """64-bit pHash of a grey uint8 image as 8 packed bytes (see similarity_features)."""
    return similarity_features(grey)[0]


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


def fine_similarities(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """How alike pairs of fine thumbnails are, as a correlation in [-1, 1] (1: the same picture).

    first and second are (n, 256) rows of fine thumbnails, pair i being (first[i], second[i]).
    The central 14x14 of the first is compared with the 14x14 windows of the second shifted by
    up to one pixel either way (1/16 of the picture: a crop of a few percent or a resize's
    rounding), and the best of the nine correlations is kept. Correlation ignores brightness and
    contrast; each spread is taken as at least FLAT_STD, so near-uniform pictures, whose shape is
    noise, correlate weakly with anything.
    """
    side = FINE_SIDE
    a = first.reshape(-1, side, side)[:, 1:-1, 1:-1].astype(np.float32).reshape(len(first), -1)
    a -= a.mean(axis=1, keepdims=True)
    a_norm = np.sqrt(np.maximum((a * a).sum(axis=1), FLAT_STD ** 2 * a.shape[1]))
    b_all = second.reshape(-1, side, side).astype(np.float32)
    best = np.full(len(first), -1.0, dtype=np.float32)
    for down in range(3):
        for across in range(3):
            b = b_all[:, down:down + side - 2, across:across + side - 2].reshape(len(second), -1)
            b = b - b.mean(axis=1, keepdims=True)
            b_norm = np.sqrt(np.maximum((b * b).sum(axis=1), FLAT_STD ** 2 * b.shape[1]))
            np.maximum(best, np.einsum("ij,ij->i", a, b) / (a_norm * b_norm), out=best)
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

    first_spread = np.maximum(first_fine.astype(np.float32).std(axis=1), FLAT_STD)
    second_spread = np.maximum(second_fine.astype(np.float32).std(axis=1), FLAT_STD)
    scale = np.clip(first_spread / second_spread, 0.5, 2.0)[:, None, None]
    return np.abs(chroma(first) - chroma(second) * scale).mean(axis=(1, 2))


def tiny_thumbnail(image: np.ndarray) -> np.ndarray:
    """8x8 RGB box-filtered thumbnail (192 uint8 values): the colour layout pHash ignores."""
    return cv2.resize(image, (8, 8), interpolation=cv2.INTER_AREA).ravel()
