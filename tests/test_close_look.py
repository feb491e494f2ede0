"""The close look at alike pairs: native-resolution centre patches that tell a lossless crop of a small picture from a look-alike."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tests.test_crop_duplicates import edited, features
from tests.test_distinctive_duplicates import DISTINCTIVE, POLICY, _write, audited_both_ways, crowded_stroke
from trainwell.audit import close_look
from trainwell.audit.close_look import (
    NATIVE_EXACT,
    NATIVE_MAX_SIZE_DIFFERENCE,
    NATIVE_SIDE,
    CloseLook,
    band_matched,
    comparable,
    native_patch,
    native_similarities,
    share_a_block,
)
from trainwell.audit.dataset import audit_dataset
from trainwell.audit.near_duplicates import distinctive, scored_pairs
from trainwell.audit.similarity import DETAIL_CROPS, similarity_features
from trainwell.params import AuditParams, DataParams


def patches_of(pictures) -> tuple[np.ndarray, np.ndarray]:
    """(native patches, shapes) of grey pictures, stacked as the audit's columns hold them."""
    patches, shapes = zip(*map(native_patch, pictures))
    return np.stack(patches), np.stack(shapes)


def marked_noise(rng: np.random.Generator, side: int, block: np.ndarray, top: int) -> np.ndarray:
    """A side x side noise picture carrying `block` with its top-left corner at (top, top)."""
    picture = rng.integers(0, 256, size=(side, side), dtype=np.uint8)
    picture[top:top + len(block), top:top + block.shape[1]] = block
    return picture


def odd_pictures(rng: np.random.Generator) -> list[np.ndarray]:
    """Grey pictures of awkward shapes and contents: 1x1, one row or column, a 1 x 70,000 strip,
    flat, noise, a gradient, and random sizes around the patch side."""
    shapes = [(1, 1), (1, 300), (300, 1), (2, 3), (7, 500), (1, 70_000), (24, 24), (25, 23),
              *(tuple(int(side) for side in rng.integers(1, 60, size=2)) for _ in range(40))]
    pictures = []
    for index, (height, width) in enumerate(shapes):
        kind = index % 4
        if kind == 0:
            pictures.append(np.full((height, width), (0, 255, 128)[index % 3], dtype=np.uint8))
        elif kind == 1:
            pictures.append(rng.integers(0, 256, size=(height, width), dtype=np.uint8))
        elif kind == 2:
            pictures.append(np.add.outer(np.arange(height), np.arange(width)).astype(np.uint8))
        else:
            pictures.append(np.clip(rng.normal(128, 60, size=(height, width)), 0, 255).astype(np.uint8))
    return pictures


def test_native_patches_take_any_picture_and_compare_only_what_they_can_judge():
    """Generated pictures of any shape: a 24x24 uint8 patch and the picture's shape each; pairs are
    comparable only when both patches show half of their picture, the sides differ by at
    most NATIVE_MAX_SIZE_DIFFERENCE and both hold more than a plane; comparable pairs measure
    finite and at most 1, and a noisy picture is exactly itself."""
    rng = np.random.default_rng(5)
    pictures = odd_pictures(rng)
    patches, shapes = zip(*(native_patch(picture) for picture in pictures))
    patches, shapes = np.stack(patches), np.stack(shapes)
    assert patches.shape == (len(pictures), NATIVE_SIDE * NATIVE_SIDE) and patches.dtype == np.uint8
    assert shapes.dtype == np.uint32 and [tuple(shape) for shape in shapes.tolist()] == \
        [picture.shape for picture in pictures]
    first, second = np.divmod(np.arange(len(pictures) ** 2), len(pictures))
    able = comparable(shapes, patches, first, second)
    sizes = np.array([picture.shape for picture in pictures])
    covered = 2 * np.minimum(sizes, NATIVE_SIDE).prod(axis=1) >= sizes.prod(axis=1)
    near = (np.abs(sizes[first] - sizes[second]) <= NATIVE_MAX_SIZE_DIFFERENCE).all(axis=1)
    assert not (able & ~(covered[first] & covered[second] & near)).any()
    assert not able[(first == 5) | (second == 5)].any()  # the 1 x 70,000 strip: its patch shows nothing of it
    similarity = native_similarities(shapes, patches, first[able], second[able])
    assert np.isfinite(similarity).all() and (similarity <= 1.0).all()
    noisy = np.flatnonzero(comparable(shapes, patches, np.arange(len(pictures)), np.arange(len(pictures))))
    assert len(noisy) >= 10
    assert (native_similarities(shapes, patches, noisy, noisy) == 1.0).all()


def test_a_lossless_crop_is_its_original_and_a_flat_or_planar_patch_is_never_judged():
    """A small noisy picture cropped 0-2 pixels a side reads 1.0 against its original (the same
    pixels at a whole-pixel shift), brighter by 20 (no clipping) too; flat pictures and gradients
    are not comparable, whatever they show (two corners of grey rectangles correlate 0.999)."""
    rng = np.random.default_rng(7)
    checked = 0
    for _ in range(30):
        height, width = (int(side) for side in rng.integers(20, 34, size=2))
        original = rng.integers(20, 200, size=(height, width), dtype=np.uint8)
        cuts = rng.integers(0, 3, size=4)
        crop = original[cuts[1]:height - cuts[3], cuts[0]:width - cuts[2]]
        brighter = original + np.uint8(20)
        flat = np.full((height, width), 90, dtype=np.uint8)
        planar = np.add.outer(np.arange(height) * 3, np.arange(width) * 2).astype(np.uint8)
        patches, shapes = patches_of((original, crop, brighter, flat, planar))
        first, second = np.zeros(4, dtype=np.int64), np.arange(1, 5)
        able = comparable(shapes, patches, first, second)
        assert able.tolist() == [True, True, False, False]
        similarity = native_similarities(shapes, patches, first[:2], second[:2])
        assert (similarity >= NATIVE_EXACT).all(), (cuts, similarity)
        checked += 1
    assert checked == 30


def crowded(seed: int, count: int = 300, crops: int = 30) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """`count` generated "1"s written alike (every one with look-alikes close by) and lossless
    crops of the first `crops`, as RGB."""
    rng = np.random.default_rng(seed)
    strokes = [crowded_stroke(rng) for _ in range(count)]
    ones = [np.repeat(stroke[:, :, None], 3, axis=2) for stroke in strokes]
    return ones, [edited(one, "crop", rng) for one in ones[:crops]]


@pytest.mark.slow  # 6 s of generated strokes, measured twice: kept out of the 3-minute fast tier
def test_lossless_crops_of_look_alike_strokes_are_found_and_the_look_alikes_still_are_not():
    """300 generated "1"s written alike and lossless crops of 30: with the native patches every
    crop that is a candidate pairs with its original (on the detail thumbnails alone, another
    writer's stroke is often as close as the crop), and no pair of different strokes is added."""
    ones, crops = crowded(0)
    found = features(ones + crops)
    results = {}
    for name, look in (("native", found["detail"]), ("detail", found["detail"].detail)):
        scored = scored_pairs(max_distance=POLICY.near_duplicate_distance, confirm=DISTINCTIVE, neighbours=True,
                              **{**found, "detail": look})
        accepted = distinctive(scored.pairs, scored.similarity, scored.strong, DISTINCTIVE, fine=found["fine"],
                               detail=look)
        own = scored.pairs[:, 1] == scored.pairs[:, 0] + 300
        copies = scored.pairs[:, 1] >= 300
        results[name] = (int(own.sum()), int((accepted & own).sum()),
                         {tuple(pair) for pair in scored.pairs[accepted & ~copies].tolist()})
    candidates, found_natively, added = results["native"]
    assert candidates >= 25 and found_natively == candidates, results["native"][:2]
    assert found_natively > results["detail"][1]
    assert added <= results["detail"][2]  # pairs of different strokes: none the native look adds


@pytest.mark.parametrize("seed", range(2))
def test_a_pair_measures_the_same_bits_natively_whatever_else_is_measured_with_it(seed):
    """Generated pictures of a few sizes: every pair's native similarity is the same alone, in a
    slice and in the whole batch (an incremental audit measures a pair among few, a full one among many)."""
    rng = np.random.default_rng(seed)
    pictures = []
    for _ in range(120):
        height, width = (int(side) for side in rng.integers(22, 30, size=2))
        pictures.append(np.clip(rng.normal(120, 50, size=(height, width)), 0, 255).astype(np.uint8))
    patches, shapes = patches_of(pictures)
    first, second = rng.integers(0, 120, 400), rng.integers(0, 120, 400)
    keep = comparable(shapes, patches, first, second)
    first, second = first[keep], second[keep]
    together = native_similarities(shapes, patches, first, second)
    look = CloseLook(np.zeros((120, 576), np.uint8), patches, shapes)
    for start in range(0, len(first), 37):
        alone = native_similarities(shapes, patches, first[start:start + 1], second[start:start + 1])
        some = native_similarities(shapes, patches, first[start:start + 29], second[start:start + 29])
        assert alone[0] == together[start] and np.array_equal(some, together[start:start + 29])
        assert look[np.arange(120)].native is not None


def test_an_audit_groups_lossless_crops_of_small_strokes_and_no_other_pictures_than_without_them(tmp_path,
                                                                                                monkeypatch):
    """The audit end to end (decode, per-file columns, search, decision) on 200 generated "1"s
    written alike and lossless PNG crops of 12, with the native patches and without them (never
    exact): with them, at least 10 crops share a group with their original, more than without;
    the groups' other members (the generator draws some strokes alike to the pixel) are grouped
    the same either way."""
    ones, crops = crowded(3, count=200, crops=12)
    root = tmp_path / "data"
    for index, one in enumerate(ones):
        _write(root, f"one_{index:03d}", one)
    for index, crop in enumerate(crops):
        _write(root, f"one_{index:03d}_crop", crop)

    def audited() -> tuple[int, list[list[str]]]:
        report = audit_dataset(root=root, data=DataParams(dir=str(root)), policy=AuditParams()).as_dict()
        groups = [sorted(group["members"]) for group in report["near_duplicate_groups"]]
        paired = sum(any(f"one_{index:03d}.png" in path for path in group) and
                     any(f"one_{index:03d}_crop.png" in path for path in group) for index in range(12) for group in groups)
        originals = ([path for path in group if "_crop" not in path] for group in groups)
        return paired, sorted(group for group in originals if len(group) > 1)

    with_native = audited()
    monkeypatch.setattr(close_look, "NATIVE_EXACT", 2.0)
    without = audited()
    assert with_native[0] >= 10 and with_native[0] > without[0], (with_native[0], without[0])
    assert with_native[1] == without[1]


def generated_patches(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Native patches of generated small pictures: noise, lossless crops of earlier ones (cut 0-3
    pixels a side), flat and gradient pictures, exact repeats, and odd shapes (1x1, one row, a
    1 x 70,000 strip, 8x8, 7x9)."""
    pictures: list[np.ndarray] = []
    for _ in range(int(rng.integers(30, 60))):
        kind = int(rng.integers(0, 5))
        if kind == 0 and pictures:
            source = pictures[int(rng.integers(0, len(pictures)))]
            height, width = source.shape
            cuts = rng.integers(0, 4, size=4)
            pictures.append(source[cuts[1]:max(cuts[1] + 1, height - cuts[3]), cuts[0]:max(cuts[0] + 1, width - cuts[2])])
        elif kind == 1:
            height, width = (int(side) for side in rng.integers(8, 50, size=2))
            flat = rng.integers(0, 256)
            pictures.append(np.full((height, width), flat, dtype=np.uint8) if rng.random() < 0.5 else
                            np.add.outer(np.arange(height) * 2, np.arange(width)).astype(np.uint8))
        elif kind == 2 and pictures:
            pictures.append(pictures[int(rng.integers(0, len(pictures)))].copy())
        else:
            height, width = (int(side) for side in rng.integers(8, 50, size=2))
            pictures.append(rng.integers(0, 256, size=(height, width), dtype=np.uint8))
    pictures += [np.zeros((1, 1), np.uint8), np.arange(300, dtype=np.uint8)[None], np.zeros((1, 70_000), np.uint8),
                 rng.integers(0, 256, size=(8, 8), dtype=np.uint8), rng.integers(0, 256, size=(7, 9), dtype=np.uint8)]
    return patches_of(pictures)


def brute_block_pairs(native: np.ndarray, shapes: np.ndarray) -> set[tuple[int, int]]:
    """block_pairs' definition read literally, one pair and one shift at a time."""
    from trainwell.audit.close_look import _BLOCK, _BLOCK_REACH
    from trainwell.audit.similarity import LOW_CONTRAST, beyond_plane

    def block(index: int, down: int, across: int) -> bytes | None:
        rows, columns = (min(int(side), NATIVE_SIDE) for side in shapes[index])
        if 2 * rows * columns < int(shapes[index][0]) * int(shapes[index][1]):
            return None  # the patch shows under half of the picture
        top, left = rows // 2 - _BLOCK // 2 + down, columns // 2 - _BLOCK // 2 + across
        if top < 0 or left < 0 or top + _BLOCK > rows or left + _BLOCK > columns:
            return None
        return native[index].reshape(NATIVE_SIDE, NATIVE_SIDE)[top:top + _BLOCK, left:left + _BLOCK].tobytes()

    found = set()
    reach = range(-_BLOCK_REACH, _BLOCK_REACH + 1)
    for owner in range(len(native)):
        centre = block(owner, 0, 0)
        if centre is None or beyond_plane(np.frombuffer(centre, np.uint8)[None], _BLOCK, _BLOCK)[0] < LOW_CONTRAST:
            continue
        for other in range(len(native)):
            if other != owner and any(block(other, down, across) == centre for down in reach for across in reach):
                found.add((min(owner, other), max(owner, other)))
    return found


@pytest.mark.parametrize("seed", range(6))
def test_block_pairs_are_every_pair_sharing_a_centre_block_and_a_query_gets_its_share(seed):
    """Generated patches (noise, lossless crops, flat, gradients, repeats, odd shapes): block_pairs
    finds exactly the pairs its definition names, and a query for some files exactly the full
    answer's pairs that touch them (the incremental audit's premise)."""
    from trainwell.audit.candidates import block_pairs

    rng = np.random.default_rng(seed)
    native, shapes = generated_patches(rng)
    full = {tuple(pair) for pair in block_pairs(native, shapes).tolist()}
    assert full == brute_block_pairs(native, shapes)
    first, second = np.triu_indices(len(native), k=1)
    shared = share_a_block(native, shapes, first, second)  # what the close look asks of a pair, the same rule
    assert {(a, b) for a, b, both in zip(first.tolist(), second.tolist(), shared.tolist()) if both} == full
    queries = rng.random(len(native)) < 0.3
    asked = {tuple(pair) for pair in block_pairs(native, shapes, queries=queries).tolist()}
    assert asked == {pair for pair in full if queries[pair[0]] or queries[pair[1]]}


def test_every_lossless_crop_of_a_small_noisy_picture_is_a_block_pair_with_its_original():
    """Noise pictures of 16 to 33 pixels a side (the patch shows at least half of them), each
    cut 0-3 pixels at each side: the crop's centre block lies within reach of its original's."""
    from trainwell.audit.candidates import block_pairs

    rng = np.random.default_rng(11)
    missed = []
    for _ in range(120):
        height, width = (int(side) for side in rng.integers(16, 34, size=2))
        original = rng.integers(0, 256, size=(height, width), dtype=np.uint8)
        cuts = rng.integers(0, 4, size=4)
        crop = original[cuts[1]:height - cuts[3], cuts[0]:width - cuts[2]]
        patches, shapes = patches_of((original, crop))
        if block_pairs(patches, shapes).tolist() != [[0, 1]]:
            missed.append((height, width, cuts.tolist()))
    assert not missed, missed


def strokes(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Grey random strokes on a dark ground."""
    picture = np.full((height, width), 30, dtype=np.uint8)
    for _ in range(6):
        start, end = rng.integers(0, [width, height]), rng.integers(0, [width, height])
        cv2.line(picture, (int(start[0]), int(start[1])), (int(end[0]), int(end[1])), int(rng.integers(120, 256)),
                 int(rng.integers(1, 4)))
    return picture


@pytest.mark.parametrize("side", [30, 48])
def test_pictures_sharing_only_their_centre_are_not_grouped(tmp_path, side):
    """Generated pairs of pictures of other strokes around one identical 24x24 centre (a third to
    three quarters of their pixels differ): the centre alone is no verdict, so no group (a
    quarter of a 48-pixel picture shown once sufficed for one)."""
    rng = np.random.default_rng(side)
    root = tmp_path / "data"
    offset = (side - 24) // 2
    for pair in range(4):
        centre = strokes(rng, 24, 24)
        for member in range(2):
            picture = strokes(rng, side, side)
            picture[offset:offset + 24, offset:offset + 24] = centre
            _write(root, f"p{pair}_{member}", np.repeat(picture[:, :, None], 3, axis=2))
    report = audit_dataset(root=root, data=DataParams(dir=str(root)), policy=AuditParams()).as_dict()
    assert report["near_duplicate_groups"] == []


def test_a_centre_block_many_files_share_pairs_none_of_them():
    """40 different pictures that carry one informative 8x8 block at their centre (a mark every
    picture bears): as a block candidate source it would pair all 780; left out as common, none,
    while a lossless crop among them that holds another picture's own centre is still found."""
    from trainwell.audit.candidates import block_pairs
    from trainwell.audit.close_look import COMMON_BLOCK_FILES, common_centre_keys

    rng = np.random.default_rng(3)
    mark = rng.integers(0, 256, size=(8, 8), dtype=np.uint8)
    pictures = [marked_noise(rng, 28, mark, 10) for _ in range(40)]
    own = rng.integers(0, 256, size=(28, 28), dtype=np.uint8)
    pictures += [own, own[1:, :27]]  # a picture of its own and a lossless crop of it
    native, shapes = patches_of(pictures)
    common = common_centre_keys(native, shapes)
    assert len(common) == 1 and COMMON_BLOCK_FILES <= 40
    assert len(block_pairs(native, shapes)) >= 780
    assert block_pairs(native, shapes, common=common).tolist() == [[40, 41]]


def test_an_incremental_audit_whose_common_blocks_change_reports_what_a_full_one_does(tmp_path, monkeypatch):
    """A handwritten-like "1" and a lossless crop of it (one pixel off its top and left: the same centre
    block) are a block pair and one group; a third picture carrying that block at its centre
    makes it common (the bar set at 3 files), and the pair is then no candidate. The audit with
    its cache must say what one without it says at each step, not keep the pair it found before."""
    monkeypatch.setattr(close_look, "COMMON_BLOCK_FILES", 3)
    rng = np.random.default_rng(2)
    # A "1" whose crop moves its pHash 18 bits and its thumbnails under the search's floor: only
    # the block search offers the pair.
    original, marked = crowded_stroke(rng), strokes(rng, 28, 28)
    marked[10:18, 10:18] = original[10:18, 10:18]
    pool = {name: np.repeat(picture[:, :, None], 3, axis=2) for name, picture in
            (("original", original), ("crop", original[1:, 1:]), ("marked", marked))}
    reports = [len(audited_both_ways(tmp_path / "data", pool, present, tmp_path / "cache.json")["near_duplicate_groups"])
               for present in ({"original", "crop"}, {"original", "crop", "marked"}, {"original", "crop"})]
    assert reports == [1, 0, 1]  # the pair found, refused while its block is common, found again


def test_blocks_many_files_hold_off_centre_pair_none_of_them_either(monkeypatch):
    """60 pictures carry one 14x14 emblem at their centre (its centre block common) and so hold its
    48 off-centre 8x8 windows, each the centre block of 3 other pictures (under the owner bar, set
    at 4): counting owners alone, every picture paired with 144 others (8,640 pairs, all different
    pictures; 5,000 such pictures took 232 s). Blocks that many files hold within reach are common
    too: the search's pairs stay within COMMON_BLOCK_HOLDERS a file."""
    from trainwell.audit.candidates import block_pairs
    from trainwell.audit.close_look import COMMON_BLOCK_HOLDERS, common_centre_keys

    monkeypatch.setattr(close_look, "COMMON_BLOCK_FILES", 4)
    rng = np.random.default_rng(12)
    emblem = rng.integers(0, 256, size=(14, 14), dtype=np.uint8)
    pictures = [marked_noise(rng, 32, emblem, 9) for _ in range(60)]  # hosts
    for down in range(7):
        for across in range(7):
            if (down, across) != (3, 3):  # the emblem's own centre block is the hosts' common one
                pictures += [marked_noise(rng, 28, emblem[down:down + 8, across:across + 8], 10) for _ in range(3)]
    native, shapes = patches_of(pictures)
    common = common_centre_keys(native, shapes)
    assert len(common) == 49
    pairs = block_pairs(native, shapes, common=common)
    assert len(pairs) <= COMMON_BLOCK_HOLDERS * len(pictures)
    assert not ((pairs[:, 0] < 60) & (pairs[:, 1] >= 60)).any()  # no host paired with an owner


def test_pairs_of_any_shapes_measure_alike_either_way_round_and_near_sizes_as_before():
    """Generated pictures of awkward shapes (1x1, strips, flat, noise, sizes around the detail
    side): every pair's detail similarity is finite, at most 1, the same bits either way round and
    alone or in a batch, never below the thumbnails as they are, and a pair of sizes at most a few
    pixels apart is measured on its thumbnails as they are."""
    rng = np.random.default_rng(7)
    base = odd_pictures(rng)
    pictures = base + [np.ascontiguousarray(picture[::-1, ::-1]) for picture in base]  # the same shapes turned
    blobs = [cv2.GaussianBlur(rng.integers(0, 256, size=(40, 40), dtype=np.uint8), (0, 0), 2) for _ in range(6)]
    pictures += blobs + [cv2.resize(blob, (16, 16), interpolation=cv2.INTER_AREA) for blob in blobs]  # and shrunk copies
    detail = np.stack([similarity_features(picture)[2] for picture in pictures])
    look = CloseLook(detail, *patches_of(pictures))
    first, second = rng.integers(0, len(pictures), size=(2, 600))
    first, second = np.concatenate([first, np.arange(len(base))]), np.concatenate([second, np.arange(len(base)) + len(base)])
    copies = np.arange(2 * len(base), 2 * len(base) + 6)
    first, second = np.concatenate([first, copies]), np.concatenate([second, copies + 6])
    measured = look.detail_of(first, second)
    assert np.isfinite(measured).all() and (measured <= 1.0).all()
    assert np.array_equal(measured, look.detail_of(second, first))
    assert all(look.detail_of(first[index:index + 1], second[index:index + 1])[0] == measured[index]
               for index in rng.choice(len(first), size=40, replace=False))
    # A pair of one size, or of sizes a crop's few pixels apart, is measured on its thumbnails as they are.
    near = (np.abs(look.shape[first].astype(int) - look.shape[second].astype(int)) <= NATIVE_MAX_SIZE_DIFFERENCE).all(axis=1)
    assert near.sum() >= 20 and (~near).sum() >= 300
    as_they_are = DETAIL_CROPS.of_pairs(detail, first, second)
    assert np.array_equal(measured[near], as_they_are[near])
    # Never below the thumbnails as they are: a copy shrunk sharper than an area resize (Lanczos,
    # nearest) is closer unmapped, and the older measure found it.
    assert (measured >= as_they_are).all() and (measured[-6:] > as_they_are[-6:]).any()
    thumbnails, one, other = band_matched(detail, look.shape, first, second)
    assert thumbnails.dtype == np.uint8 and thumbnails.shape[1] == detail.shape[1]
    assert one.max(initial=0) < len(thumbnails) and other.max(initial=0) < len(thumbnails)


def writers_stroke(rng: np.random.Generator, shape: np.ndarray) -> np.ndarray:
    """`shape`'s four points (in a 28-pixel square) joined by a pen stroke, each point moved by
    about a pixel and the pen's width drawn anew: one writer's version of a shape many write alike."""
    canvas = np.zeros((112, 112), dtype=np.uint8)  # drawn 4x larger, then blurred and area-resized like a scan
    points = np.round(4 * (shape + rng.normal(0, 1.0, size=shape.shape))).astype(np.int32)
    cv2.polylines(canvas, [points], False, 255, int(rng.integers(7, 11)))
    return cv2.resize(cv2.GaussianBlur(canvas, (0, 0), 2), (28, 28), interpolation=cv2.INTER_AREA)


def test_smaller_copies_among_look_alike_writing_are_found_and_nothing_else(tmp_path):
    """Five shapes written by 40 writers each (every stroke has look-alikes), and copies of eight
    of each shrunk to half and three-quarter size: on the detail thumbnails a half-size copy has
    lost what its original still shows, and other writers' strokes stood as close (24 of the 40
    copies were found); with the original brought to the copy's resolution (close_look.band_matched)
    38 are. Every group is one stroke with its copy, in a fresh audit and from the cache."""
    from PIL import Image

    rng = np.random.default_rng(0)
    pool, copies = {}, []
    for label in range(5):
        shape = rng.uniform(6, 22, size=(4, 2))
        for writer in range(40):
            stroke = writers_stroke(rng, shape)
            pool[f"s{label}_{writer:02d}"] = np.repeat(stroke[:, :, None], 3, axis=2)
            if writer < 8:
                side = (14, 21)[writer % 2]
                smaller = np.asarray(Image.fromarray(stroke).resize((side, side), Image.BICUBIC))
                pool[f"s{label}_{writer:02d}_smaller"] = np.repeat(smaller[:, :, None], 3, axis=2)
                copies.append(sorted([f"pictures/s{label}_{writer:02d}.png", f"pictures/s{label}_{writer:02d}_smaller.png"]))
    report = audited_both_ways(tmp_path / "data", pool, set(pool), tmp_path / "cache.json")
    groups = [sorted(group["members"]) for group in report["near_duplicate_groups"]]
    assert all(group in copies for group in groups), groups
    assert len(groups) >= 34, groups


def test_look_alike_writing_at_two_sizes_never_pairs_across_them(tmp_path):
    """Sets of 20-80 writers' strokes of one shape, every other one shrunk to 9-14 pixels a side (no
    copies, few rivals): no group holds a stroke and another writer's shrunk one. Mapping both ends
    of such a pair to the smaller resolution blurred the shrunk one a second time and paired two
    writers' strokes at 0.9986 in a set of 40; at 9-12 pixels different MNIST writers' "1"s measure
    0.999 alike, so pictures that small are not mapped. (Two shrunk strokes of one size can still
    pair: at 14 pixels different writers' strokes can be as alike as copies, as before.)"""
    from PIL import Image

    sizes = [(14, 14), (12, 12), (10, 10), (9, 20), (20, 9)]
    for seed in range(6):
        rng = np.random.default_rng(seed)
        shape, root = rng.uniform(6, 22, size=(4, 2)), tmp_path / f"set{seed}"
        shrunk = set()
        for writer in range((20, 40, 80)[seed % 3]):
            stroke = writers_stroke(rng, shape)
            if writer % 2:
                height, width = sizes[(writer // 2 + seed) % len(sizes)]
                stroke = np.asarray(Image.fromarray(stroke).resize((width, height), Image.BICUBIC))
                shrunk.add(f"pictures/w{writer:02d}.png")
            _write(root, f"w{writer:02d}", np.repeat(stroke[:, :, None], 3, axis=2))
        report = audit_dataset(root=root, data=DataParams(dir=str(root)), policy=AuditParams()).as_dict()
        for group in report["near_duplicate_groups"]:
            assert len({member in shrunk for member in group["members"]}) == 1, (seed, group)


@pytest.mark.parametrize("size", [(14, 14), (12, 12), (10, 10), (9, 20)])
def test_the_most_alike_writers_never_pair_when_one_is_shrunk(tmp_path, size):
    """The 40 most alike pairs among 400 writers' strokes of one shape, one of each shrunk to a
    handful of pixels, 80 files (few rivals): no group. With pictures from 8 pixels brought to the
    smaller one's resolution, one pair at 12x12 grouped: that small, two writers are alike."""
    from PIL import Image

    rng = np.random.default_rng(0)
    shape = rng.uniform(6, 22, size=(4, 2))
    strokes = [writers_stroke(rng, shape) for _ in range(400)]
    rows = np.stack(strokes).reshape(400, -1).astype(np.float64)
    rows -= rows.mean(axis=1, keepdims=True)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    alike = rows @ rows.T
    np.fill_diagonal(alike, -1.0)
    pairs, used = [], set()
    for flat in np.argsort(-alike, axis=None, kind="stable").tolist():
        one, other = divmod(flat, 400)
        if one < other and not {one, other} & used:
            pairs.append((one, other))
            used |= {one, other}
        if len(pairs) == 40:
            break
    root = tmp_path / "data"
    for index, (one, other) in enumerate(pairs):
        _write(root, f"p{index:02d}_whole", np.repeat(strokes[one][:, :, None], 3, axis=2))
        shrunk = np.asarray(Image.fromarray(strokes[other]).resize((size[1], size[0]), Image.BICUBIC))
        _write(root, f"p{index:02d}_shrunk", np.repeat(shrunk[:, :, None], 3, axis=2))
    report = audit_dataset(root=root, data=DataParams(dir=str(root)), policy=AuditParams()).as_dict()
    assert report["near_duplicate_groups"] == []
