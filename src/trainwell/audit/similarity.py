"""Per-file perceptual hashes and thumbnails, the inputs of the near-duplicate search (near_duplicates.py)."""

from __future__ import annotations

import cv2
import numpy as np


def grey_of(image: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of an RGB uint8 image, uint8."""
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


# The side (pixels) of the area-resized copy every thumbnail and the pHash are made from.
WORKING_SIDE = 32
# The fine thumbnail's side (pixels): what confirms a pHash match (see fine_similarities).
FINE_SIDE = 16
# The detail thumbnail's side (pixels): what decides a pair neither clearly alike nor clearly not
# (detail_similarities): 576 bytes a file.
DETAIL_SIDE = 24
# Below this spread (standard deviation, grey levels) a fine thumbnail's differences are measured
# against this spread rather than its own: JPEG noise on a hazy sky is not a different picture, and
# near-uniform pictures pair only when they differ by a fraction of a grey level.
LOW_CONTRAST = 8.0


def similarity_features(grey: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pHash, fine thumbnail, detail thumbnail) of a grey uint8 image.

    The pHash is 64 bits as 8 packed bytes: signs of the lowest 8x8 DCT terms of the image's 32x32
    area-resized copy against their median. Robust to re-encoding, resizing and brightness, not to
    crops or rotations; it finds candidates. The fine thumbnail is the same 32x32 copy halved to
    16x16 grey (256 uint8 values): the finer measure a candidate must pass (fine_similarities),
    because different pictures of one simple shape (two people's "1"s) share a pHash. The detail
    thumbnail is the 32x32 copy at 24x24 (576 uint8 values): what decides the pairs the fine one
    finds alike but not alike enough (detail_similarities).
    """
    small = cv2.resize(grey, (WORKING_SIDE, WORKING_SIDE), interpolation=cv2.INTER_AREA).astype(np.float32)
    code = _phash(small)
    fine = cv2.resize(small, (FINE_SIDE, FINE_SIDE), interpolation=cv2.INTER_AREA)
    detail = cv2.resize(small, (DETAIL_SIDE, DETAIL_SIDE), interpolation=cv2.INTER_AREA)
    return code, _as_bytes(fine), _as_bytes(detail)


def beyond_plane(pictures: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """The spread (standard deviation, grey levels) of what is left of each flattened rows x columns
    uint8 picture after its best-fitting plane (brightness, left-right and top-down gradient).

    On a whole grid the plane's three terms are orthogonal, so the fit needs only each row's sum,
    sum of squares and two weighted sums, all whole numbers summed exactly in int64: a row's value
    is the same bits whatever other rows it is measured with (a float matrix product's last bit
    depended on them, so a picture at exactly 8.0 was informative alone and not among others)."""
    down, across = np.mgrid[0:rows, 0:columns]
    # Twice each pixel's offset from the centre: whole numbers.
    across2, down2 = (2 * across - (columns - 1)).ravel(), (2 * down - (rows - 1)).ravel()
    values = pictures.reshape(len(pictures), rows * columns).astype(np.int64)
    count = rows * columns
    total, squares = values.sum(axis=1), np.square(values).sum(axis=1)
    tilt_across, tilt_down = values @ across2, values @ down2  # int64 products: exact, no BLAS
    explained = (total.astype(np.float64) ** 2 / count
                 + (tilt_across.astype(np.float64) ** 2 / max(1, int(np.square(across2).sum())))
                 + (tilt_down.astype(np.float64) ** 2 / max(1, int(np.square(down2).sum()))))
    return np.sqrt(np.maximum(squares - explained, 0.0) / count)


def _as_bytes(thumbnail: np.ndarray) -> np.ndarray:
    """A float thumbnail rounded to uint8 grey levels, flattened."""
    return np.clip(np.rint(thumbnail), 0, 255).astype(np.uint8).ravel()


def _standardised(thumbnails: np.ndarray) -> np.ndarray:
    """Rows centred on their mean and divided by their spread (at least LOW_CONTRAST), as float32."""
    rows = thumbnails.astype(np.float32)
    rows -= rows.mean(axis=1, keepdims=True)
    rows /= np.maximum(rows.std(axis=1, keepdims=True), LOW_CONTRAST)
    return rows


def standardised(thumbnails: np.ndarray) -> np.ndarray:
    """Fine thumbnails centred and divided by their spread (at least LOW_CONTRAST), float32: the
    mean of two rows' product is their correlation, unshifted (a cheap first look for neighbours)."""
    return _standardised(thumbnails)


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


# The crops the crop hashes stand for, as fractions cut from (left, top, right, bottom): each
# corner's two sides, then all four. A copy cropped up to 3% a side lies within a few pHash bits
# of one of them (on 500 planted crops of MNIST digits, photographs and faces, 57-97% were within
# 5 bits of one of these, cut from a 128-pixel copy, where 28-75% were of the uncropped pHash).
CROP_PROBES = ((0.02, 0.02, 0.0, 0.0), (0.0, 0.02, 0.02, 0.0), (0.0, 0.0, 0.02, 0.02), (0.02, 0.0, 0.0, 0.02),
               (0.02, 0.02, 0.02, 0.02))


def _phash(small: np.ndarray) -> np.ndarray:
    """64 packed bits: signs of the lowest 8x8 DCT terms of a 32x32 float32 image against their median."""
    return _phash_bits(cv2.dct(small)[:8, :8].ravel())


def _phash_bits(low: np.ndarray) -> np.ndarray:
    # The DC term is the mean brightness: left out of the median so brightness does not bias it.
    # The median of the other 63 terms is the 32nd smallest (np.median costs 10x a partition here).
    return np.packbits(low > np.partition(low[1:], 31)[31])


def _interpolation(positions: np.ndarray, size: int) -> np.ndarray:
    """(len(positions), size) linear interpolation: row i reads the pixel grid at positions[i]
    (in pixels, centres at 0, 1, ...; clamped to the edge pixels)."""
    matrix = np.zeros((len(positions), size))
    clamped = np.clip(positions, 0.0, size - 1.0)
    low = np.minimum(size - 2, np.floor(clamped).astype(int))
    rows = np.arange(len(positions))
    matrix[rows, low] += low + 1 - clamped
    matrix[rows, low + 1] += clamped - low
    return matrix


def _cropped_positions(first_cut: float, last_cut: float, size: int) -> np.ndarray:
    """Where, in a picture's pixels along one axis, each of `size` pixels of its crop lies (the crop
    shows [first_cut, 1 - last_cut] of the side, stretched back to `size` pixels)."""
    return (first_cut + (np.arange(size) + 0.5) / size * (1 - first_cut - last_cut)) * size - 0.5


def _probe_matrices() -> tuple[np.ndarray, np.ndarray]:
    """Per probe, (8, 32) maps from the 32x32 copy to the lowest 8 DCT terms of its crop, for rows
    and for columns: low = rows @ small @ columns.T, cv2.dct's orthonormal DCT-II of the crop."""
    side = WORKING_SIDE
    dct = np.cos(np.pi * (2 * np.arange(side) + 1) * np.arange(8)[:, None] / (2 * side)) * np.sqrt(2 / side)
    dct[0] /= np.sqrt(2)
    rows = [dct @ _interpolation(_cropped_positions(top, bottom, side), side) for _, top, _, bottom in CROP_PROBES]
    columns = [dct @ _interpolation(_cropped_positions(left, right, side), side) for left, _, right, _ in CROP_PROBES]
    return np.stack(rows).astype(np.float32), np.stack(columns).astype(np.float32)


_PROBE_ROWS, _PROBE_COLUMNS = _probe_matrices()


def crop_hashes(grey: np.ndarray) -> np.ndarray:
    """pHashes of the image cropped as CROP_PROBES says, (len(CROP_PROBES), 8) uint8.

    pHash moves more than a search can afford under a crop of a few percent (the picture shifts
    and stretches under its 32x32 grid). A cropped copy's pHash is instead close to one of these
    crops of its original, so they are searched against every file's pHash (near_duplicates.py).
    Each crop is read off the pHash's own 32x32 copy (bilinear: the 8x8 lowest terms barely see
    the difference) by two small matrix products: 65-140 us a file, about what similarity_features
    costs, where cutting each from a 128-pixel copy took 820-950 us (and found one crop more in 40).
    """
    small = cv2.resize(grey, (WORKING_SIDE, WORKING_SIDE), interpolation=cv2.INTER_AREA).astype(np.float32)
    probes = len(CROP_PROBES)
    rows = (_PROBE_ROWS.reshape(probes * 8, WORKING_SIDE) @ small).reshape(probes, 8, WORKING_SIDE)  # one product for all
    lows = np.einsum("pik,pjk->pij", rows, _PROBE_COLUMNS).reshape(probes, 64)
    # As _phash_bits, for every probe at once.
    return np.packbits(lows > np.partition(lows[:, 1:], 31, axis=1)[:, 31:32], axis=1)


class CropTolerance:
    """A crop-tolerant comparison of square grey thumbnails of one side (see crop_tolerant_similarities).

    Each thumbnail is read as the other cut by each of `cuts` (fractions of the side) at each of
    its four sides, resampled onto the other's grid, both blurred alike (Gaussian, `sigma` pixels),
    and compared on all but `margin` pixels at each edge (a cut moves the edge), as
    fine_similarities compares: 1 minus half the mean squared difference of the standardised
    pixels, the best of every crop kept. Each distinct thumbnail is warped and blurred once,
    however many pairs it is in.
    """

    def __init__(self, *, side: int, cuts: tuple[float, ...], sigma: float, margin: int, chunk: int) -> None:
        self.side, self.margin, self.chunk = side, margin, chunk  # chunk: pairs (and copies) per step
        self.blur = _blur_matrix(side, sigma)
        # Every cut pair along one axis, blurred after resampling: (cuts^2, side, side).
        maps = np.stack([self.blur @ _cut_matrix(side, first, last) for first in cuts for last in cuts])
        self.inner = slice(margin, side - margin)
        # Only the output pixels compared, every cut pair's map stacked: (cuts^2 x inner, side).
        self.inner_maps = maps[:, self.inner, :].reshape(-1, side)  # float64: see _crops
        self.maps = len(maps)
        self.blur = self.blur.astype(np.float32)

    def _targets(self, originals: np.ndarray) -> np.ndarray:
        """The inner pixels of each blurred original, standardised: (n, inner^2) float32."""
        blurred = self.blur @ originals @ self.blur.T
        return _standardised(blurred[:, self.inner, self.inner].reshape(len(originals), -1))

    def _crops(self, copies: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each copy read as its original cut by every cut pair on each axis: the warped inner
        pixels (n, cuts^4, inner^2) and their variance (n, cuts^4), float32.

        Both axes' resampling are single matrix products over the whole chunk (numpy's stacked
        products of small matrices ran one small product per copy, 20x slower). Their sums run in
        float64: BLAS sums a row in an order that depends on the matrix it sits in, so in float32
        a copy warped beside other copies differed from itself warped alone in the last bit (43 of
        43 tried), and a full and an incremental audit could decide a pair at a bar differently.
        In float64 those differences are far below float32's rounding of the result."""
        count, side, inner, maps = len(copies), self.side, self.side - 2 * self.margin, self.maps
        # Centred on mid-grey (each map's weights sum to 1, so it shifts every crop alike): the mean
        # square below then loses no float32 precision to a large mean.
        centred = copies.reshape(count * side, side).astype(np.float64) - 128
        across = centred @ self.inner_maps.T  # columns: (n x side rows, maps x inner)
        across = across.reshape(count, side, maps * inner).transpose(1, 0, 2).reshape(side, -1)
        warped = (self.inner_maps @ across).reshape(maps, inner, count, maps, inner)  # rows too
        warped = np.ascontiguousarray(warped.transpose(2, 0, 3, 1, 4), dtype=np.float32).reshape(
            count, maps * maps, inner * inner)
        mean = warped.mean(axis=2)
        variance = np.maximum(np.square(warped).mean(axis=2) - np.square(mean), 0.0)
        return warped, variance

    def _as_cropped_from(self, targets: np.ndarray, copies: np.ndarray, original: np.ndarray,
                         copy: np.ndarray) -> np.ndarray:
        """Best similarity of copies[copy[k]] read as targets' original original[k] cropped, for every pair k.

        A file in many pairs (look-alike shapes: 4,820 pairs among ~1,450 files on the demo) is
        warped once, not once a pair: copies are warped `chunk` at a time, each with all its pairs.
        fine_similarities' 1 - mean((w - t)^2) / 2, w the warped crop standardised, comes from three
        sums over the raw crops (mean, mean square, product with t) instead of standardising every crop a pair.
        """
        best = np.empty(len(copy), dtype=np.float32)
        order = np.argsort(copy, kind="stable")
        bounds = np.searchsorted(copy[order], np.arange(0, len(copies) + self.chunk, self.chunk))
        for group, start in enumerate(range(0, len(copies), self.chunk)):
            members = order[bounds[group]:bounds[group + 1]]
            if not len(members):
                continue  # no pair reads these files as copies: nothing to warp
            warped, variance = self._crops(copies[start:start + self.chunk])
            spread = np.maximum(np.sqrt(variance), LOW_CONTRAST)
            for offset in range(0, len(members), self.chunk):
                pairs = members[offset:offset + self.chunk]
                local, target = copy[pairs] - start, targets[original[pairs]]
                product = (warped[local] @ target[:, :, None])[:, :, 0] / target.shape[1]  # mean(x t); t has mean 0
                squared_difference = (variance[local] / np.square(spread[local]) + np.square(target).mean(axis=1)[:, None]
                                      - 2 * product / spread[local])
                best[pairs] = np.minimum(1 - 0.5 * squared_difference.min(axis=1), 1.0)  # float32 sums may pass 1 by 1e-5
        return best

    def __call__(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """Similarity of each pair (first[i], second[i]) of (n, side^2) thumbnails, at most 1."""
        count = len(first)
        if count == 0:
            return np.zeros(0, dtype=np.float32)
        rows = np.concatenate([first.reshape(count, -1), second.reshape(count, -1)])
        distinct, inverse = np.unique(rows, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        return self._compared(distinct, inverse[:count], inverse[count:])

    def of_pairs(self, thumbnails: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """As calling it with thumbnails[first] and thumbnails[second], for index arrays: each file
        is then warped once by its index (sorting 576-byte rows to find the distinct ones cost
        more than comparing them: 5 s of 10 on 5,000 MNIST digits)."""
        count = len(first)
        if count == 0:
            return np.zeros(0, dtype=np.float32)
        used, inverse = np.unique(np.concatenate([first, second]), return_inverse=True)
        return self._compared(thumbnails[used], inverse[:count], inverse[count:])

    def _compared(self, distinct: np.ndarray, one: np.ndarray, other: np.ndarray) -> np.ndarray:
        """Similarity of each pair (distinct[one[i]], distinct[other[i]])."""
        images = distinct.reshape(-1, self.side, self.side).astype(np.float32)
        targets = np.concatenate([self._targets(images[start:start + self.chunk])
                                  for start in range(0, len(images), self.chunk)])
        # Both orders in one pass, so each distinct thumbnail is warped once, whichever side it is on.
        both = self._as_cropped_from(targets, images, np.concatenate([one, other]), np.concatenate([other, one]))
        return np.maximum(both[:len(one)], both[len(one):])


def _blur_matrix(side: int, sigma: float) -> np.ndarray:
    """(side, side) 1-D Gaussian blur (3 pixels each way) with the edge pixel repeated, as a matrix (rows: output pixels)."""
    offsets = np.arange(-3, 4)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    weights /= weights.sum()
    matrix = np.zeros((side, side))
    for row in range(side):
        for offset, weight in zip(offsets, weights):
            matrix[row, min(side - 1, max(0, row + offset))] += weight
    return matrix


def _cut_matrix(side: int, first_cut: float, last_cut: float) -> np.ndarray:
    """(side, side) linear interpolation that maps a copy cut by these fractions at its two ends back
    onto its original's pixel grid (edges repeated), along one axis."""
    # Original pixel i (centre at (i + 0.5) / side of the side) is where the copy shows it, if it does.
    where = ((np.arange(side) + 0.5) / side - first_cut) / (1 - first_cut - last_cut) * side - 0.5
    return _interpolation(where, side)


# On the 16x16 fine thumbnails: cut 0 to 3% a side (as far as a crop "of a few percent" goes),
# blurred by 0.6 pixel so a stroke resampled a third of a pixel off still overlaps itself, the
# central 12x12 compared (a 3% cut moves the edge by half a pixel). 512 pairs x 81 crops x 144
# pixels as float32 is 24 MiB a step.
FINE_CROPS = CropTolerance(side=FINE_SIDE, cuts=(0.0, 0.015, 0.03), sigma=0.6, margin=2, chunk=512)
# On the 24x24 detail thumbnails: cut 0 to 4% a side in 2% steps (a 1-pixel cut of a 25- or
# 28-pixel picture is 3.6-4%), blurred by 0.8 pixel, the central 20x20 compared. At 24 pixels a
# cropped copy of a handwritten digit is told from another writer's look-alike where 16 cannot:
# on 200 planted copies of 5,331 MNIST digits, 88% of crops passed the distinctive test against
# their 10 nearest files (45% at 16), and still no clean pair did. 256 pairs x 81 x 400 x 4 B: 32 MiB.
DETAIL_CROPS = CropTolerance(side=DETAIL_SIDE, cuts=(0.0, 0.02, 0.04), sigma=0.8, margin=2, chunk=256)


def crop_tolerant_similarities(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """How alike pairs of fine thumbnails are when either may be the other cropped up to 3% a side.

    The fine comparison (fine_similarities) shifts by whole pixels of the 16x16 thumbnail; a crop
    shifts and stretches by fractions of one, and a digit's stroke 1.5 pixels wide then matches
    itself no better than another writer's. Here each is read as the other cut by 0, 1.5 or 3% at
    each of its four sides (81 crops, both orders; CropTolerance), and the best kept.
    """
    return FINE_CROPS(first, second)


def detail_similarities(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """How alike pairs of 24x24 detail thumbnails are, either read as the other cropped 0, 2 or 4%
    a side (CropTolerance): what decides a pair the fine thumbnails call alike but not alike enough."""
    return DETAIL_CROPS(first, second)
