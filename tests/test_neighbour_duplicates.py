"""Candidates from the thumbnails themselves (copies whose pHash moved) and pairs decided on the 24x24 detail thumbnails."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests import faults
from tests.test_crop_duplicates import edited, features, texture
from tests.test_distinctive_duplicates import DISTINCTIVE, POLICY, crowded_stroke
from trainwell.audit import candidates
from trainwell.audit.candidates import NEIGHBOUR_FLOOR, neighbour_pairs, unshifted_similarities
from trainwell.audit.dataset import audit_dataset
from trainwell.audit.near_duplicates import distinctive, near_duplicate_pairs, scored_pairs
from trainwell.audit.similarity import (
    LOW_CONTRAST,
    detail_similarities,
    grey_of,
    similarity_features,
    standardised,
)
from trainwell.params import AuditParams, DataParams


def generated_fine(rng: np.random.Generator) -> np.ndarray:
    """Fine thumbnails around a few bases: noisy variants from alike to unlike, some near-uniform
    (spread under LOW_CONTRAST), some flat, some identical: (n, 256) uint8."""
    bases = rng.integers(0, 256, size=(6, 256)).astype(np.float32)
    rows = []
    for _ in range(int(rng.integers(40, 90))):
        kind = rng.integers(0, 4)
        if kind == 0:  # near-uniform
            rows.append(rng.normal(rng.uniform(20, 230), rng.uniform(0.0, LOW_CONTRAST * 0.9), 256))
        elif kind == 1 and rows:  # an exact repeat
            rows.append(rows[int(rng.integers(0, len(rows)))])
        else:
            rows.append(bases[rng.integers(0, 6)] + rng.normal(0, rng.uniform(0, 40), 256))
    return np.clip(np.rint(rows), 0, 255).astype(np.uint8)


def brute_force(fine: np.ndarray) -> set[tuple[int, int]]:
    """neighbour_pairs' definition read literally: every pair of informative rows, one at a time."""
    rows = standardised(fine)
    informative = fine.astype(np.float32).std(axis=1) >= LOW_CONTRAST
    return {(a, b) for a in range(len(fine)) for b in range(a + 1, len(fine))
            if informative[a] and informative[b] and unshifted_similarities(rows[[a]], rows[[b]])[0] >= NEIGHBOUR_FLOOR}


@pytest.mark.parametrize("seed", range(8))
def test_neighbour_pairs_are_every_alike_pair_and_a_query_gets_its_share_of_them(seed, monkeypatch):
    """Generated thumbnails (near-uniform, flat, repeated, alike and unlike): the search finds
    exactly the pairs the definition names, whatever block size it runs in, and a query for
    some rows finds exactly the full answer's pairs that touch them (the incremental audit's
    premise)."""
    rng = np.random.default_rng(seed)
    fine = generated_fine(rng)
    expected = brute_force(fine)
    monkeypatch.setattr(candidates, "_NEIGHBOUR_BLOCK", int(rng.integers(1, 17)))
    found = {tuple(pair) for pair in neighbour_pairs(fine).tolist()}
    assert found == expected
    for _ in range(4):
        queries = rng.random(len(fine)) < rng.uniform(0.05, 0.5)
        asked = {tuple(pair) for pair in neighbour_pairs(fine, queries=queries).tolist()}
        assert asked == {pair for pair in expected if queries[pair[0]] or queries[pair[1]]}


def test_a_copy_whose_hash_moved_is_found_by_its_thumbnails_and_nothing_else_is():
    """Re-encoded copies of 30 textures, every file given an unrelated pHash (as a re-encoded
    low-contrast tile's can move 8-16 bits): the hashes find nothing, the thumbnail search finds
    every copy and pairs no two different textures."""
    rng = np.random.default_rng(3)
    originals = [texture(rng) for _ in range(30)]
    found = features(originals + [edited(picture, "jpeg", rng) for picture in originals])
    found["hashes"] = rng.integers(0, 256, size=found["hashes"].shape, dtype=np.uint8)
    found["crops"] = rng.integers(0, 256, size=found["crops"].shape, dtype=np.uint8)
    settings = dict(max_distance=POLICY.near_duplicate_distance, confirm=DISTINCTIVE, **found)
    assert len(near_duplicate_pairs(**settings)) <= 1  # a random pHash may land near another by chance
    pairs = {tuple(pair) for pair in near_duplicate_pairs(neighbours=True, **settings).tolist()}
    assert pairs == {(index, index + 30) for index in range(30)}


def sky(rng: np.random.Generator, *, strength: tuple[float, float] = (2, 8), turn: float = 0.6) -> np.ndarray:
    """A 64x64 tile of sky: a gradient (by default gentle: spread 1-5 grey levels) with sensor noise."""
    across, down = np.meshgrid(np.linspace(-1, 1, 64), np.linspace(-1, 1, 64))
    angle = rng.uniform(0, turn)  # neighbouring tiles of one sky run much the same way
    tile = rng.uniform(100, 170) + rng.uniform(*strength) * (np.cos(angle) * down + np.sin(angle) * across)
    tile = tile + rng.normal(0, 0.8, tile.shape)
    blue = np.stack([tile * 0.8, tile * 0.9, tile], axis=2)
    return np.clip(np.rint(blue), 0, 255).astype(np.uint8)


def test_tiles_of_one_clear_sky_are_never_near_duplicates(tmp_path):
    """40 generated tiles of one sky (different pixels, the same gentle gradient): alike to 0.995
    and more, but not copies. The thumbnail search leaves near-uniform pictures out, so only a
    pHash agreement could make them candidates, and none is grouped."""
    rng = np.random.default_rng(5)
    root = tmp_path / "data"
    tiles = [sky(rng) for _ in range(40)]
    for index, tile in enumerate(tiles):
        faults.write(root / "sky" / f"{index:02d}.jpg", faults.encode(Image.fromarray(tile), "JPEG"))
    fine = np.stack([similarity_features(grey_of(tile))[1] for tile in tiles])
    assert (fine.astype(np.float32).std(axis=1) < LOW_CONTRAST).all()  # near-uniform, as a sky is
    report = audit_dataset(root=root, data=DataParams(dir=str(root)), policy=AuditParams())
    assert report.near_duplicate_groups == []


def test_past_the_neighbour_search_cap_the_hashes_alone_find_candidates(tmp_path, monkeypatch):
    """A dataset larger than NEIGHBOUR_SEARCH_MAX_FILES is searched by its hashes alone (comparing
    every pair grows with the square of the files); at or below it, by its thumbnails too."""
    from trainwell.audit import dataset

    rng = np.random.default_rng(12)
    root = tmp_path / "data"
    for index in range(6):
        faults.write(root / "textures" / f"{index:02d}.png", faults.encode(Image.fromarray(texture(rng)), "PNG"))
    searched: list[bool] = []
    original = dataset.scored_pairs

    def recorded(**arguments):
        searched.append(arguments["neighbours"])
        return original(**arguments)

    monkeypatch.setattr(dataset, "scored_pairs", recorded)
    for cap in (6, 5):
        monkeypatch.setattr(dataset, "NEIGHBOUR_SEARCH_MAX_FILES", cap)
        audit_dataset(root=root, data=DataParams(dir=str(root)), policy=AuditParams())
    assert searched == [True, False]


def apart(pictures: list[np.ndarray], pairs: np.ndarray) -> np.ndarray:
    """Mean absolute pixel difference of index pairs of pictures (grey levels)."""
    return np.array([np.abs(pictures[a].astype(np.int16) - pictures[b]).mean() for a, b in pairs.tolist()])


@pytest.mark.slow  # three draws of 330 strokes: 7-8 s, kept out of the 3-minute fast tier
def test_the_detail_thumbnails_tell_more_cropped_strokes_from_look_alikes():
    """300 generated "1"s written alike and crops of 30 of them, over three draws: deciding the
    pairs on the 24x24 detail thumbnails finds more crops than on the 16x16 fine ones alone, the
    strong look-alike pairs are the same or fewer, and any other pair of different strokes the
    distinctive rule groups is as alike in pixels (mean difference) as the strong ones: the
    generator sometimes draws one stroke twice."""
    with_detail = without = 0
    for seed in range(3):
        rng = np.random.default_rng(seed)
        strokes = [crowded_stroke(rng) for _ in range(300)]
        ones = [np.repeat(stroke[:, :, None], 3, axis=2) for stroke in strokes]
        found = features(ones + [edited(one, "crop", rng) for one in ones[:30]])

        decided = {}
        for name, detail in (("detail", found["detail"].detail), ("fine", None)):
            scored = scored_pairs(max_distance=POLICY.near_duplicate_distance, confirm=DISTINCTIVE, neighbours=True,
                                  **{**found, "detail": detail})
            copies = scored.pairs[:, 1] >= 300  # a crop with its original or with another's
            accepted = distinctive(scored.pairs, scored.similarity, scored.strong, DISTINCTIVE, fine=found["fine"],
                                   detail=detail)
            strong_apart = apart(strokes, scored.pairs[scored.strong & ~copies])
            added = apart(strokes, scored.pairs[accepted & ~copies & ~scored.strong])
            assert (added <= strong_apart.max(initial=0.0)).all()
            decided[name] = (len(strong_apart), int((accepted & (scored.pairs[:, 1] == scored.pairs[:, 0] + 300)).sum()))
        assert decided["detail"][0] <= decided["fine"][0]
        with_detail, without = with_detail + decided["detail"][1], without + decided["fine"][1]
    assert with_detail > without


def test_detail_thumbnails_take_any_picture_and_read_a_picture_as_its_own_copy():
    """Generated odd pictures (1x1, one row, huge aspect ratios, flat, noise, extremes): a 24x24
    detail thumbnail each, similarities finite and at most 1, and each picture a copy of itself."""
    rng = np.random.default_rng(13)
    shapes = [(1, 1), (1, 300), (300, 1), (2, 3), (7, 500), *(tuple(rng.integers(1, 200, size=2)) for _ in range(30))]
    details = []
    for index, (height, width) in enumerate(shapes):
        grey = (np.full((height, width), (0, 255, 128)[index % 3], dtype=np.uint8) if index % 4 != 3
                else rng.integers(0, 256, size=(height, width), dtype=np.uint8))
        code, fine, detail = similarity_features(grey)
        assert code.shape == (8,) and fine.shape == (256,) and detail.shape == (576,) and detail.dtype == np.uint8
        details.append(detail)
    detail = np.stack(details)
    similarity = detail_similarities(detail, detail[::-1])
    assert np.isfinite(similarity).all() and (similarity <= 1.0 + 1e-6).all()
    assert (detail_similarities(detail, detail) >= 0.999).all()


@pytest.mark.parametrize("seed", range(3))
def test_a_pair_measures_the_same_bits_whatever_else_is_measured_with_it(seed):
    """A full audit measures a pair among thousands, an incremental one among a few: generated
    look-alike thumbnails give every pair the same crop-tolerant and detail similarity, bit for
    bit, alone, in a slice of the batch and in the whole batch (in float32 sums, 35 of 429 pairs
    once differed in the last bit, enough to decide a pair at a bar differently)."""
    from trainwell.audit.similarity import DETAIL_CROPS, FINE_CROPS

    rng = np.random.default_rng(seed)
    count = 600
    bases = rng.integers(0, 256, size=(40, 576)).astype(np.float32)
    detail = np.clip(np.rint(bases[rng.integers(0, 40, count)] + rng.normal(0, 8, (count, 576))), 0, 255)
    detail = detail.astype(np.uint8)
    fine = np.ascontiguousarray(detail.reshape(count, 24, 24)[:, 4:20, 4:20]).reshape(count, 256)
    first, second = rng.integers(0, count, 2000), rng.integers(0, count, 2000)
    for measure, thumbnails in ((DETAIL_CROPS, detail), (FINE_CROPS, fine)):
        together = measure.of_pairs(thumbnails, first, second)
        for start in range(0, 2000, 97):
            alone = measure.of_pairs(thumbnails, first[start:start + 1], second[start:start + 1])
            some = measure.of_pairs(thumbnails, first[start:start + 33], second[start:start + 33])
            assert alone[0] == together[start] and np.array_equal(some, together[start:start + 33])


def test_a_set_crossing_the_search_cap_reports_what_a_fresh_audit_reports(tmp_path, monkeypatch):
    """Copies only the thumbnail search finds (their hashes far apart), audited with a cache at the
    search's file count, then one file past it, then back: each incremental audit reports exactly
    what a fresh full audit of the same folder reports (pairs found by a search that no longer
    runs are not kept, and the other way round)."""
    from trainwell.audit import dataset
    from trainwell.audit.similarity import crop_hashes

    def bits(first: np.ndarray, second: np.ndarray) -> int:
        return int(np.unpackbits(np.bitwise_xor(first, second)).sum())

    rng = np.random.default_rng(21)
    root, cache = tmp_path / "data", tmp_path / "audit-cache.json"
    found = 0
    for _ in range(400):
        picture = texture(rng)
        copy = edited(edited(picture, "crop", rng), "jpeg", rng)
        (code, _, _), (other, _, _) = (similarity_features(grey_of(image)) for image in (picture, copy))
        far = min([bits(code, other), *(bits(hashed, other) for hashed in crop_hashes(grey_of(picture))),
                   *(bits(hashed, code) for hashed in crop_hashes(grey_of(copy)))]) > POLICY.near_duplicate_distance
        if far:
            faults.write(root / "a" / f"t{found}.png", faults.encode(Image.fromarray(picture), "PNG"))
            faults.write(root / "a" / f"t{found}_copy.png", faults.encode(Image.fromarray(copy), "PNG"))
            found += 1
        if found == 2:
            break
    assert found == 2
    for index in range(8):
        faults.write(root / "a" / f"other{index}.png", faults.encode(Image.fromarray(texture(rng)), "PNG"))
    data, policy = DataParams(dir=str(root)), AuditParams()

    def both() -> tuple[list, list]:
        incremental = audit_dataset(root=root, data=data, policy=policy, cache_file=cache).near_duplicate_groups
        return incremental, audit_dataset(root=root, data=data, policy=policy).near_duplicate_groups

    monkeypatch.setattr(dataset, "NEIGHBOUR_SEARCH_MAX_FILES", 12)
    with_search, _ = both()
    assert len(with_search) == 2  # the two copies, found by their thumbnails
    faults.write(root / "a" / "extra.png", faults.encode(Image.fromarray(texture(rng)), "PNG"))
    incremental, full = both()
    assert incremental == full and len(full) < 2  # past the cap the hashes alone miss them
    (root / "a" / "extra.png").unlink()
    incremental, full = both()
    assert incremental == full == with_search


def test_steep_gradients_of_other_angles_and_strengths_are_never_near_duplicates(tmp_path):
    """120 generated tiles of sky with steep gradients (spread well past LOW_CONTRAST) at angles
    within 0.6 radians: standardised, two of them differ only by a few degrees, yet they are
    different pictures. The thumbnail search leaves out thumbnails that are a tilted plane (a
    reviewer's 200 such tiles made 39 groups when it did not)."""
    rng = np.random.default_rng(6)
    root = tmp_path / "data"
    for index in range(120):
        tile = sky(rng, strength=(25, 80))
        faults.write(root / "sky" / f"{index:03d}.png", faults.encode(Image.fromarray(tile), "PNG"))
    report = audit_dataset(root=root, data=DataParams(dir=str(root)), policy=AuditParams())
    assert report.near_duplicate_groups == []
