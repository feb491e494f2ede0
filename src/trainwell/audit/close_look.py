"""The close look at a candidate pair the fine thumbnails find alike but not alike enough: native-resolution centre patches, else the detail thumbnails."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainwell.audit.similarity import DETAIL_CROPS, LOW_CONTRAST, beyond_plane

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
    """Whether each index pair can be judged on its native patches: both patches show at least a
    quarter of their picture (a centre alike says little of a large picture), the pictures' sides
    differ by at most NATIVE_MAX_SIZE_DIFFERENCE pixels, and both patches are informative."""
    sides = _patch_sides(shapes)
    covers = 4 * sides.prod(axis=1) >= shapes.astype(np.float64).prod(axis=1)
    near = (np.abs(shapes[first].astype(np.int64) - shapes[second].astype(np.int64)) <= NATIVE_MAX_SIZE_DIFFERENCE).all(1)
    able = covers[first] & covers[second] & near
    involved = np.unique(np.concatenate([first[able], second[able]]))
    informative = np.zeros(len(shapes), dtype=bool)
    informative[involved] = _informative(patches[involved], sides[involved])
    return able & informative[first] & informative[second]


def native_similarities(shapes: np.ndarray, patches: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """How alike the native patches of each index pair are, at most 1: the best, over whole-pixel
    shifts of up to one more than the pictures' size difference, of 1 minus half the mean squared
    difference of the overlapping pixels, each side centred and divided by its spread (at least
    LOW_CONTRAST), as the fine comparison measures. A lossless crop of a small picture is its
    original at some whole-pixel shift (1.0); re-encoded, brighter or contrast-changed copies reach
    0.995-0.999 on MNIST digits; another writer's look-alike, which the blurred 24-pixel thumbnails
    put at 0.997, at most 0.986. Pairs that are not `comparable` must not be asked."""
    sides = _patch_sides(shapes)
    best = np.full(len(first), -np.inf)
    reach = np.abs(shapes[first].astype(np.int64) - shapes[second].astype(np.int64)).max(axis=1, initial=0) + 1
    keys = np.concatenate([sides[first], sides[second], reach[:, None]], axis=1)
    for key in {tuple(row) for row in keys.tolist()}:
        which = np.flatnonzero((keys == key).all(axis=1))
        (rows_a, columns_a, rows_b, columns_b, shift) = key
        a = patches[first[which]].reshape(-1, NATIVE_SIDE, NATIVE_SIDE).astype(np.float64)
        b = patches[second[which]].reshape(-1, NATIVE_SIDE, NATIVE_SIDE).astype(np.float64)
        for down in range(-shift, shift + 1):
            for across in range(-shift, shift + 1):
                # a[y, x] against b[y + down, x + across], where both exist.
                top, bottom = max(0, -down), min(rows_a, rows_b - down)
                left, right = max(0, -across), min(columns_a, columns_b - across)
                if 2 * (bottom - top) * (right - left) < min(rows_a * columns_a, rows_b * columns_b):
                    continue  # under half the smaller patch overlaps: too little to judge by
                mine = _standardised(a[:, top:bottom, left:right])
                theirs = _standardised(b[:, top + down:bottom + down, left + across:right + across])
                best[which] = np.maximum(best[which], 1.0 - 0.5 * np.square(mine - theirs).mean(axis=1))
    return np.minimum(best, 1.0).astype(np.float32)


def _standardised(windows: np.ndarray) -> np.ndarray:
    rows = windows.reshape(len(windows), -1)
    rows = rows - rows.mean(axis=1, keepdims=True)
    return rows / np.maximum(rows.std(axis=1, keepdims=True), LOW_CONTRAST)


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
        (similarity.DETAIL_CROPS)."""
        return DETAIL_CROPS.of_pairs(self.detail, first, second)

    def exact(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """Native similarity of each index pair where the pair is comparable on its native patches
        and reaches NATIVE_EXACT (the same pixels, up to brightness and contrast, at a whole-pixel
        shift), else -inf."""
        found = np.full(len(first), -np.inf, dtype=np.float32)
        if self.native is not None and self.shape is not None and len(first):
            which = np.flatnonzero(comparable(self.shape, self.native, first, second))
            native = native_similarities(self.shape, self.native, first[which], second[which])
            found[which] = np.where(native >= NATIVE_EXACT, native, -np.inf)
        return found

    def of_pairs(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """Similarity of each index pair: the native one where exact, else the detail one."""
        exact = self.exact(first, second)
        return np.where(np.isfinite(exact), exact, self.detail_of(first, second)).astype(np.float32)


def close_look(detail: np.ndarray | CloseLook | None) -> CloseLook | None:
    """A CloseLook of a bare detail-thumbnail array (no native patches), or as given."""
    return detail if detail is None or isinstance(detail, CloseLook) else CloseLook(detail)
