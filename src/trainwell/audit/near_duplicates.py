"""Near-duplicate pairs and groups from per-file pHashes and thumbnails: the same picture re-encoded, resized or lightly edited."""

from __future__ import annotations

import numpy as np

from trainwell.audit.hamming import hamming_pairs, pairs_in_ranges
from trainwell.data.groups import groups_from_pairs

# Thumbnail comparisons per step: 16,384 pairs x 192 values as int16 is 6 MiB per operand.
_THUMBNAIL_CHUNK = 1 << 14


def _units(codes: np.ndarray, thumbnails: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows with the same pHash AND the same thumbnail form one unit: every pair inside a unit is
    linked (distance 0, difference 0), and a unit's members all link or all fail to link to
    another unit's. Returns each row's unit and each unit's representative row.

    Blank or flat pictures often share a hash by the thousand; collapsing them first keeps the
    search and the thumbnail checks proportional to distinct pictures, not to their pairs.
    """
    _, code_of_row, code_counts = np.unique(codes, return_inverse=True, return_counts=True)
    label = np.arange(len(codes))
    shared = np.flatnonzero(code_counts[code_of_row.ravel()] > 1)
    if len(shared):
        # Only rows sharing a hash are compared byte for byte (a 200-byte sort costs ~4 us a row).
        record = np.concatenate([codes[shared].view(np.uint8).reshape(-1, 8), thumbnails[shared]], axis=1)
        record = np.ascontiguousarray(record).view(np.dtype((np.void, record.shape[1]))).ravel()
        _, first, inverse = np.unique(record, return_index=True, return_inverse=True)
        label[shared] = shared[first[inverse.ravel()]]
    representatives, unit_of_row = np.unique(label, return_inverse=True)
    return unit_of_row.ravel(), representatives


def _products(first_start: np.ndarray, first_size: np.ndarray, second_start: np.ndarray,
              second_size: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions (p, q) for every p in [first_start, +first_size) and q in [second_start,
    +second_size), for each entry of the four arrays."""
    products = first_size * second_size
    which = np.repeat(np.arange(len(products)), products)
    local = np.arange(int(products.sum())) - np.repeat(np.cumsum(products) - products, products)
    return first_start[which] + local // second_size[which], second_start[which] + local % second_size[which]


def near_duplicate_pairs(
    *,
    hashes: np.ndarray,
    thumbnails: np.ndarray,
    max_distance: int,
    max_pixel_difference: float,
    rows: np.ndarray | None = None,
    method: str = "auto",
) -> np.ndarray:
    """Index pairs (i < j) of near-duplicates, as an (n, 2) array sorted by i then j; with `rows`,
    only pairs that involve one of those indices (how an incremental audit checks just its
    changed files).

    Two images are linked when their pHashes differ in at most `max_distance` bits and their
    8x8 RGB thumbnails differ by at most `max_pixel_difference` on average (0-255): pHash sees
    only grey structure, so a pink and a lilac circle share one; a re-encoded or resized copy
    differs from its original by about 1 on the thumbnail, different pictures by 8 and more.

    The hash pairs come from hamming.hamming_pairs (multi-index tables, or every pair where
    that is cheaper; `method` forces one, for tests and benchmarks): 1,000,000 hashes take
    seconds, not the hours comparing every pair would.
    """
    count = len(hashes)
    empty = np.zeros((0, 2), dtype=np.int64)
    limit = max_pixel_difference * thumbnails.shape[1]
    asked = np.ones(count, dtype=bool)
    if rows is not None:
        asked[:] = False
        asked[np.asarray(rows, dtype=np.int64)] = True
    if count < 2 or max_distance < 0 or limit < 0 or not asked.any():
        return empty
    if hashes.shape[1:] != (8,):
        raise ValueError(f"hashes must be 64-bit pHashes as (n, 8) uint8, not shape {hashes.shape}")
    codes = np.ascontiguousarray(hashes, dtype=np.uint8).view(np.uint64).ravel()
    unit_of_row, representatives = _units(codes, thumbnails)
    # Rows grouped by unit, each unit's queried rows first: a unit then spans [start, start + size)
    # of `order` and its queried rows [start, start + queried), so every pair with a queried end
    # is one position range (no pair over unqueried rows is ever built, however large the unit).
    order = np.lexsort((~asked, unit_of_row))
    sizes = np.bincount(unit_of_row, minlength=len(representatives))
    queried = np.bincount(unit_of_row, weights=asked, minlength=len(representatives)).astype(np.int64)
    starts = np.cumsum(sizes) - sizes

    unit_pairs = hamming_pairs(codes[representatives], max_distance=max_distance,
                               queries=None if rows is None else queried > 0, method=method)
    linked = [np.zeros((0, 2), dtype=np.int64)]
    unit_thumbnails = thumbnails[representatives]
    for offset in range(0, len(unit_pairs), _THUMBNAIL_CHUNK):
        chunk = unit_pairs[offset : offset + _THUMBNAIL_CHUNK]
        difference = np.abs(unit_thumbnails[chunk[:, 0]].astype(np.int16)
                            - unit_thumbnails[chunk[:, 1]].astype(np.int16)).sum(axis=1)
        linked.append(chunk[difference <= limit])
    first, second = np.concatenate(linked).T
    found = []
    # Across linked units: queried rows of the first with every row of the second, then the
    # unqueried rows of the first with the queried rows of the second.
    found.append(_products(starts[first], queried[first], starts[second], sizes[second]))
    found.append(_products(starts[first] + queried[first], sizes[first] - queried[first], starts[second],
                           queried[second]))
    # Inside a unit: each queried row with every row after it.
    sources = np.flatnonzero(asked[order])
    unit_end = np.repeat(starts + sizes, sizes)
    found.extend(pairs_in_ranges(sources, sources + 1, unit_end[sources]))
    left = np.concatenate([order[positions] for positions, _ in found])
    right = np.concatenate([order[positions] for _, positions in found])
    # Sorted, as one int64 key per pair (i * count + j).
    keys = np.unique(np.minimum(left, right) * count + np.maximum(left, right))
    return np.stack([keys // count, keys % count], axis=1).astype(np.int64)


def near_duplicate_groups(
    *, hashes: np.ndarray, thumbnails: np.ndarray, max_distance: int, max_pixel_difference: float
) -> list[list[int]]:
    """Groups of pairwise-linked near-duplicates (see near_duplicate_pairs), linked transitively."""
    pairs = near_duplicate_pairs(
        hashes=hashes, thumbnails=thumbnails, max_distance=max_distance, max_pixel_difference=max_pixel_difference
    )
    return groups_from_pairs(len(hashes), pairs)
