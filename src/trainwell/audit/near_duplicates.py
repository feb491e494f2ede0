"""Near-duplicate pairs and groups from per-file pHashes and thumbnails: the same picture re-encoded, resized or lightly edited."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainwell.audit.candidates import block_pairs, crop_pairs, neighbour_pairs
from trainwell.audit.close_look import CloseLook, blanks_apart, close_look, common_centre_keys
from trainwell.audit.hamming import hamming_pairs, pairs_in_ranges
from trainwell.audit.similarity import (
    FINE_CROPS,
    colour_differences,
    fine_similarities,
    standardised,
)
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
    # A pair failing both bars is still a near-duplicate when its similarity (the better of the two)
    # reaches this AND it is distinctive: its distance (1 - similarity) is at most distinctive_ratio
    # times that of either file's next-best candidate (see distinctive). Above 1: never.
    min_distinctive_similarity: float = 2.0
    distinctive_ratio: float = 0.2

    @property
    def rival_floor(self) -> float:
        """Below this similarity a pair can neither be a distinctive match nor stop one (a rival
        must be within 1/distinctive_ratio of the weakest distinctive match's distance)."""
        if self.min_distinctive_similarity > 1.0:
            return 2.0
        return 1.0 - (1.0 - self.min_distinctive_similarity) / self.distinctive_ratio


# A candidate this unlike on the fine comparison is not compared crop-tolerantly (81 crops each
# way cost ~10x the fine comparison): of 1,600 planted crops and resizes of photographs, faces,
# MNIST and scikit-learn digits, none it confirmed at 0.995 had a fine similarity below 0.907.
_CROP_FLOOR = 0.9


def similarities(fine: np.ndarray, first: np.ndarray, second: np.ndarray,
                 confirm: Confirm) -> tuple[np.ndarray, np.ndarray]:
    """(similarity, strong) of index pairs (first[i], second[i]) of fine thumbnails: strong when
    the fine similarity reaches confirm.min_similarity or, failing that, the crop-tolerant one
    reaches min_crop_similarity. The similarity is the fine one, or the crop-tolerant one where
    that was measured and higher (it is measured for pairs failing the fine bar, when a crop bar
    or distinctive matches are on)."""
    similarity = fine_similarities(fine[first], fine[second])
    strong = similarity >= confirm.min_similarity
    retry = np.flatnonzero(~strong & (similarity >= _CROP_FLOOR))
    if len(retry) and min(confirm.min_crop_similarity, confirm.min_distinctive_similarity) <= 1.0:
        cropped = FINE_CROPS.of_pairs(fine, first[retry], second[retry])
        strong[retry[cropped >= confirm.min_crop_similarity]] = True
        similarity[retry] = np.maximum(similarity[retry], cropped)
    return similarity, strong


# A candidate at least this alike on the fine thumbnails is measured on the detail ones (scored):
# planted crops of MNIST digits that reach 0.996-0.998 there score as low as 0.89 on the fine
# ones (a one-pixel cut of a 28-pixel digit moves its strokes half a thumbnail pixel).
_DETAIL_FLOOR = 0.88


def scored(pairs: np.ndarray, *, fine: np.ndarray, thumbnails: np.ndarray, confirm: Confirm,
           detail: np.ndarray | CloseLook | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(similarity, strong, kept) of candidate index pairs: `strong` passed the fine or crop bar
    and the colour comparison; `kept` is strong or, colours alike, at least confirm.rival_floor
    (a possible distinctive match, or a rival of one: what distinctive() needs).

    Given every file's `detail` thumbnail (the audit always gives it), a pair that is not strong
    and at least _DETAIL_FLOOR alike on the fine thumbnails is measured on those, and that is its
    similarity: the distinctive test then weighs a pair and its rivals at 24 pixels, where a
    cropped digit is told from a look-alike. (Requiring strong pairs to pass on them too grouped
    nothing less on the real sets, lost a third of JPEG copies of low-contrast tiles and measured
    every pair of 2,000 near-identical pictures: 3.3x the time.) Given the files' native patches
    too (a close_look.CloseLook), a pair that is not strong and is the same pixels at a
    whole-pixel shift there (CloseLook.exact) takes that similarity, whatever its fine one."""
    look = close_look(detail)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = [(np.zeros(0, np.float32), np.zeros(0, bool),
                                                                np.zeros(0, bool))]
    for offset in range(0, len(pairs), _THUMBNAIL_CHUNK):
        first, second = pairs[offset:offset + _THUMBNAIL_CHUNK].T
        similarity, strong = similarities(fine, first, second, confirm)
        # The same pixels at a whole-pixel shift, whatever the thumbnails say (a lossless crop of
        # a 25-pixel face can be 0.82 alike on them): -inf where the native patches cannot tell.
        exact = np.full(len(first), -np.inf, dtype=np.float32)
        if look is not None:
            weak = np.flatnonzero(~strong)
            exact[weak] = look.exact(first[weak], second[weak])
        # Colours first: a pair they refuse is never kept, whatever the detail thumbnails say
        # (on 12,000 drawn shapes, 149,000 candidates, most of them other colours).
        floor = confirm.rival_floor if look is None else min(confirm.rival_floor, _DETAIL_FLOOR)
        alike = strong | (similarity >= floor) | np.isfinite(exact)
        alike[alike] = colour_differences(thumbnails[first[alike]], thumbnails[second[alike]], fine[first[alike]],
                                          fine[second[alike]]) <= confirm.max_colour_difference
        alike[alike] = ~blanks_apart(fine[first[alike]], fine[second[alike]], confirm.max_colour_difference)
        if look is not None:
            looked = np.flatnonzero(alike & ~strong & (similarity >= _DETAIL_FLOOR))
            similarity[looked] = look.detail_of(first[looked], second[looked])
            similarity = np.where(np.isfinite(exact), exact, similarity)
        kept = alike & (strong | (similarity >= confirm.rival_floor))
        parts.append((similarity.astype(np.float32), strong & kept, kept))
    return tuple(np.concatenate(column) for column in zip(*parts))  # type: ignore[return-value]


def confirmed(pairs: np.ndarray, *, fine: np.ndarray, thumbnails: np.ndarray, confirm: Confirm) -> np.ndarray:
    """Which of the candidate index pairs pass the fine (or crop) and the colour comparison, a
    bool per pair: the near-duplicates that need no distinctiveness test."""
    return scored(pairs, fine=fine, thumbnails=thumbnails, confirm=confirm)[1]


def distinctive(pairs: np.ndarray, similarity: np.ndarray, strong: np.ndarray, confirm: Confirm,
                fine: np.ndarray | None = None, detail: np.ndarray | CloseLook | None = None) -> np.ndarray:
    """Which pairs are near-duplicates: the strong ones, and the others that reach
    confirm.min_distinctive_similarity and are clearly closer than either file's next-best
    candidate (a ratio test, as SIFT matching does): 1 - similarity at most
    confirm.distinctive_ratio x (1 - the rival's similarity), at both ends.

    pairs must hold every kept pair (scored) of the files involved: a rival is any other
    non-strong pair at that file (strong ones are its copies, not look-alikes). A look-alike
    among many (one writer's "1" among thousands) always has a close rival; a cropped copy of a
    photograph has none. The answer is a function of these pairs alone, so an incremental audit
    that merges its kept pairs with the fresh ones decides exactly as a full audit does, a new
    file that is a closer rival undoing a kept match, a removed one restoring it.

    Candidates come from hashes (and, in smaller sets, alike thumbnails), so a look-alike may have
    no candidate rival (two alike "1"s of scikit-learn's digits met only each other). Given every
    file's `fine` thumbnail, a match that passed is also tested against each end's nearest
    thumbnails (nearest_rivals, measured on the `detail` thumbnails when given, as scored measures
    weak pairs): the same decision for the same files, whatever was cached.
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    accepted = np.asarray(strong, dtype=bool).copy()
    if confirm.min_distinctive_similarity > 1.0 or len(pairs) == 0:
        return accepted
    value = np.asarray(similarity, dtype=np.float64)
    weak = np.flatnonzero(~accepted)
    ends = np.concatenate([pairs[weak, 0], pairs[weak, 1]])
    values = np.concatenate([value[weak], value[weak]])
    close = pairs[accepted | (value >= confirm.min_distinctive_similarity)]
    within = _within_own_gap(ends, np.concatenate([pairs[weak, 1], pairs[weak, 0]]), values, confirm=confirm,
                             close=close)
    distance = 1.0 - value[weak]
    passed = (value[weak] >= confirm.min_distinctive_similarity) & within[:len(weak)] & within[len(weak):]
    if fine is not None and passed.any():
        survivors = weak[passed]
        # Each end's own group (the matches before its gap) is left out of its rivals, as its copies are.
        rivals = nearest_rivals(pairs[survivors], fine, copies=np.concatenate([pairs[accepted], pairs[survivors]]),
                                detail=detail)
        passed[passed] = (distance[passed][:, None] <= confirm.distinctive_ratio * (1.0 - rivals)).all(axis=1)
    accepted[weak[passed]] = True
    return accepted


# The most matches a file can have before its gap (_within_own_gap): an original and up to this many copies.
_MAX_GROUP_MATCHES = 4


def _within_own_gap(ends: np.ndarray, others: np.ndarray, values: np.ndarray, *, confirm: Confirm,
                    close: np.ndarray) -> np.ndarray:
    """Per (end, other, similarity) entry: whether `other` is among `end`'s closest matches before
    a clear gap. A file's candidates sorted by similarity s_1 >= s_2 >= ... (distances d = 1 - s):
    its matches are the first k, for the smallest k <= _MAX_GROUP_MATCHES with s_k > s_k+1, d_k <=
    distinctive_ratio x d_k+1 and s_k >= min_distinctive_similarity; none when there is no such gap
    (a tie is never a gap, whatever the ratio: the answer must not depend on the pairs' order).
    k = 1 is the ratio test (a match clearly closer than the next-best); a larger k lets two or
    three copies of one picture, each as close to the others as to the original, match all
    together instead of each being the others' rival (the generalised 2NN test of copy-move
    detection, Amerini et al. 2011). Look-alikes among many have no such gap and match nothing.
    With k >= 2 the k must also be `close` to each other (index pairs, strong or at least
    min_distinctive_similarity), as copies of one picture are: a file between two that are not
    alike (a chain) matches neither.
    """
    files, ends = np.unique(ends, return_inverse=True)  # numbered densely: memory follows the pairs, not the ids
    count = len(files)
    order = np.lexsort((-values, ends))
    sorted_ends, sorted_values = ends[order], values[order]
    first = np.flatnonzero(np.diff(sorted_ends, prepend=-1) != 0)
    rank_sorted = np.arange(len(sorted_ends)) - np.repeat(first, np.diff(np.append(first, len(sorted_ends))))
    rank = np.empty(len(ends), dtype=np.int64)
    rank[order] = rank_sorted
    top = np.full((count, _MAX_GROUP_MATCHES + 1), -np.inf)
    shown = rank_sorted <= _MAX_GROUP_MATCHES
    top[sorted_ends[shown], rank_sorted[shown]] = sorted_values[shown]
    gap = np.zeros(count, dtype=np.int64)  # matches per file; 0: no gap
    for k in range(_MAX_GROUP_MATCHES, 0, -1):  # the smallest k with a gap wins
        found = ((1.0 - top[:, k - 1]) <= confirm.distinctive_ratio * (1.0 - top[:, k])) & \
            (top[:, k - 1] > top[:, k]) & (top[:, k - 1] >= confirm.min_distinctive_similarity)
        gap[found] = k
    inside = (rank_sorted < gap[sorted_ends]) & (gap[sorted_ends] >= 2)  # the matches of files with several
    if inside.any():
        alike = {(int(a), int(b)) for a, b in np.sort(np.asarray(close, dtype=np.int64).reshape(-1, 2), axis=1)}
        members: dict[int, list[int]] = {}
        for end, other in zip(sorted_ends[inside].tolist(), others[order][inside].tolist()):
            members.setdefault(end, []).append(other)
        for end, group in members.items():
            if any((min(a, b), max(a, b)) not in alike for index, a in enumerate(group) for b in group[index + 1:]):
                gap[end] = 0
    return rank < gap[ends]


# Nearest thumbnails (by unshifted correlation) compared as rivals of each end of a distinctive match.
_NEAREST = 8
# Ends x files correlated at most, 256 multiply-adds each: 1e8 took ~6 s of one core; past it the
# matches are refused, precision first (250,000 files afford 200 ends, 5,000 files 10,000).
_RIVAL_BUDGET = 100_000_000
# Files standardised and correlated at once: 16,384 x 256 float32 is 16 MB, and the correlations
# of 1,000 ends with them 64 MB (standardising every file at once: 1 GB at 1M files).
_FILE_BLOCK = 16_384


def _nearest_files(ends: np.ndarray, fine: np.ndarray, left_out: list[list[int]]) -> np.ndarray:
    """(len(ends), _NEAREST) rows of `fine` most alike unshifted with each end's (as neighbour_pairs
    measures: near-uniform rows are near each other, not near nothing), those in its left_out
    list excepted; -1 where fewer remain."""
    count = min(_NEAREST, len(fine))
    best_value = np.full((len(ends), count), -np.inf, dtype=np.float32)
    best_row = np.full((len(ends), count), -1, dtype=np.int64)
    mine = standardised(fine[ends])
    owners = np.repeat(np.arange(len(ends)), [len(rows) for rows in left_out])
    skipped = np.array([row for rows in left_out for row in rows], dtype=np.int64)
    for block in range(0, len(fine), _FILE_BLOCK):
        theirs = standardised(fine[block:block + _FILE_BLOCK])
        # 1 - mean squared difference / 2, less the end's own term (the same along its row).
        alike = mine @ theirs.T / theirs.shape[1] - 0.5 * np.square(theirs).mean(axis=1)
        inside = (skipped >= block) & (skipped < block + _FILE_BLOCK)
        alike[owners[inside], skipped[inside] - block] = -np.inf
        values = np.concatenate([best_value, alike], axis=1)
        rows = np.concatenate([best_row, np.broadcast_to(np.arange(block, block + alike.shape[1]),
                                                         alike.shape)], axis=1)
        top = np.argpartition(-values, count - 1, axis=1)[:, :count]
        best_value, best_row = np.take_along_axis(values, top, axis=1), np.take_along_axis(rows, top, axis=1)
    return np.where(np.isfinite(best_value), best_row, -1)


def nearest_rivals(matches: np.ndarray, fine: np.ndarray, *, copies: np.ndarray,
                   detail: np.ndarray | CloseLook | None = None) -> np.ndarray:
    """(n, 2) similarity of each end of each match to its closest other file among its _NEAREST
    nearest thumbnails, the partner and the end's or partner's strong partners (`copies`, pairs)
    left out; -inf where none is left, +inf (refused) past _RIVAL_BUDGET. The nearest are found on
    the fine thumbnails and measured on the `detail` ones when given (else fine and crop-tolerant)."""
    matches = np.asarray(matches, dtype=np.int64).reshape(-1, 2)
    if len(matches) * 2 * len(fine) > _RIVAL_BUDGET:
        return np.full(matches.shape, np.inf)
    partners: dict[int, set[int]] = {}
    for a, b in np.asarray(copies, dtype=np.int64).reshape(-1, 2).tolist():
        partners.setdefault(a, set()).add(b)
        partners.setdefault(b, set()).add(a)
    ends, others = matches.ravel(), matches[:, ::-1].ravel()
    left_out = [sorted({end, other, *partners.get(end, ()), *partners.get(other, ())})
                for end, other in zip(ends.tolist(), others.tolist())]
    nearest = _nearest_files(ends, fine, left_out)
    found = nearest >= 0
    which, rows = np.nonzero(found)
    similarity = np.full(nearest.shape, -np.inf)
    first, second = ends[which], nearest[which, rows]
    look = close_look(detail)
    if len(which) and look is not None:
        similarity[which, rows] = look.of_pairs(first, second)
    elif len(which):
        similarity[which, rows] = np.maximum(fine_similarities(fine[first], fine[second]),
                                             FINE_CROPS.of_pairs(fine, first, second))
    return similarity.max(axis=1).reshape(matches.shape)


def _bundles(codes: np.ndarray, columns: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Rows the search cannot tell apart (the same pHash AND the same per-file `columns`, uint8
    rows: thumbnails, patches) form one bundle: every pair inside a bundle is linked (distance 0,
    difference 0), and a bundle's members all link or all fail to link to another bundle's.
    Returns each row's bundle and each bundle's representative row.

    Blank or flat pictures often share a hash by the thousand; collapsing them first keeps the
    search and the thumbnail checks proportional to distinct pictures, not to their pairs.
    """
    _, code_of_row, code_counts = np.unique(codes, return_inverse=True, return_counts=True)
    label = np.arange(len(codes))
    shared = np.flatnonzero(code_counts[code_of_row.ravel()] > 1)
    if len(shared):
        # Only rows sharing a hash are compared byte for byte (a 200-byte sort costs ~4 us a row),
        # and only their columns are gathered (every row's would be 1.6 GB at 1M files).
        record = np.concatenate([codes[shared].view(np.uint8).reshape(-1, 8), *(column[shared] for column in columns)],
                                axis=1)
        record = np.ascontiguousarray(record).view(np.dtype((np.void, record.shape[1]))).ravel()
        _, first, inverse = np.unique(record, return_index=True, return_inverse=True)
        label[shared] = shared[first[inverse.ravel()]]
    representatives, bundle_of_row = np.unique(label, return_inverse=True)
    return bundle_of_row.ravel(), representatives


def _products(first_start: np.ndarray, first_size: np.ndarray, second_start: np.ndarray,
              second_size: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions (p, q) for every p in [first_start, +first_size) and q in [second_start,
    +second_size), for each entry of the four arrays; and the entry each pair came from."""
    products = first_size * second_size
    which = np.repeat(np.arange(len(products)), products)
    local = np.arange(int(products.sum())) - np.repeat(np.cumsum(products) - products, products)
    return first_start[which] + local // second_size[which], second_start[which] + local % second_size[which], which


@dataclass(frozen=True)
class Scored:
    """Candidate pairs worth keeping (scored's `kept`), with what distinctive() decides on."""

    pairs: np.ndarray  # (n, 2) int64, i < j, sorted
    similarity: np.ndarray  # float32 per pair
    strong: np.ndarray  # bool per pair: a near-duplicate whatever else there is
    fine: np.ndarray | None = None  # every file's fine thumbnail, for nearest_rivals
    detail: CloseLook | None = None  # every file's close look (detail thumbnails, native patches), for nearest_rivals

    def near_duplicates(self, confirm: Confirm) -> np.ndarray:
        """The pairs that are near-duplicates (distinctive), as an (n, 2) array."""
        return self.pairs[distinctive(self.pairs, self.similarity, self.strong, confirm, fine=self.fine,
                                      detail=self.detail)]


def scored_pairs(
    *,
    hashes: np.ndarray,
    crops: np.ndarray | None = None,
    fine: np.ndarray,
    thumbnails: np.ndarray,
    max_distance: int,
    confirm: Confirm,
    detail: np.ndarray | CloseLook | None = None,
    neighbours: bool = False,
    rows: np.ndarray | None = None,
    method: str = "auto",
    common_blocks: np.ndarray | None = None,
) -> Scored:
    """Every kept candidate pair (i < j; see scored) with its similarity and strength; with
    `rows`, only pairs that involve one of those indices; `common_blocks` are the centre keys the
    block search leaves out (close_look.common_centre_keys of every file; found here when not
    given). near_duplicate_pairs explains the search."""
    count = len(hashes)
    look = close_look(detail)
    empty = Scored(np.zeros((0, 2), dtype=np.int64), np.zeros(0, np.float32), np.zeros(0, bool), fine, look)
    asked = np.ones(count, dtype=bool)
    if rows is not None:
        asked[:] = False
        asked[np.asarray(rows, dtype=np.int64)] = True
    if count < 2 or max_distance < 0 or not asked.any():
        return empty
    if hashes.shape[1:] != (8,):
        raise ValueError(f"hashes must be 64-bit pHashes as (n, 8) uint8, not shape {hashes.shape}")
    codes = np.ascontiguousarray(hashes, dtype=np.uint8).view(np.uint64).ravel()
    # A bundle's rows must look the same to every measure that decides (the detail thumbnail too).
    bundle_of_row, representatives = _bundles(codes, [fine, thumbnails, *([] if look is None else look.columns())])
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
        bundle_pairs = np.unique(np.concatenate([bundle_pairs, crop_pairs(crops[representatives], codes[representatives],
                                                                        max_distance=max_distance,
                                                                        queries=None if rows is None else queried > 0)]),
                               axis=0)
    if neighbours:
        asking = None if rows is None else queried > 0
        more = [neighbour_pairs(fine[representatives], queries=asking)]
        if look is not None and look.native is not None and look.shape is not None:
            common = common_centre_keys(look.native, look.shape) if common_blocks is None else common_blocks
            more.append(block_pairs(look.native[representatives], look.shape[representatives], queries=asking,
                                    common=common))
        bundle_pairs = np.unique(np.concatenate([bundle_pairs, *more]), axis=0)
    similarity, strong, kept = scored(bundle_pairs, fine=fine[representatives], thumbnails=thumbnails[representatives],
                                      confirm=confirm, detail=None if look is None else look[representatives])
    first, second = bundle_pairs[kept].T
    similarity, strong = similarity[kept], strong[kept]
    # Across kept bundles: queried rows of the first with every row of the second, then the
    # unqueried rows of the first with the queried rows of the second.
    left_a, right_a, which_a = _products(starts[first], queried[first], starts[second], sizes[second])
    left_b, right_b, which_b = _products(starts[first] + queried[first], sizes[first] - queried[first],
                                         starts[second], queried[second])
    # Inside a bundle (identical pictures: similarity 1, strong): each queried row with every row after it.
    sources = np.flatnonzero(asked[order])
    bundle_end = np.repeat(starts + sizes, sizes)
    inside = list(pairs_in_ranges(sources, sources + 1, bundle_end[sources]))
    left = np.concatenate([order[left_a], order[left_b], *(order[positions] for positions, _ in inside)])
    right = np.concatenate([order[right_a], order[right_b], *(order[positions] for _, positions in inside)])
    within = len(left) - len(left_a) - len(left_b)
    values = np.concatenate([similarity[which_a], similarity[which_b], np.ones(within, np.float32)])
    strengths = np.concatenate([strong[which_a], strong[which_b], np.ones(within, bool)])
    # Sorted, as one int64 key per pair (i * count + j).
    keys, where = np.unique(np.minimum(left, right) * count + np.maximum(left, right), return_index=True)
    return Scored(np.stack([keys // count, keys % count], axis=1).astype(np.int64), values[where], strengths[where],
                  fine, look)


def near_duplicate_pairs(
    *,
    hashes: np.ndarray,
    crops: np.ndarray | None = None,
    fine: np.ndarray,
    thumbnails: np.ndarray,
    max_distance: int,
    confirm: Confirm,
    detail: np.ndarray | CloseLook | None = None,
    neighbours: bool = False,
    rows: np.ndarray | None = None,
    method: str = "auto",
) -> np.ndarray:
    """Index pairs (i < j) of near-duplicates, as an (n, 2) array sorted by i then j; with `rows`,
    only pairs that involve one of those indices (rivals are then judged among the pairs found:
    an incremental audit instead merges scored_pairs with its kept ones, see distinctive).

    A pair whose pHashes differ in at most `max_distance` bits is a candidate, not a verdict:
    different pictures of one simple shape share a pHash (452 different people's handwritten
    "1"s once chained into one group through their pHashes and 8x8 thumbnails). A candidate is a
    near-duplicate when it also passes `confirm`: its 16x16 grey thumbnails, aligned within a
    pixel, correlate at least `min_similarity` (or, read as crops of each other,
    `min_crop_similarity`; or it is a distinctive match, see distinctive), and its colour
    thumbnails, brightness and contrast evened out, differ by at most `max_colour_difference`
    (pHash sees only grey: a pink and a lilac circle share one). Near-uniform pictures correlate
    weakly with anything, so they never pair on their (noise-made) pHashes alone.

    The hash pairs come from hamming.hamming_pairs (multi-index tables, or every pair where
    that is cheaper; `method` forces one, for tests and benchmarks): 1,000,000 hashes take
    seconds, not the hours comparing every pair would. With `neighbours`, pairs whose fine
    thumbnails are alike unshifted are candidates too (neighbour_pairs: every pair compared, for
    sets small enough), whatever their hashes: a re-encoded low-contrast tile or a cropped face can
    move its pHash by 8-16 bits; so are pairs sharing a native centre block byte for byte, given
    the native patches (candidates.block_pairs: a lossless crop of a small picture). With `detail`
    (an array of detail thumbnails or a close_look.CloseLook), the pairs neither clearly alike nor
    clearly not are decided on the 24x24 detail thumbnails, or the native patches where those
    call the pair the same pixels (scored).
    """
    return scored_pairs(hashes=hashes, crops=crops, fine=fine, thumbnails=thumbnails, max_distance=max_distance,
                        confirm=confirm, detail=detail, neighbours=neighbours, rows=rows,
                        method=method).near_duplicates(confirm)


@dataclass(frozen=True)
class NearGroup:
    """Near-duplicates around one representative: every member passed the comparison with it."""

    representative: int
    members: list[int]  # sorted; the representative among them
    lowest_similarity: float  # the least alike member's fine similarity to the representative


def near_duplicate_groups(pairs: np.ndarray, *, count: int, fine: np.ndarray, confirm: Confirm | None = None,
                          similarity: np.ndarray | None = None) -> list[NearGroup]:
    """Groups that never chain, from near-duplicate index pairs among `count` rows.

    Linking pairs transitively once joined 452 different "1"s whose neighbours were each alike.
    Here each group is a representative with its partners (data.groups.star_groups): every member
    is a near-duplicate of the representative, not merely reachable through others. Given the
    `confirm` that found the pairs, a member confirmed as a crop counts its crop-tolerant similarity;
    given each pair's `similarity` (Scored's), that is what counts.
    """
    known = {} if similarity is None else dict(zip(map(tuple, np.asarray(pairs).tolist()), similarity.tolist()))
    groups = []
    for representative, members in star_groups(count, pairs):
        others = np.array([member for member in members if member != representative], dtype=np.int64)
        lower = np.minimum(others, representative)  # each pair measured as it was found: lower index first
        higher = np.maximum(others, representative)
        if known:
            lowest = min(known[(a, b)] for a, b in zip(lower.tolist(), higher.tolist()))
        else:
            lowest = float((fine_similarities(fine[lower], fine[higher]) if confirm is None else
                            similarities(fine, lower, higher, confirm)[0]).min())
        groups.append(NearGroup(representative, members, round(float(lowest), 4)))
    return groups
