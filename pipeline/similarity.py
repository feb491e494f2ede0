"""Perceptual hashes and near-duplicate groups: the same picture re-encoded, resized or lightly edited."""

from __future__ import annotations

import numpy as np
import scipy.fft
from PIL import Image

# Bits set in each byte value, for Hamming distances on packed hashes.
_POPCOUNT = np.array([bin(value).count("1") for value in range(256)], dtype=np.uint8)


def perceptual_hash(image: np.ndarray) -> np.ndarray:
    """64-bit pHash as 8 packed bytes: signs of the lowest 8x8 DCT terms of a 32x32 grey image
    against their median. Robust to re-encoding and resizing, not to crops or rotations."""
    grey = Image.fromarray(image).convert("L").resize((32, 32), Image.Resampling.BILINEAR)
    low = scipy.fft.dctn(np.asarray(grey, dtype=np.float32), norm="ortho")[:8, :8].ravel()
    # The DC term is the mean brightness: left out of the median so brightness does not bias it.
    return np.packbits(low > np.median(low[1:]))


def hamming(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Bit distance between packed hashes (broadcasting over leading axes)."""
    return _POPCOUNT[np.bitwise_xor(left, right)].sum(axis=-1)


def near_duplicate_groups(
    *, hashes: np.ndarray, colours: np.ndarray, max_distance: int, max_colour_difference: float
) -> list[list[int]]:
    """Groups (index lists, each sorted, of 2+) whose members are pairwise-linked near-duplicates.

    Two images are linked when their pHashes differ in at most `max_distance` bits and their
    mean colours (0-255 per channel) differ by at most `max_colour_difference`: simple synthetic
    pictures share pHashes easily, colour tells them apart. Candidates come from band indexing
    (pigeonhole: hashes within d bits agree exactly on one of d+1 bands), so the work grows with
    the number of similar pairs, not with the square of the dataset.
    """
    count = len(hashes)
    if count < 2:
        return []
    bits = np.unpackbits(hashes, axis=1)  # (count, 64)
    bands = np.array_split(np.arange(bits.shape[1]), max_distance + 1)
    weights = [1 << np.arange(len(band), dtype=np.int64) for band in bands]
    candidates: list[np.ndarray] = []
    for band, weight in zip(bands, weights):
        keys = bits[:, band].astype(np.int64) @ weight
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        boundaries = np.flatnonzero(np.diff(sorted_keys)) + 1
        for members in np.split(order, boundaries):
            if len(members) < 2:
                continue
            left, right = np.triu_indices(len(members), k=1)
            low, high = np.minimum(members[left], members[right]), np.maximum(members[left], members[right])
            candidates.append(low.astype(np.int64) * count + high)
    if not candidates:
        return []
    # Each pair encoded as one integer, so duplicates across bands drop out in one np.unique.
    encoded = np.unique(np.concatenate(candidates))
    pairs = np.stack([encoded // count, encoded % count], axis=1)
    close = (hamming(hashes[pairs[:, 0]], hashes[pairs[:, 1]]) <= max_distance) & (
        np.abs(colours[pairs[:, 0]] - colours[pairs[:, 1]]).max(axis=1) <= max_colour_difference
    )
    parent = list(range(count))

    def find(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    for left, right in pairs[close].tolist():
        parent[find(left)] = find(right)
    groups: dict[int, list[int]] = {}
    for index in range(count):
        groups.setdefault(find(index), []).append(index)
    return sorted((members for members in groups.values() if len(members) > 1), key=lambda group: group[0])
