"""Candidate pairs the near-duplicate search adds to the pHash matches: crop hashes against pHashes, thumbnails alike unshifted, and shared centre blocks."""

from __future__ import annotations

import numpy as np

from trainwell.audit.close_look import block_keys
from trainwell.audit.hamming import cross_pairs
from trainwell.audit.similarity import LOW_CONTRAST, beyond_plane, standardised


def crop_pairs(crops: np.ndarray, codes: np.ndarray, *, max_distance: int,
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


def informative_rows(fine: np.ndarray) -> np.ndarray:
    """Whether each fine thumbnail holds more than a tilted plane: the spread (grey levels) of what
    is left after its best-fitting plane (brightness, left-right and top-down gradient) reaches
    LOW_CONTRAST. Below it a picture's shape is noise-sized (a hazy tile) or a gradient, and
    gradients differ from each other only by angle and strength, which the standardised
    comparison leaves out (200 generated tiles of sky, gradients of different angles and
    strengths, made 39 groups when searched)."""
    return beyond_plane(fine, 16, 16) >= LOW_CONTRAST


# Fine thumbnails alike unshifted to at least this (1 minus half the mean squared difference of
# the standardised 16x16 thumbnails) are candidates whatever their pHashes (neighbour_pairs). Of
# 200 planted copies each of MNIST digits, faces and photograph tiles, 90%, 84% and 80% reach it
# (the rest: crops, and near-uniform tiles, which are left out); MNIST's 5,331 digits hold 12,472
# such pairs (a "1" is alike unshifted with many), which the fine, crop and detail measures then
# confirm or refuse like any candidate.
NEIGHBOUR_FLOOR = 0.95
# Similarities held per step: 2^22 float32 (16 MiB), e.g. 209 rows x 20,000 files; 1,024 rows at
# most. (A fixed 1,024 rows cost 200 MiB of peak memory at 12,000 files in its temporaries.)
_NEIGHBOUR_CELLS = 1 << 22
_NEIGHBOUR_BLOCK = 1024
# Found pairs measured again per step: 16,384 x 256 float32 is 16 MiB an operand (all at once held
# 200 MiB for 50,000 pairs).
_REMEASURE_PAIRS = 16_384
# The search's float32 products may round either way of the floor (summed in another order for
# another block shape): pairs within this of it are measured again, one pair at a time.
_NEIGHBOUR_SLACK = 1e-3


def unshifted_similarities(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """1 minus half the mean squared difference of standardised rows, pair by pair (each sum
    over one pair's values alone, so the same pair gives the same value in any search)."""
    return 1.0 - 0.5 * np.square(first - second).mean(axis=1)


def neighbour_pairs(fine: np.ndarray, *, queries: np.ndarray | None = None) -> np.ndarray:
    """Index pairs (i < j) whose fine thumbnails are alike unshifted to at least NEIGHBOUR_FLOOR;
    with a boolean `queries` mask, only the pairs with a queried end (the same pairs a full
    search finds there: each pair's value is its own, see unshifted_similarities).

    Only informative thumbnails take part (informative_rows: more than a tilted plane): two tiles
    of one clear sky are alike to 0.999 and clearly closer than any third (on the photographs'
    clean tiles, searching near-uniform ones too made 17 files into 7 groups). Such pictures stay
    candidates where their hashes agree, as before.

    Every pair is compared (len(fine)^2 x 256 multiply-adds as matrix products: 20,000 files in
    ~5 s on 2 cores), so the audit only asks below a file count (audit/dataset.py)."""
    informative = informative_rows(fine)
    rows = standardised(fine)
    squares = np.square(rows).mean(axis=1)
    asked = np.flatnonzero(informative if queries is None else informative & queries)
    others = np.flatnonzero(informative)
    found: list[np.ndarray] = [np.zeros((0, 2), dtype=np.int64)]
    theirs, their_halves = rows[others], 0.5 * squares[others]
    step = max(1, min(_NEIGHBOUR_BLOCK, _NEIGHBOUR_CELLS // max(1, len(others))))
    for start in range(0, len(asked), step):
        block = asked[start:start + step]
        # 1 - (q_i + q_j) / 2 + mean(x_i x_j): the mean squared difference expanded, in place.
        value = rows[block] @ theirs.T
        value /= rows.shape[1]
        value -= their_halves[None, :]
        value += (1.0 - 0.5 * squares[block])[:, None]
        near = np.argwhere(value >= NEIGHBOUR_FLOOR - _NEIGHBOUR_SLACK)
        first, second = block[near[:, 0]], others[near[:, 1]]
        apart = first != second  # a file is not its own neighbour
        first, second = first[apart], second[apart]
        if queries is None:
            keep = first < second  # each pair once, from its lower end
            first, second = first[keep], second[keep]
        found.append(np.stack([np.minimum(first, second), np.maximum(first, second)], axis=1))
    pairs = np.unique(np.concatenate(found), axis=0)
    value = np.empty(len(pairs), dtype=np.float32)
    for start in range(0, len(pairs), _REMEASURE_PAIRS):
        chunk = pairs[start:start + _REMEASURE_PAIRS]
        value[start:start + len(chunk)] = unshifted_similarities(rows[chunk[:, 0]], rows[chunk[:, 1]])
    return pairs[value >= NEIGHBOUR_FLOOR]


def block_pairs(native: np.ndarray, shapes: np.ndarray, *, queries: np.ndarray | None = None,
                common: np.ndarray | None = None) -> np.ndarray:
    """Index pairs (i < j) where the block at the centre of one's native patch appears, byte for
    byte, within a few pixels of the other's centre (close_look.block_keys): a
    lossless crop of a small picture and its original, which a one-pixel cut of a 25-pixel face
    moves too far for pHashes and thumbnails (8-14 bits; 0.82-0.95 alike unshifted). Centre keys
    in the sorted array `common` (close_look.common_centre_keys: held by many files) are left out.
    With a boolean `queries` mask, only the pairs with a queried end (a pair is found by its two
    files' bytes and `common` alone, so these are the full search's pairs there)."""
    everyone = np.arange(len(native))
    centre, shifted = block_keys(native, shapes, everyone)
    if common is not None and len(common):
        centre[np.isin(centre, common)] = 0
    owners = np.flatnonzero(centre)
    if queries is not None:
        # Queried centres looked up among every file's blocks, every centre among queried files' blocks.
        return np.unique(np.concatenate([_joined(centre, shifted, owners[queries[owners]], everyone),
                                         _joined(centre, shifted, owners, np.flatnonzero(queries))]), axis=0)
    return _joined(centre, shifted, owners, everyone)


def _joined(centre: np.ndarray, shifted: np.ndarray, owners: np.ndarray, holders: np.ndarray) -> np.ndarray:
    """Pairs (i < j, distinct, sorted) of an owner whose centre key is among a holder's shifted keys."""
    order = np.argsort(centre[owners], kind="stable")
    keys, owners = centre[owners][order], owners[order]
    looked_up = shifted[holders].ravel()
    start, stop = np.searchsorted(keys, looked_up, side="left"), np.searchsorted(keys, looked_up, side="right")
    counts = np.where(looked_up == 0, 0, stop - start)
    first = np.repeat(np.repeat(holders, shifted.shape[1]), counts)
    second = owners[np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts) + np.repeat(start, counts)]
    apart = first != second
    pairs = np.stack([np.minimum(first, second), np.maximum(first, second)], axis=1)[apart]
    return np.unique(np.concatenate([np.zeros((0, 2), dtype=np.int64), pairs]), axis=0)
