"""Distinctive matches: a candidate under both bars is a near-duplicate only when clearly closer than either file's next-best candidate."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest
from PIL import Image

from tests import faults
from tests.test_crop_duplicates import edited, features, texture
from trainwell.audit.dataset import audit_dataset
from trainwell.audit.near_duplicates import Confirm, distinctive, near_duplicate_pairs, scored_pairs
from trainwell.params import AuditParams, DataParams

POLICY = AuditParams()
# The shipped rule with the crop bar off: only the distinctive test can take a crop under 0.999.
DISTINCTIVE = Confirm(min_similarity=POLICY.near_duplicate_similarity,
                      max_colour_difference=POLICY.near_duplicate_pixel_difference,
                      min_crop_similarity=POLICY.near_duplicate_crop_similarity,
                      min_distinctive_similarity=POLICY.near_duplicate_distinctive_similarity,
                      distinctive_ratio=POLICY.near_duplicate_distinctive_ratio)
OFF = Confirm(min_similarity=DISTINCTIVE.min_similarity, max_colour_difference=DISTINCTIVE.max_colour_difference,
              min_crop_similarity=DISTINCTIVE.min_crop_similarity)


def plain_distinctive(pairs: np.ndarray, similarity: np.ndarray, strong: np.ndarray, confirm: Confirm) -> np.ndarray:
    """The rule read literally, pair by pair: the definition distinctive() must match. A file's
    matches are its weak candidates before the first clear gap (k <= 4; with k >= 2, alike to
    each other; a tie is never a gap); a weak pair is a near-duplicate when each end is among the
    other's matches."""
    close = {tuple(pair) for pair, value, is_strong in zip(pairs.tolist(), similarity.tolist(), strong.tolist())
             if is_strong or value >= confirm.min_distinctive_similarity}

    def matches(end: int) -> set[int]:
        candidates = sorted(((float(value), d if c == end else c) for (c, d), value, is_strong
                             in zip(pairs.tolist(), similarity.tolist(), strong.tolist())
                             if end in (c, d) and not is_strong), reverse=True)
        values = [value for value, _ in candidates] + [-np.inf]
        for k in range(1, min(4, len(candidates)) + 1):
            if values[k - 1] >= confirm.min_distinctive_similarity and values[k - 1] > values[k] and \
                    1 - values[k - 1] <= confirm.distinctive_ratio * (1 - values[k]):
                group = [other for _, other in candidates[:k]]
                if all((min(a, b), max(a, b)) in close for index, a in enumerate(group) for b in group[index + 1:]):
                    return set(group)
                return set()
        return set()

    return np.array([is_strong or (value >= confirm.min_distinctive_similarity and b in matches(a) and a in matches(b))
                     for (a, b), value, is_strong in zip(pairs.tolist(), similarity.tolist(), strong.tolist())],
                    dtype=bool)


@pytest.mark.parametrize("ratio", [0.05, 0.2, 0.5, 1.0])
@pytest.mark.parametrize("seed", range(12))
def test_distinctive_matches_the_rule_read_pair_by_pair(seed, ratio):
    """Generated pair sets (crowded and sparse nodes, ties, similarity 1.0, strong pairs among
    them) decide as the literal rule does, whatever order the pairs come in, at any ratio params
    allow (1.0 included: there a tie passes the distance test, and must still not be a gap)."""
    rng = np.random.default_rng(seed)
    confirm = replace(DISTINCTIVE, distinctive_ratio=ratio)
    for _ in range(20):
        nodes = int(rng.integers(2, 30))
        pairs = np.unique(np.sort(rng.integers(0, nodes, size=(int(rng.integers(1, 60)), 2)), axis=1), axis=0)
        pairs = pairs[pairs[:, 0] != pairs[:, 1]]
        similarity = rng.choice([0.97, 0.975, 0.98, 0.99, 0.995, 0.996, 0.998, 0.999, 1.0],
                                size=len(pairs)).astype(np.float32)
        strong = rng.random(len(pairs)) < 0.2
        expected = plain_distinctive(pairs, similarity, strong, confirm)
        assert (distinctive(pairs, similarity, strong, confirm) == expected).all()
        order = rng.permutation(len(pairs))
        assert (distinctive(pairs[order], similarity[order], strong[order], confirm) == expected[order]).all()
        assert (distinctive(pairs, similarity, strong, OFF) == strong).all()  # the rule off: only strong pairs


def test_two_weak_pairs_tied_at_one_are_no_match_and_ids_far_apart_cost_nothing():
    """Found by review: a tie at similarity 1.0 (distance 0 <= ratio x 0) was taken as a gap and
    input order picked the pair kept; and the gap table was sized by the largest file index."""
    pairs, weak = np.array([[0, 4], [3, 4]]), np.array([False, False])
    for order in ([0, 1], [1, 0]):
        assert distinctive(pairs[order], np.array([1.0, 1.0], np.float32), weak, DISTINCTIVE).tolist() == [False, False]
    far = distinctive(np.array([[0, 10**12]]), np.array([0.996], np.float32), np.array([False]), DISTINCTIVE)
    assert far.tolist() == [True]


def test_a_rival_a_tie_and_a_strong_partner():
    """With the shipped bar (0.995) and ratio (0.2): a lone pair at 0.996 is a match, one at 0.994
    is not; a rival at 0.99 (distance 0.004 > 0.2 x 0.01) undoes it, one at 0.97 does not; a tie
    is never distinctive; a strong partner (a copy) is no rival."""
    assert DISTINCTIVE.min_distinctive_similarity == 0.995 and DISTINCTIVE.distinctive_ratio == 0.2
    pairs, weak = np.array([[0, 1]]), np.array([False])
    assert distinctive(pairs, np.array([0.996], np.float32), weak, DISTINCTIVE).tolist() == [True]
    assert distinctive(pairs, np.array([0.994], np.float32), weak, DISTINCTIVE).tolist() == [False]
    three = np.array([[0, 1], [1, 2]])
    for rival, expected in ((0.99, False), (0.97, True)):
        found = distinctive(three, np.array([0.996, rival], np.float32), np.array([False, False]), DISTINCTIVE)
        assert found.tolist() == [expected, False]
    tie = distinctive(three, np.array([0.997, 0.997], np.float32), np.array([False, False]), DISTINCTIVE)
    assert tie.tolist() == [False, False]
    copy = distinctive(three, np.array([0.996, 0.999], np.float32), np.array([False, True]), DISTINCTIVE)
    assert copy.tolist() == [True, True]


@pytest.mark.parametrize("seed", range(6))
def test_a_look_alike_that_is_no_candidate_still_rivals(seed):
    """Three noisy versions of one generated thumbnail among unrelated ones, only the first two a
    candidate pair: from the candidates alone they are a distinctive match; the third, nearest
    by thumbnail, is as close and undoes it. Unrelated thumbnails never do."""
    rng = np.random.default_rng(seed)
    base = np.kron(rng.uniform(40, 215, size=(4, 4)), np.ones((4, 4))) + rng.normal(0, 20, size=(16, 16))
    versions = [np.clip(base + rng.normal(0, 2.5, size=(16, 16)), 0, 255) for _ in range(3)]
    others = [rng.uniform(0, 255, size=(16, 16)) for _ in range(20)]
    fine = np.stack([np.rint(picture).astype(np.uint8).ravel() for picture in versions + others])
    pair = np.array([[0, 1]])
    value = np.array([0.996], np.float32)  # as the candidate search would have scored it
    assert distinctive(pair, value, np.array([False]), DISTINCTIVE).tolist() == [True]
    assert distinctive(pair, value, np.array([False]), DISTINCTIVE, fine=fine).tolist() == [False]
    alone = np.delete(fine, 2, axis=0)
    assert distinctive(pair, value, np.array([False]), DISTINCTIVE, fine=alone).tolist() == [True]


def test_cropped_textures_are_found_by_the_distinctive_rule_and_never_two_textures():
    """60 generated textures and a crop of each: the distinctive rule pairs more copies than the
    bars alone, and no pair of different textures."""
    rng = np.random.default_rng(3)
    originals = [texture(rng, side=48) for _ in range(60)]
    found = features(originals + [edited(picture, "crop", rng) for picture in originals])
    counts = []
    for confirm in (OFF, DISTINCTIVE):
        pairs = near_duplicate_pairs(max_distance=POLICY.near_duplicate_distance, confirm=confirm, **found)
        assert all(b == a + 60 for a, b in pairs.tolist())  # only a texture with its own crop
        counts.append(len(pairs))
    assert counts[1] > counts[0] and counts[1] >= 50


def crowded_stroke(rng: np.random.Generator) -> np.ndarray:
    """A "1" by one of many writers who write it alike (slant, length, place within a few pixels):
    every one has look-alikes close by, as MNIST's "1"s do."""
    canvas = np.zeros((112, 112), dtype=np.uint8)  # drawn 4x larger, area-resized like a scan
    angle, length, bend = np.radians(rng.uniform(-6, 6)), rng.uniform(65, 81), rng.uniform(-4, 4)
    centre = 56 + rng.uniform(-4, 4, size=2)
    steps = np.linspace(-0.5, 0.5, 30)
    points = [(centre[0] + step * length * np.sin(angle) + bend * (1 - 4 * step * step),
               centre[1] + step * length * np.cos(angle)) for step in steps]
    cv2.polylines(canvas, [np.round(points).astype(np.int32)], False, int(rng.integers(220, 256)),
                  int(rng.integers(9, 13)))
    return cv2.resize(canvas, (28, 28), interpolation=cv2.INTER_AREA)


def test_look_alikes_with_rivals_are_refused_and_crops_of_them_still_found():
    """300 generated "1"s written alike, and crops of 30 of them: hundreds of pairs of different
    writers pass the distinctive bar (0.995) but each has a close rival, so the rule adds none of
    them (different writers pair only where the fine bar alone already pairs them), while crops
    are still paired with their originals."""
    rng = np.random.default_rng(0)
    ones = [np.repeat(crowded_stroke(rng)[:, :, None], 3, axis=2) for _ in range(300)]
    found = features(ones + [edited(one, "crop", rng) for one in ones[:30]])
    scored = scored_pairs(max_distance=POLICY.near_duplicate_distance, confirm=DISTINCTIVE, **found)
    copies = np.array([b == a + 300 for a, b in scored.pairs.tolist()], dtype=bool)
    added = distinctive(scored.pairs, scored.similarity, scored.strong, DISTINCTIVE) & ~scored.strong
    assert ((scored.similarity >= 0.995) & ~scored.strong & ~copies).sum() >= 100  # look-alikes to refuse
    assert not (added & ~copies).any()
    assert (distinctive(scored.pairs, scored.similarity, scored.strong, DISTINCTIVE) & copies).sum() >= 10


def _write(root, name: str, picture: np.ndarray) -> None:
    faults.write(root / "pictures" / f"{name}.png", faults.encode(Image.fromarray(picture), "PNG"))


@pytest.mark.parametrize("seed", range(2))
def test_incremental_audits_decide_as_full_ones_across_adds_and_removes(tmp_path, seed):
    """Generated add/remove sequences over textures, their crops and look-alikes (a near copy of
    an original that rivals its crop): after each step, the audit with its cache reports exactly
    what an audit without one does, so a new closer rival undoes a kept match and its removal
    restores it."""
    rng = np.random.default_rng(seed)
    root = tmp_path / "data"
    originals = [texture(rng, side=40) for _ in range(8)]
    pool = {f"t{index}": picture for index, picture in enumerate(originals)}
    pool.update({f"t{index}_crop": edited(picture, "crop", rng) for index, picture in enumerate(originals)})
    # A rival: the original with faint noise, alike to it and to its crop (a look-alike's place).
    pool.update({f"t{index}_rival": np.clip(picture + rng.normal(0, 6, picture.shape), 0, 255).astype(np.uint8)
                 for index, picture in enumerate(originals[:4])})
    names = sorted(pool)
    present = set(rng.choice(names, size=len(names) // 2, replace=False).tolist())
    for _ in range(5):
        audited_both_ways(root, pool, present, tmp_path / "cache.json")
        flips = rng.choice(names, size=int(rng.integers(1, 5)), replace=False).tolist()
        present ^= set(flips)


def audited_both_ways(root, pool: dict[str, np.ndarray], present: set[str], cache_file) -> dict:
    """Make root/pictures hold exactly the `present` pictures of `pool`, then audit it with the
    cache and without: the two reports' groups and issues must be the same. Returns the uncached one."""
    for name, picture in pool.items():
        path = root / "pictures" / f"{name}.png"
        if name in present and not path.exists():
            _write(root, name, picture)
        elif name not in present and path.exists():
            path.unlink()
    data, policy = DataParams(dir=str(root)), AuditParams()
    cached = audit_dataset(root=root, data=data, policy=policy, cache_file=cache_file).as_dict()
    full = audit_dataset(root=root, data=data, policy=policy).as_dict()
    assert cached["near_duplicate_groups"] == full["near_duplicate_groups"], sorted(present)
    assert cached["issues"] == full["issues"], sorted(present)
    return full


def test_malformed_kept_pairs_in_a_cache_with_a_valid_digest_are_a_rebuild_not_a_crash(tmp_path):
    """Generated malformed near-duplicate entries (wrong lengths, types, similarities out of range,
    strings for flags), written with a matching digest as a buggy writer would: each makes the
    cache a miss, said in a warning, and the audit reports what a fresh one does."""
    import json

    from trainwell.audit import cache as cache_module

    rng = np.random.default_rng(4)
    root, cache = tmp_path / "data", tmp_path / "cache.json"
    for index in range(4):
        picture = texture(rng, side=40)
        _write(root, f"t{index}", picture)
        _write(root, f"t{index}_crop", edited(picture, "crop", rng))
    data, policy = DataParams(dir=str(root)), AuditParams()
    fresh = audit_dataset(root=root, data=data, policy=policy).as_dict()
    audit_dataset(root=root, data=data, policy=policy, cache_file=cache)
    stored = json.loads(cache.read_text())
    pairs = stored["near_duplicates"]["pairs"]
    assert pairs and all(len(entry) == 4 for entry in pairs)
    records = np.load(str(cache) + ".npy", allow_pickle=False)
    path = pairs[0][0]
    bad_entries = [[path], [path, path, 0.99], [path, 7, 0.99, True], [path, path, "0.99", True],
                   [path, path, 1.5, True], [path, path, float("nan"), False], [path, path, 0.99, "yes"],
                   [path, path, 0.99, 1], {"a": path}, None, [path, path, -2.0, False]]
    for bad in bad_entries:
        document = dict(stored, near_duplicates={"settings": stored["near_duplicates"]["settings"],
                                                 "pairs": [*pairs, bad]})
        document.pop("digest")
        body = json.dumps(document)[:-1]
        cache.write_text(f"{body}{cache_module._DIGEST_KEY}{cache_module._digest(body, records)}\"}}")
        report = audit_dataset(root=root, data=data, policy=policy, cache_file=cache).as_dict()
        assert report["near_duplicate_groups"] == fresh["near_duplicate_groups"], bad
        assert report["issues"] == fresh["issues"], bad


def test_two_cropped_copies_of_one_picture_group_with_it_instead_of_blocking_each_other(tmp_path):
    """Each copy is as close to the other copy as to the original, so by the plain ratio test each
    was the other's rival and neither matched (4 of 10 such trios whole before; 7 now: in the
    other 3 the two crops are not alike enough to each other, and a group must be); the gap
    after both keeps the three together. Pictures with one copy pair as before, and none of them
    joins another's group."""
    rng = np.random.default_rng(1)
    root = tmp_path / "data"
    for index in range(30):
        picture = texture(rng)
        faults.write(root / "t" / f"{index:02d}.png", faults.encode(Image.fromarray(picture), "PNG"))
        for copy in range(2 if index < 10 else 1 if index < 20 else 0):
            faults.write(root / "t" / f"{index:02d}_crop{copy}.png",
                         faults.encode(Image.fromarray(edited(picture, "crop", rng)), "PNG"))
    report = audit_dataset(root=root, data=DataParams(dir=str(root)), policy=POLICY, cache_file=None)
    groups = [group["members"] for group in report.near_duplicate_groups]
    assert all(len({member[2:4] for member in members}) == 1 for members in groups)  # one picture a group
    sizes = {members[0][2:4]: len(members) for members in groups}
    assert sum(sizes.get(f"{index:02d}") == 3 for index in range(10)) >= 7, sizes
    assert sum(sizes.get(f"{index:02d}") == 2 for index in range(10, 20)) >= 9, sizes
    assert not any(f"{index:02d}" in sizes for index in range(20, 30))
