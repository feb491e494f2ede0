"""Perceptual hashes and near-duplicate groups: the same picture re-encoded, resized or lightly edited."""

from __future__ import annotations

import cv2
import numpy as np

from trainwell.data.groups import groups_from_pairs


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


def near_duplicate_pairs(
    *,
    hashes: np.ndarray,
    thumbnails: np.ndarray,
    max_distance: int,
    max_pixel_difference: float,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """Index pairs (i < j) of near-duplicates, as an (n, 2) array; with `rows`, only pairs
    that involve one of those indices (how an incremental audit checks just its changed files).

    Two images are linked when their pHashes differ in at most `max_distance` bits and their
    8x8 RGB thumbnails differ by at most `max_pixel_difference` on average (0-255): pHash sees
    only grey structure, so a pink and a lilac circle share one; a re-encoded or resized copy
    differs from its original by about 1 on the thumbnail, different pictures by 8 and more.
    """
    count = len(hashes)
    empty = np.zeros((0, 2), dtype=np.int64)
    if count < 2:
        return empty
    # Hamming distance by matrix product: with bits as +-1, a.b = 64 - 2 * distance. One BLAS
    # call per block of rows, the block sized so it holds about 4M distances (16 MiB) whatever
    # the dataset size: 5,000 images take ~0.05 s; time grows with the square of the count.
    signs = np.unpackbits(hashes, axis=1).astype(np.float32) * 2.0 - 1.0
    bits = signs.shape[1]
    query = np.arange(count) if rows is None else np.unique(np.asarray(rows, dtype=np.int64))
    block = max(1, (1 << 22) // count)
    # Thumbnail sums of absolute differences (0-255 x 192 values), over at most this many
    # candidate pairs at a time: pHash alone links many simple pictures, and comparing every
    # candidate's thumbnails at once made memory grow with the candidates (+115 MiB at 12,000 images).
    chunk = 1 << 12  # 4,096 pairs: under 5 MiB of int16 differences
    limit = max_pixel_difference * thumbnails.shape[1]
    found: list[np.ndarray] = []
    for start in range(0, len(query), block):
        chosen = query[start : start + block]
        similarity = signs[chosen] @ signs.T
        local, columns = np.nonzero(similarity >= bits - 2 * max_distance - 0.5)
        left = chosen[local]
        # Each pair once: from its smaller index, unless only `rows` are queried (then from any
        # queried end, deduplicated below).
        keep = columns > left if rows is None else columns != left
        first, second = np.minimum(left, columns)[keep], np.maximum(left, columns)[keep]
        for offset in range(0, len(first), chunk):
            a, b = first[offset : offset + chunk], second[offset : offset + chunk]
            difference = np.abs(thumbnails[a].astype(np.int16) - thumbnails[b].astype(np.int16)).sum(axis=1)
            close = difference <= limit
            found.append(np.stack([a[close], b[close]], axis=1))
    return np.unique(np.concatenate(found), axis=0) if found else empty


def near_duplicate_groups(
    *, hashes: np.ndarray, thumbnails: np.ndarray, max_distance: int, max_pixel_difference: float
) -> list[list[int]]:
    """Groups of pairwise-linked near-duplicates (see near_duplicate_pairs), linked transitively."""
    pairs = near_duplicate_pairs(
        hashes=hashes, thumbnails=thumbnails, max_distance=max_distance, max_pixel_difference=max_pixel_difference
    )
    return groups_from_pairs(len(hashes), pairs)
