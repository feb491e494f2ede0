"""Near-duplicate pairs and groups from per-file pHashes and thumbnails: the same picture re-encoded, resized or lightly edited."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainwell.audit.hamming import cross_pairs, hamming_pairs, pairs_in_ranges
from trainwell.audit.similarity import colour_differences, crop_tolerant_similarities, fine_similarities
from trainwell.data.groups import star_groups

# Thumbnail comparisons per step: 16,384 pairs x 256 values as float32 is 16 MiB per operand.
_THUMBNAIL_CHUNK = 1 << 14


@dataclass(frozen=True)
class Confirm:
    """What a pHash candidate must also pass to be a near-duplicate (see near_duplicate_pairs)."""

    min_similarity: float  # of the fine thumbnails (similarity.fine_similarities)
    max_colour_difference: float  # of the 8x8 colour thumbnails (similarity.colour_differences)
    # of the fine thumbnails read as crops of each other (similarity.crop_tolerant_similarities),
    # which a pair failing min_similarity may pass instead; above 1: never
    min_crop_similarity: float = 2.0


# A candidate this unlike on the fine comparison is not compared crop-tolerantly (81 crops each
# way cost ~10x the fine comparison): of 1,600 planted crops and resizes of photographs, faces,
# MNIST and scikit-learn digits, none it confirmed at 0.995 had a fine similarity below 0.907.
_CROP_FLOOR = 0.9


def similarities(first: np.ndarray, second: np.ndarray, confirm: Confirm) -> tuple[np.ndarray, np.ndarray]:
    """(similarity, alike) of pairs of fine thumbnails: alike when the fine similarity reaches
    confirm.min_similarity or, failing that, the crop-tolerant one reaches min_crop_similarity;
    the similarity is the one that decided (the fine one when neither passed)."""
    similarity = fine_similarities(first, second)
    alike = similarity >= confirm.min_similarity
    retry = np.flatnonzero(~alike & (similarity >= _CROP_FLOOR))
    if len(retry) and confirm.min_crop_similarity <= 1.0:
        cropped = crop_tolerant_similarities(first[retry], second[retry])
        passed = retry[cropped >= confirm.min_crop_similarity]
        alike[passed] = True
        similarity[passed] = cropped[cropped >= confirm.min_crop_similarity]
    return similarity, alike


def confirmed(pairs: np.ndarray, *, fine: np.ndarray, thumbnails: np.ndarray, confirm: Confirm) -> np.ndarray:
    """Which of the candidate index pairs pass the fine and the colour comparison (a bool per pair)."""
    passed = [np.zeros(0, dtype=bool)]
    for offset in range(0, len(pairs), _THUMBNAIL_CHUNK):
        first, second = pairs[offset:offset + _THUMBNAIL_CHUNK].T
        alike = similarities(fine[first], fine[second], confirm)[1]
        alike[alike] = colour_differences(thumbnails[first[alike]], thumbnails[second[alike]], fine[first[alike]],
                                          fine[second[alike]]) <= confirm.max_colour_difference
        passed.append(alike)
    return np.concatenate(passed)


def _bundles(codes: np.ndarray, thumbnails: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows the search cannot tell apart (the same pHash AND the same thumbnails) form one bundle:
    every pair inside a bundle is linked (distance 0, difference 0), and a bundle's members all
    link or all fail to link to another bundle's. Returns each row's bundle and each bundle's
    representative row.

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
    representatives, bundle_of_row = np.unique(label, return_inverse=True)
    return bundle_of_row.ravel(), representatives


def _crop_pairs(crops: np.ndarray, codes: np.ndarray, *, max_distance: int,
                queries: np.ndarray | None) -> np.ndarray:
    """Index pairs (i < j) where a crop hash of one (similarity.crop_hashes) is within
    max_distance bits of the other's pHash: a copy cropped a few percent and its original. With
    a boolean `queries` mask, only pairs with a queried end: the queried rows' crops against
    every pHash, and every row's crops against the queried rows' pHashes.

    Each row's crops meet its own pHash (it is a crop of itself): cross_pairs leaves those out.
    The search is hamming.cross_pairs: len(CROP_PROBES) lookups a row in the pHash tables.
    """
    probes = crops.shape[1]
    flat = np.ascontiguousarray(crops, dtype=np.uint8).view(np.uint64).ravel()  # row r's crops at r * probes + k
    owner = np.repeat(np.arange(len(codes)), probes)  # the row each crop hash is of
    if queries is None:
        found = cross_pairs(flat, codes, max_distance=max_distance, owners=owner)
        owners, partners = found[:, 0] // probes, found[:, 1]
    else:
        asked = np.flatnonzero(queries)
        mine = np.repeat(asked, probes) * probes + np.tile(np.arange(probes), len(asked))
        outward = cross_pairs(flat[mine], codes, max_distance=max_distance, owners=owner[mine])
        position = np.full(len(codes), -1, dtype=np.int64)
        position[asked] = np.arange(len(asked))  # where each row's pHash is among the queried ones
        inward = cross_pairs(flat, codes[asked], max_distance=max_distance, owners=position[owner])
        owners = np.concatenate([asked[outward[:, 0] // probes], inward[:, 0] // probes])
        partners = np.concatenate([outward[:, 1], asked[inward[:, 1]]])
    return np.stack([np.minimum(owners, partners), np.maximum(owners, partners)], axis=1).astype(np.int64)


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
    crops: np.ndarray | None = None,
    fine: np.ndarray,
    thumbnails: np.ndarray,
    max_distance: int,
    confirm: Confirm,
    rows: np.ndarray | None = None,
    method: str = "auto",
) -> np.ndarray:
    """Index pairs (i < j) of near-duplicates, as an (n, 2) array sorted by i then j; with `rows`,
    only pairs that involve one of those indices (how an incremental audit checks just its
    changed files).

    A pair whose pHashes differ in at most `max_distance` bits is a candidate, not a verdict:
    different pictures of one simple shape share a pHash (452 different people's handwritten
    "1"s once chained into one group through their pHashes and 8x8 thumbnails). A candidate is a
    near-duplicate when it also passes `confirm`: its 16x16 grey thumbnails, aligned within a
    pixel, correlate at least `min_similarity`, and its colour thumbnails, brightness and contrast
    evened out, differ by at most `max_colour_difference` (pHash sees only grey: a pink and a
    lilac circle share one). Near-uniform pictures correlate weakly with anything, so they never
    pair on their (noise-made) pHashes alone.

    The hash pairs come from hamming.hamming_pairs (multi-index tables, or every pair where
    that is cheaper; `method` forces one, for tests and benchmarks): 1,000,000 hashes take
    seconds, not the hours comparing every pair would.
    """
    count = len(hashes)
    empty = np.zeros((0, 2), dtype=np.int64)
    asked = np.ones(count, dtype=bool)
    if rows is not None:
        asked[:] = False
        asked[np.asarray(rows, dtype=np.int64)] = True
    if count < 2 or max_distance < 0 or not asked.any():
        return empty
    if hashes.shape[1:] != (8,):
        raise ValueError(f"hashes must be 64-bit pHashes as (n, 8) uint8, not shape {hashes.shape}")
    codes = np.ascontiguousarray(hashes, dtype=np.uint8).view(np.uint64).ravel()
    bundle_of_row, representatives = _bundles(codes, np.concatenate([fine, thumbnails], axis=1))
    # Rows grouped by bundle, each bundle's queried rows first: a bundle then spans [start, start + size)
    # of `order` and its queried rows [start, start + queried), so every pair with a queried end
    # is one position range (no pair over unqueried rows is ever built, however large the bundle).
    order = np.lexsort((~asked, bundle_of_row))
    sizes = np.bincount(bundle_of_row, minlength=len(representatives))
    queried = np.bincount(bundle_of_row, weights=asked, minlength=len(representatives)).astype(np.int64)
    starts = np.cumsum(sizes) - sizes

    bundle_pairs = hamming_pairs(codes[representatives], max_distance=max_distance,
                               queries=None if rows is None else queried > 0, method=method)
    if crops is not None:
        bundle_pairs = np.unique(np.concatenate([bundle_pairs, _crop_pairs(crops[representatives], codes[representatives],
                                                                        max_distance=max_distance,
                                                                        queries=None if rows is None else queried > 0)]),
                               axis=0)
    first, second = bundle_pairs[confirmed(bundle_pairs, fine=fine[representatives],
                                         thumbnails=thumbnails[representatives], confirm=confirm)].T
    found = []
    # Across linked bundles: queried rows of the first with every row of the second, then the
    # unqueried rows of the first with the queried rows of the second.
    found.append(_products(starts[first], queried[first], starts[second], sizes[second]))
    found.append(_products(starts[first] + queried[first], sizes[first] - queried[first], starts[second],
                           queried[second]))
    # Inside a bundle: each queried row with every row after it.
    sources = np.flatnonzero(asked[order])
    bundle_end = np.repeat(starts + sizes, sizes)
    found.extend(pairs_in_ranges(sources, sources + 1, bundle_end[sources]))
    left = np.concatenate([order[positions] for positions, _ in found])
    right = np.concatenate([order[positions] for _, positions in found])
    # Sorted, as one int64 key per pair (i * count + j).
    keys = np.unique(np.minimum(left, right) * count + np.maximum(left, right))
    return np.stack([keys // count, keys % count], axis=1).astype(np.int64)


@dataclass(frozen=True)
class NearGroup:
    """Near-duplicates around one representative: every member passed the comparison with it."""

    representative: int
    members: list[int]  # sorted; the representative among them
    lowest_similarity: float  # the least alike member's fine similarity to the representative


def near_duplicate_groups(pairs: np.ndarray, *, count: int, fine: np.ndarray,
                          confirm: Confirm | None = None) -> list[NearGroup]:
    """Groups that never chain, from near-duplicate index pairs among `count` rows.

    Linking pairs transitively once joined 452 different "1"s whose neighbours were each alike.
    Here each group is a representative with its partners (data.groups.star_groups): every member
    is a near-duplicate of the representative, not merely reachable through others. Given the
    `confirm` that found the pairs, a member confirmed as a crop counts its crop-tolerant similarity.
    """
    groups = []
    for representative, members in star_groups(count, pairs):
        others = np.array([member for member in members if member != representative], dtype=np.int64)
        lower = np.minimum(others, representative)  # each pair measured as it was found: lower index first
        higher = np.maximum(others, representative)
        similarity = fine_similarities(fine[lower], fine[higher]) if confirm is None else \
            similarities(fine[lower], fine[higher], confirm)[0]
        groups.append(NearGroup(representative, members, round(float(similarity.min()), 4)))
    return groups
