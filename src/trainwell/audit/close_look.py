"""The close look at a candidate pair the fine thumbnails find alike but not alike enough: native-resolution centre patches, else the detail thumbnails, at the smaller picture's resolution when sizes differ."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from trainwell.audit.similarity import DETAIL_CROPS, DETAIL_SIDE, LOW_CONTRAST, WORKING_SIDE, beyond_plane

# The native patch's side (pixels): the centre of the decoded picture, not resampled (576 bytes a file).
NATIVE_SIDE = 24
# Pictures whose sides differ by more than this (pixels) are not compared on their native patches:
# a crop of a few percent of a small picture cuts a pixel or two a side; a resize moves every pixel.
NATIVE_MAX_SIZE_DIFFERENCE = 4
# Native patches this alike are the same pixels up to brightness and contrast (a lossless crop reads
# 1.0), and that is the pair's similarity. Below it the detail thumbnails decide: native pixels put
# a re-encoded face at 0.97 (the blurred detail thumbnails at 0.999) and two corners of grey
# rectangles on black, different pictures, at 0.999; another writer's MNIST look-alike at most 0.986.
NATIVE_EXACT = 0.9995
# ... and only where the whole pictures are this alike on the detail thumbnails too (cropped MNIST
# digits and LFW faces: 0.996-0.999): what the patch does not show must agree as well.
EXACT_DETAIL_FLOOR = 0.99
# A centre block that this many files or more have at their centre says nothing of any pair of them
# (a mark every picture carries): block_pairs leaves it out, or its pairs grow with the square of
# their number (5,000 such pictures took 814 s where the audit took 4.6 s without the block search).
COMMON_BLOCK_FILES = 16
# ... and so is one this many files or more hold anywhere within reach of their centre: each of
# 5,000 pictures carrying one 14x14 emblem held its 48 off-centre blocks, each the centre of 15
# others (232 s). A block's pairs are then under 16 x 32, and the search's under 32 times its files.
COMMON_BLOCK_HOLDERS = 32


def native_patch(grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(patch, shape) of a grey uint8 image: its central NATIVE_SIDE x NATIVE_SIDE pixels as they
    are (a smaller side whole, the rest of the patch 0), flattened; and the image's (height, width)
    as uint32 (sides past 2^32 - 1 are clamped: such a picture is never compared on its patch)."""
    height, width = grey.shape[:2]
    rows, columns = min(NATIVE_SIDE, height), min(NATIVE_SIDE, width)
    top, left = (height - rows) // 2, (width - columns) // 2
    patch = np.zeros((NATIVE_SIDE, NATIVE_SIDE), dtype=np.uint8)
    patch[:rows, :columns] = grey[top:top + rows, left:left + columns]
    return patch.ravel(), np.minimum([height, width], np.iinfo(np.uint32).max).astype(np.uint32)


def _patch_sides(shapes: np.ndarray) -> np.ndarray:
    return np.minimum(shapes.astype(np.int64), NATIVE_SIDE)


def _covered(shapes: np.ndarray) -> np.ndarray:
    """Whether each picture's patch shows at least half of it: a centre alike says little of the
    rest (two 48x48 pictures of other strokes around one same 24x24 centre, crosses whose arms
    end outside it, were grouped when a quarter sufficed)."""
    return 2 * _patch_sides(shapes).prod(axis=1) >= shapes.astype(np.float64).prod(axis=1)


def _informative(patches: np.ndarray, sides: np.ndarray) -> np.ndarray:
    """Whether each patch (its sides' part) holds more than a tilted plane: what is left after its
    best-fitting plane spreads at least LOW_CONTRAST grey levels (two hazy skies correlate 0.999
    whatever they show; candidates.informative_rows says the same of fine thumbnails)."""
    found = np.zeros(len(patches), dtype=bool)
    for (rows, columns) in {tuple(side) for side in sides.tolist()}:
        which = np.flatnonzero((sides[:, 0] == rows) & (sides[:, 1] == columns))
        if rows >= 3 and columns >= 3:  # a plane fits any picture thinner than that
            pixels = patches[which].reshape(-1, NATIVE_SIDE, NATIVE_SIDE)[:, :rows, :columns]
            found[which] = beyond_plane(pixels, rows, columns) >= LOW_CONTRAST
    return found


def comparable(shapes: np.ndarray, patches: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Whether each index pair can be judged on its native patches: both patches show at least
    half of their picture (_covered), the pictures' sides differ by at most
    NATIVE_MAX_SIZE_DIFFERENCE pixels, and both patches are informative."""
    sides = _patch_sides(shapes)
    covers = _covered(shapes)
    near = (np.abs(shapes[first].astype(np.int64) - shapes[second].astype(np.int64)) <= NATIVE_MAX_SIZE_DIFFERENCE).all(1)
    able = covers[first] & covers[second] & near
    involved = np.unique(np.concatenate([first[able], second[able]]))
    informative = np.zeros(len(shapes), dtype=bool)
    informative[involved] = _informative(patches[involved], sides[involved])
    return able & informative[first] & informative[second]


# Pairs measured at once: two 1,024 x 576 float64 patches and their summed-area tables are ~20 MiB.
_NATIVE_CHUNK = 1024


def native_similarities(shapes: np.ndarray, patches: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """How alike the native patches of each index pair are, at most 1: the best, over whole-pixel
    shifts of up to one more than the pictures' size difference, of 1 minus half the mean squared
    difference of the overlapping pixels, each side centred and divided by its spread (at least
    LOW_CONTRAST), as the fine comparison measures. A lossless crop of a small picture is its
    original at some whole-pixel shift (1.0); re-encoded, brighter or contrast-changed copies reach
    0.995-0.999 on MNIST digits; another writer's look-alike, which the blurred 24-pixel thumbnails
    put at 0.997, at most 0.986. Pairs that are not `comparable` must not be asked.

    Each overlap's sums (of pixels, their squares and their products) are whole numbers, exact in
    float64: a pair measures the same bits in any batch, alone or among thousands."""
    sides = _patch_sides(shapes)
    best = np.full(len(first), -np.inf)
    reach = np.abs(shapes[first].astype(np.int64) - shapes[second].astype(np.int64)).max(axis=1, initial=0) + 1
    keys = np.concatenate([sides[first], sides[second], reach[:, None]], axis=1)
    for key in {tuple(row) for row in keys.tolist()}:
        which = np.flatnonzero((keys == key).all(axis=1))
        for start in range(0, len(which), _NATIVE_CHUNK):
            part = which[start:start + _NATIVE_CHUNK]
            best[part] = _best_shift(patches[first[part]], patches[second[part]], *key)
    return np.minimum(best, 1.0).astype(np.float32)


def _summed_areas(pictures: np.ndarray) -> np.ndarray:
    """(n, rows + 1, columns + 1) summed-area tables: [k, y, x] is the sum of pictures[k, :y, :x]."""
    table = np.zeros((len(pictures), pictures.shape[1] + 1, pictures.shape[2] + 1))
    table[:, 1:, 1:] = pictures.cumsum(axis=1).cumsum(axis=2)
    return table


def _window_sums(table: np.ndarray, top: int, bottom: int, left: int, right: int) -> np.ndarray:
    return table[:, bottom, right] - table[:, top, right] - table[:, bottom, left] + table[:, top, left]


def _best_shift(first: np.ndarray, second: np.ndarray, rows_a: int, columns_a: int, rows_b: int, columns_b: int,
                shift: int) -> np.ndarray:
    """native_similarities for patches of one pair of sizes: (n,) float64."""
    a = first.reshape(-1, NATIVE_SIDE, NATIVE_SIDE)[:, :rows_a, :columns_a].astype(np.float64)
    b = second.reshape(-1, NATIVE_SIDE, NATIVE_SIDE)[:, :rows_b, :columns_b].astype(np.float64)
    sums_a, squares_a = _summed_areas(a), _summed_areas(np.square(a))
    sums_b, squares_b = _summed_areas(b), _summed_areas(np.square(b))
    best = np.full(len(a), -np.inf)
    for down in range(-shift, shift + 1):
        for across in range(-shift, shift + 1):
            # a[y, x] against b[y + down, x + across], where both exist.
            top, bottom = max(0, -down), min(rows_a, rows_b - down)
            left, right = max(0, -across), min(columns_a, columns_b - across)
            count = (bottom - top) * (right - left)
            if 2 * count < min(rows_a * columns_a, rows_b * columns_b):
                continue  # under half the smaller patch overlaps: too little to judge by
            window_b = (top + down, bottom + down, left + across, right + across)
            mean_a = _window_sums(sums_a, top, bottom, left, right) / count
            mean_b = _window_sums(sums_b, *window_b) / count
            variance_a = np.maximum(_window_sums(squares_a, top, bottom, left, right) / count - mean_a ** 2, 0.0)
            variance_b = np.maximum(_window_sums(squares_b, *window_b) / count - mean_b ** 2, 0.0)
            products = np.einsum("kij,kij->k", a[:, top:bottom, left:right],
                                 b[:, window_b[0]:window_b[1], window_b[2]:window_b[3]]) / count
            spread_a = np.maximum(np.sqrt(variance_a), LOW_CONTRAST)
            spread_b = np.maximum(np.sqrt(variance_b), LOW_CONTRAST)
            # mean((u/su - v/sv)^2) of the centred windows u, v, expanded.
            difference = (variance_a / spread_a ** 2 + variance_b / spread_b ** 2
                          - 2 * (products - mean_a * mean_b) / (spread_a * spread_b))
            np.maximum(best, 1.0 - 0.5 * difference, out=best)
    return best


# A block of this side (pixels) at the centre of each native patch is looked up, byte for byte,
# among another patch's blocks shifted up to _BLOCK_REACH pixels each way: a lossless crop of a
# small picture cut 0-3 pixels a side holds its original's centre block within that reach.
_BLOCK = 8
_BLOCK_REACH = 3
_SHIFTS = [(down, across) for down in range(-_BLOCK_REACH, _BLOCK_REACH + 1)
           for across in range(-_BLOCK_REACH, _BLOCK_REACH + 1)]


def _keys(blocks: np.ndarray) -> np.ndarray:
    """A 64-bit key per (n, _BLOCK, _BLOCK) block, never 0 (FNV-style mixing of its eight 64-bit
    words; a collision only adds a candidate for the confirmation to refuse)."""
    words = np.ascontiguousarray(blocks, dtype=np.uint8).reshape(len(blocks), _BLOCK * _BLOCK).view(np.uint64)
    mixed = np.full(len(blocks), 0xCBF29CE484222325, dtype=np.uint64)
    for word in words.T:
        mixed = (mixed ^ word) * np.uint64(0x100000001B3)
    return mixed | np.uint64(1)


_CENTRE = _SHIFTS.index((0, 0))


def block_keys(native: np.ndarray, shapes: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(centre, shifted) keys of each listed patch. `shifted` is (len(rows), 49): the keys of its
    blocks `down`, `across` pixels (each -3..3) from its centre block, 0 where that block leaves
    the part of the patch that shows the picture or the patch shows under half of it (_covered).
    `centre` is the unshifted one, 0 also where that block holds no more than a tilted plane (black
    MNIST background and clear sky are shared by thousands of unrelated pictures). Each block is
    cut and keyed once, a slice per patch size."""
    sides = _patch_sides(shapes[rows])
    covered = _covered(shapes[rows])
    shifted = np.zeros((len(rows), len(_SHIFTS)), dtype=np.uint64)
    informative = np.zeros(len(rows), dtype=bool)
    patches = native[rows].reshape(len(rows), NATIVE_SIDE, NATIVE_SIDE)
    for (height, width) in {tuple(side) for side in sides.tolist()}:
        which = np.flatnonzero((sides[:, 0] == height) & (sides[:, 1] == width) & covered)
        for index, (down, across) in enumerate(_SHIFTS):
            top, left = height // 2 - _BLOCK // 2 + down, width // 2 - _BLOCK // 2 + across
            if len(which) and top >= 0 and left >= 0 and top + _BLOCK <= height and left + _BLOCK <= width:
                blocks = patches[which, top:top + _BLOCK, left:left + _BLOCK]
                shifted[which, index] = _keys(blocks)
                if index == _CENTRE:
                    informative[which] = beyond_plane(blocks, _BLOCK, _BLOCK) >= LOW_CONTRAST
    return np.where(informative, shifted[:, _CENTRE], np.uint64(0)), shifted


def common_centre_keys(native: np.ndarray, shapes: np.ndarray) -> np.ndarray:
    """The centre keys (block_keys) that COMMON_BLOCK_FILES or more of these files have at their
    centre, or COMMON_BLOCK_HOLDERS or more hold within reach of it, sorted. The audit
    finds them over every decoded file, so whether a pair is a block candidate depends on the pair
    and this set alone (the audit cache keeps its digest: another set, another search)."""
    everyone = np.arange(len(native))
    centre, shifted = block_keys(native, shapes, everyone)
    owned, owners = np.unique(centre[centre != 0], return_counts=True)
    # Each file counted once per key it holds, whatever the shifts it holds it at.
    holding = np.unique(np.stack([np.repeat(everyone, shifted.shape[1]), shifted.ravel()], axis=1)[shifted.ravel() != 0],
                        axis=0)
    held, holders = np.unique(holding[:, 1], return_counts=True)
    crowded = np.zeros(len(owned), dtype=bool)
    where = np.asarray(np.searchsorted(held, owned))
    found = where < len(held)
    crowded[found] = (held[where[found]] == owned[found]) & (holders[where[found]] >= COMMON_BLOCK_HOLDERS)
    return owned[(owners >= COMMON_BLOCK_FILES) | crowded]


def share_a_block(native: np.ndarray, shapes: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Whether, for each index pair, either's centre key is among the other's shifted keys."""
    involved, inverse = np.unique(np.concatenate([first, second]), return_inverse=True)
    centre, shifted = block_keys(native, shapes, involved)
    one, other = inverse[:len(first)], inverse[len(first):]
    return (((centre[one] != 0) & (shifted[other] == centre[one][:, None]).any(axis=1)) |
            ((centre[other] != 0) & (shifted[one] == centre[other][:, None]).any(axis=1)))


# Under this spread (grey levels) a fine thumbnail is nearly blank (a speck, a dot, a two-level
# step, JPEG noise) and holds little but the brightness the other measures even out: two-level
# steps of greys 1 to 255 made a 614-file group. At 3 the real sets lose 3 brightened copies of
# 1,200 planted on faces and photograph tiles; at LOW_CONTRAST (8) about 23.
NEAR_BLANK_SPREAD = 3.0


def blanks_apart(first: np.ndarray, second: np.ndarray, limit: float) -> np.ndarray:
    """Per pair of fine thumbnails: either nearly blank (NEAR_BLANK_SPREAD) and their mean
    brightness more than `limit` grey levels apart, so not copies (a brightened blank is another
    blank). Either, not both: a picture just past the cut must not pair with one just under it
    across greys (two 101-file groups of mixed steps spanned 13 grey levels when both had to be)."""
    values_first, values_second = first.astype(np.float32), second.astype(np.float32)
    blank = (values_first.std(axis=1) < NEAR_BLANK_SPREAD) | (values_second.std(axis=1) < NEAR_BLANK_SPREAD)
    return blank & (np.abs(values_first.mean(axis=1) - values_second.mean(axis=1)) > limit)


@dataclass(frozen=True)
class CloseLook:
    """Every file's detail thumbnail and, when the audit gives them, native patch and image shape:
    what decides a pair the fine thumbnails find alike but not alike enough (near_duplicates.scored)
    and what its rivals are measured on (near_duplicates.nearest_rivals)."""

    detail: np.ndarray  # (n, DETAIL_SIDE^2) uint8
    native: np.ndarray | None = None  # (n, NATIVE_SIDE^2) uint8, native_patch's
    shape: np.ndarray | None = None  # (n, 2) uint32 image (height, width)

    def __getitem__(self, rows: np.ndarray) -> CloseLook:
        return CloseLook(self.detail[rows], None if self.native is None else self.native[rows],
                         None if self.shape is None else self.shape[rows])

    def columns(self) -> list[np.ndarray]:
        """Its per-file columns as uint8 rows (for telling identical files apart)."""
        extra = [] if self.native is None or self.shape is None else [self.native, np.ascontiguousarray(self.shape).view(np.uint8)]
        return [self.detail, *extra]

    def detail_of(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """Similarity of each index pair on the detail thumbnails, read as crops of each other
        (similarity.DETAIL_CROPS); where the shapes are known and a pair's differ (_bands), the
        better of that and its similarity at the smaller picture's resolution (band_matched), its
        distance there divided by BAND_DISTANCE_SHARE. The better of the two: the map shrinks as
        an area resize does, and a copy shrunk sharper (Lanczos, nearest) can be closer unmapped
        (a three-quarter-size Lanczos copy of an MNIST digit: 0.9985 unmapped, 0.9953 mapped)."""
        found = DETAIL_CROPS.of_pairs(self.detail, first, second)
        if self.shape is None:
            return found
        banded = np.flatnonzero(_bands(self.shape, first, second).any(axis=1))
        if len(banded):
            thumbnails, one, other = band_matched(self.detail, self.shape, first[banded], second[banded])
            mapped = DETAIL_CROPS.of_pairs(thumbnails, one, other)
            # On the scale of the thumbnails as they are (BAND_DISTANCE_SHARE), and never below it.
            found[banded] = np.maximum(found[banded], 1.0 - (1.0 - mapped) / BAND_DISTANCE_SHARE)
        return found

    def exact(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """Native similarity of each index pair where the two share a centre block byte for byte
        (share_a_block), are comparable on their native patches and reach NATIVE_EXACT there (the
        same pixels, up to brightness and contrast, at a whole-pixel shift), and the whole
        pictures reach EXACT_DETAIL_FLOOR on the detail thumbnails; else -inf."""
        found = np.full(len(first), -np.inf, dtype=np.float32)
        if self.native is not None and self.shape is not None and len(first):
            # Only pairs sharing a centre block byte for byte can be exact (and the few are cheap).
            which = np.flatnonzero(share_a_block(self.native, self.shape, first, second))
            which = which[comparable(self.shape, self.native, first[which], second[which])]
            native = native_similarities(self.shape, self.native, first[which], second[which])
            which, native = which[native >= NATIVE_EXACT], native[native >= NATIVE_EXACT]
            alike = self.detail_of(first[which], second[which]) >= EXACT_DETAIL_FLOOR
            found[which[alike]] = native[alike]
        return found

    def of_pairs(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """Similarity of each index pair: the native one where exact, else the detail one."""
        exact = self.exact(first, second)
        return np.where(np.isfinite(exact), exact, self.detail_of(first, second)).astype(np.float32)


def close_look(detail: np.ndarray | CloseLook | None) -> CloseLook | None:
    """A CloseLook of a bare detail-thumbnail array (no native patches), or as given."""
    return detail if detail is None or isinstance(detail, CloseLook) else CloseLook(detail)


# A pair compared at the smaller picture's resolution (band_matched) has fewer pixels to differ on:
# its distance (1 - similarity) there is divided by this share, so the distinctive bar (0.995) asks
# it for 0.99625. On 1,500 generated glyphs (one character, font, weight and place drawn anew each,
# no copies) at random sizes of 4-40 pixels, groups the thumbnails as they are did not make: 4 at a
# share of 1, 1 at 0.75, 1 at 0.5; of 106 half- and three-quarter-size MNIST copies found: 95, 95, 86.
BAND_DISTANCE_SHARE = 0.75
# A pair with a side under this (pixels) is not compared at the smaller picture's resolution: there
# two different writers' MNIST "1"s, one shrunk to 9-12 pixels a side, measured 0.999 alike with
# no other "1" as close (0.978 on the thumbnails as they are), and a 1x4 strip matched a 1x7.
MIN_BAND_SIDE = 14


def _bands(shapes: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """(n, 4) the side each index pair's first end (rows, columns), then its second end (rows,
    columns), is brought to (_band_matrix): along an axis where the two pictures' sides differ by
    more than NATIVE_MAX_SIZE_DIFFERENCE and the smaller is under DETAIL_SIDE, the larger end goes
    to the smaller's side, unless a side of either is under MIN_BAND_SIDE; 0 elsewhere (the
    thumbnail as it is).

    A difference of a few pixels is a crop's (a 25-pixel face cut by a pixel a side), which the
    crop-tolerant comparison reads as it is: mapping it lost one of LFW's planted crops in 40. The
    smaller end is never mapped: its thumbnail already shows what its pixels hold, and mapping it
    too blurred it a second time (the map is not idempotent), so its match was compared blurred
    and its rivals of its own size were not."""
    one, other = shapes[first].astype(np.int64), shapes[second].astype(np.int64)
    smaller = np.minimum(one, other)
    banded = ((np.abs(one - other) > NATIVE_MAX_SIZE_DIFFERENCE) & (smaller < DETAIL_SIDE)
              & (smaller.min(axis=1) >= MIN_BAND_SIDE)[:, None])
    return np.concatenate([np.where(banded & (one > other), smaller, 0),
                           np.where(banded & (other > one), smaller, 0)], axis=1)


@lru_cache(maxsize=64)
def _band_matrix(side: int) -> np.ndarray:
    """(DETAIL_SIDE, DETAIL_SIDE) float64, along one axis: a detail thumbnail shrunk to `side` pixels
    and made a detail thumbnail again as similarity.similarity_features makes one of a picture that
    small (area-resized to WORKING_SIDE, then to DETAIL_SIDE); the identity for 0. Each resize is
    linear, so resizing an identity matrix along that axis gives its matrix."""
    if side == 0:
        return np.eye(DETAIL_SIDE)

    def resized(source: int, target: int) -> np.ndarray:
        return cv2.resize(np.eye(source, dtype=np.float32), (source, target),
                          interpolation=cv2.INTER_AREA).astype(np.float64)

    return resized(WORKING_SIDE, DETAIL_SIDE) @ resized(side, WORKING_SIDE) @ resized(DETAIL_SIDE, side)


def band_matched(detail: np.ndarray, shapes: np.ndarray, first: np.ndarray,
                 second: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thumbnails, one, other): the index pairs' detail thumbnails, the larger picture of a pair
    of different sizes brought to the smaller one's resolution along each axis where _bands says
    so (_band_matrix), and each pair's rows in them.

    A picture's copy at half its size has lost the detail its original's thumbnail still holds: a
    half-size copy of an MNIST digit measured 0.989-0.997 against its original on the detail
    thumbnails, and another writer's digit stood as close to the copy (0.93-0.97), so the
    distinctive test refused four copies in five. At the copy's resolution the original gives back
    what the copy kept and no more. Which end is mapped depends on the sizes alone, so a pair
    measures the same either way round, and a file's rivals are measured as its matches are
    (near_duplicates.nearest_rivals)."""
    bands = _bands(shapes, first, second)
    count = len(first)
    # One row per (band, file) some pair needs: a file in many pairs at one band is mapped once.
    wanted = np.concatenate([np.column_stack([bands[:, :2], first]), np.column_stack([bands[:, 2:], second])])
    needed, where = np.unique(wanted, axis=0, return_inverse=True)
    where = where.reshape(-1)
    thumbnails = detail[needed[:, 2]]
    for rows, columns in {tuple(key) for key in needed[:, :2].tolist()} - {(0, 0)}:
        which = np.flatnonzero((needed[:, 0] == rows) & (needed[:, 1] == columns))
        pictures = thumbnails[which].reshape(-1, DETAIL_SIDE, DETAIL_SIDE).astype(np.float64)
        mapped = _band_matrix(rows) @ pictures @ _band_matrix(columns).T
        thumbnails[which] = np.clip(np.rint(mapped), 0, 255).astype(np.uint8).reshape(len(which), -1)
    return thumbnails, where[:count], where[count:]
