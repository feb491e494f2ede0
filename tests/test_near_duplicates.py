"""The indexed near-duplicate search gives exactly the pairs of comparing every pair, full and incremental."""

from __future__ import annotations

import numpy as np
import pytest

from trainwell.audit.hamming import Plan, _index_pairs, _query_pairs, choose_plan, hamming_pairs
from trainwell.audit.near_duplicates import Confirm, confirmed, near_duplicate_pairs

DISTANCES = (0, 1, 5, 10)
CONFIRM = Confirm(min_similarity=0.995, max_colour_difference=6.0)


def flipped(code: np.ndarray, bits: int, rng: np.random.Generator) -> np.ndarray:
    """`code` (8 packed bytes) with exactly `bits` distinct bits flipped."""
    unpacked = np.unpackbits(code)
    unpacked[rng.choice(64, size=bits, replace=False)] ^= 1
    return np.packbits(unpacked)


def noisy(fine: np.ndarray, amplitude: int, rng: np.random.Generator, count: int = 1) -> np.ndarray:
    """`count` copies of a fine thumbnail with uniform noise of +-amplitude grey levels."""
    return np.clip(fine.astype(np.int16) + rng.integers(-amplitude, amplitude + 1, size=(count, 256)), 0, 255
                   ).astype(np.uint8)


@pytest.fixture(scope="module")
def dataset() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """30,000 random pHashes, fine thumbnails and colour thumbnails, plus planted trouble for every
    distance tested: copies at exactly 0..11 bits from their original whose fine thumbnails are
    alike, borderline or unlike (noise of 1, 4 or 30 grey levels on a 16x16 of spread ~37) and
    whose colours are shifted in brightness (alike) or in hue (unlike), a heavy bucket of 400
    identical hashes (300 identical pictures, 100 varied ones) and a crowd of 200 hashes within 2
    bits of one code (one long shared substring in every table)."""
    rng = np.random.default_rng(16)
    hashes = [rng.integers(0, 256, size=(30_000, 8), dtype=np.uint8)]
    fine = [rng.integers(0, 256, size=(30_000, 256), dtype=np.uint8)]
    thumbnails = [rng.integers(0, 256, size=(30_000, 192), dtype=np.uint8)]
    for original in range(600):
        base_fine = rng.integers(64, 192, size=256, dtype=np.uint8)
        base_thumbnail = rng.integers(64, 192, size=192, dtype=np.uint8)
        fine[0][original], thumbnails[0][original] = base_fine, base_thumbnail
        for bits in range(12):
            hashes.append(flipped(hashes[0][original], bits, rng)[None])
            fine.append(noisy(base_fine, (1, 4, 30)[(original + bits) % 3], rng))
            shifted = base_thumbnail.astype(np.int16) + (20 if bits % 2 else 0)  # brighter: same colours
            if (original + bits) % 5 == 0:
                shifted[0::3] += 40  # redder: other colours
            thumbnails.append(np.clip(shifted, 0, 255).astype(np.uint8)[None])
    hashes.append(np.repeat(rng.integers(0, 256, size=(1, 8), dtype=np.uint8), 400, axis=0))
    heavy_fine = np.repeat(rng.integers(64, 192, size=(1, 256), dtype=np.uint8), 400, axis=0)
    heavy_fine[300:] = noisy(heavy_fine[0], 8, rng, count=100)
    fine.append(heavy_fine)
    thumbnails.append(np.repeat(rng.integers(64, 192, size=(1, 192), dtype=np.uint8), 400, axis=0))
    centre = rng.integers(0, 256, size=8, dtype=np.uint8)
    hashes.append(np.stack([flipped(centre, int(rng.integers(0, 3)), rng) for _ in range(200)]))
    fine.append(noisy(rng.integers(64, 192, size=256, dtype=np.uint8), 2, rng, count=200))
    thumbnails.append(np.repeat(rng.integers(64, 192, size=(1, 192), dtype=np.uint8), 200, axis=0)
                      + rng.integers(0, 3, size=(200, 192), dtype=np.uint8))
    order = rng.permutation(sum(len(part) for part in hashes))  # planted rows spread among the others
    return np.concatenate(hashes)[order], np.concatenate(fine)[order], np.concatenate(thumbnails)[order]


def reference_pairs(hashes: np.ndarray, fine: np.ndarray, thumbnails: np.ndarray, max_distance: int) -> np.ndarray:
    """Every pair (i < j) compared: with pHash bits as +-1, a.b = 64 - 2 * distance (exact in
    float32), then each candidate confirmed on its own. Plain and slow, the definition to match."""
    signs = np.unpackbits(hashes, axis=1).astype(np.float32) * 2 - 1
    found = []
    for start in range(0, len(hashes), 512):
        rows, columns = np.nonzero(signs[start : start + 512] @ signs[start:].T >= 64 - 2 * max_distance)
        rows, columns = rows + start, columns + start
        candidates = np.stack([rows[columns > rows], columns[columns > rows]], axis=1)
        found.append(candidates[confirmed(candidates, fine=fine, thumbnails=thumbnails, confirm=CONFIRM)])
    pairs = np.concatenate(found)
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]


@pytest.fixture(scope="module")
def expected(dataset) -> dict[int, np.ndarray]:
    """Reference pairs for every tested distance, from one exhaustive pass at the largest."""
    hashes, fine, thumbnails = dataset
    widest = reference_pairs(hashes, fine, thumbnails, max(DISTANCES))
    distance = np.unpackbits(hashes[widest[:, 0]] ^ hashes[widest[:, 1]], axis=1).sum(axis=1)
    return {limit: widest[distance <= limit] for limit in DISTANCES}


@pytest.mark.parametrize("max_distance", DISTANCES)
def test_indexed_search_finds_exactly_the_exhaustive_pairs(dataset, expected, max_distance):
    hashes, fine, thumbnails = dataset
    found = near_duplicate_pairs(hashes=hashes, fine=fine, thumbnails=thumbnails, max_distance=max_distance,
                                 confirm=CONFIRM, method="index")
    assert found.dtype == np.int64
    np.testing.assert_array_equal(found, expected[max_distance])
    # The planted cases are all there: the heavy bucket alone links 300 * 299 / 2 identical pictures.
    assert len(found) > 300 * 299 // 2
    if max_distance == 5:
        auto = near_duplicate_pairs(hashes=hashes, fine=fine, thumbnails=thumbnails, max_distance=max_distance,
                                    confirm=CONFIRM)
        np.testing.assert_array_equal(auto, found)


@pytest.mark.parametrize("max_distance", DISTANCES)
def test_incremental_queries_plus_kept_pairs_rebuild_the_full_answer(dataset, expected, max_distance):
    """What audit.dataset does on a re-audit: pairs among unchanged rows come from the last run,
    pairs involving a changed row from a query for just those rows."""
    hashes, fine, thumbnails = dataset
    rng = np.random.default_rng(max_distance)
    full = expected[max_distance]
    # Changed rows: random ones, members of linked pairs, and part of the heavy bucket.
    _, code_of_row, code_counts = np.unique(hashes, axis=0, return_inverse=True, return_counts=True)
    heavy_rows = np.flatnonzero(code_counts[code_of_row.ravel()] == 400)
    changed = np.unique(np.concatenate([rng.choice(len(hashes), size=300, replace=False),
                                        rng.choice(full.ravel(), size=50), heavy_rows[:5]]))
    is_changed = np.zeros(len(hashes), dtype=bool)
    is_changed[changed] = True
    kept = full[~is_changed[full[:, 0]] & ~is_changed[full[:, 1]]]
    for method in ("index", "exhaustive", "auto"):
        fresh = near_duplicate_pairs(hashes=hashes, fine=fine, thumbnails=thumbnails, max_distance=max_distance,
                                     confirm=CONFIRM, rows=changed, method=method)
        np.testing.assert_array_equal(fresh, full[is_changed[full[:, 0]] | is_changed[full[:, 1]]])
        rebuilt = np.concatenate([kept, fresh])
        np.testing.assert_array_equal(rebuilt[np.lexsort((rebuilt[:, 1], rebuilt[:, 0]))], full)


def test_exhaustive_fallback_matches_on_a_sample(dataset, expected):
    """The blockwise exhaustive path (for distances no index pays for) agrees too."""
    hashes, fine, thumbnails = dataset
    sample = np.arange(4000)
    for max_distance in DISTANCES:
        found = near_duplicate_pairs(hashes=hashes[sample], fine=fine[sample], thumbnails=thumbnails[sample],
                                     max_distance=max_distance, confirm=CONFIRM, method="exhaustive")
        full = expected[max_distance]
        np.testing.assert_array_equal(found, full[(full[:, 0] < len(sample)) & (full[:, 1] < len(sample))])


def test_one_changed_blank_among_thousands_costs_its_own_pairs_only():
    """5,000 blank pictures (same hash, same thumbnail) link in 12.5M pairs; re-checking one of
    them yields its 4,999, without building the others."""
    hashes = np.zeros((5000, 8), dtype=np.uint8)
    thumbnails = np.zeros((5000, 192), dtype=np.uint8)
    found = near_duplicate_pairs(hashes=hashes, fine=np.zeros((5000, 256), dtype=np.uint8), thumbnails=thumbnails,
                                 max_distance=5, confirm=CONFIRM, rows=np.array([1234]))
    assert len(found) == 4999
    assert ((found == 1234).any(axis=1)).all() and (found[:, 0] < found[:, 1]).all()


@pytest.mark.parametrize("method", ["index", "exhaustive", "auto"])
def test_hamming_pairs_at_the_extremes(method):
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 2**64 - 1, size=60, dtype=np.uint64, endpoint=True)
    every_pair = np.stack(np.triu_indices(60, k=1), axis=1)
    # 64 bits apart at most: every pair qualifies, and no plan exists (it needs 65 blocks).
    assert choose_plan(count=60, max_distance=64) is None
    found = hamming_pairs(codes, max_distance=64, method=method)
    assert sorted(map(tuple, found.tolist())) == sorted(map(tuple, every_pair.tolist()))
    # A distance of 20 through the index (21 one-substring tables, or fallback) still matches.
    bits = np.unpackbits(codes.view(np.uint8).reshape(60, 8), axis=1).astype(np.int64)
    distance = (bits[:, None, :] != bits[None, :, :]).sum(axis=2)
    for max_distance in (20, 32, 40):
        found = hamming_pairs(codes, max_distance=max_distance, method=method)
        want = every_pair[distance[every_pair[:, 0], every_pair[:, 1]] <= max_distance]
        assert sorted(map(tuple, found.tolist())) == sorted(map(tuple, want.tolist()))
        queries = np.arange(60) % 7 == 3
        found = hamming_pairs(codes, max_distance=max_distance, queries=queries, method=method)
        want = want[queries[want[:, 0]] | queries[want[:, 1]]]
        assert sorted(map(tuple, found.tolist())) == sorted(map(tuple, want.tolist()))
    assert hamming_pairs(codes, max_distance=-1, method=method).shape == (0, 2)


def test_plans_grow_with_the_count_and_give_up_when_tables_cost_more():
    # Default distance: one-substring tables (classic multi-index hashing) at small counts,
    # two-of-seven-blocks keys (18 bits) at a million, where 10-bit substrings crowd.
    assert choose_plan(count=10_000, max_distance=5).matching == 1
    assert choose_plan(count=1_000_000, max_distance=5).matching == 2
    assert choose_plan(count=100, max_distance=5) is None  # 4,950 pairs: comparing them all is cheaper
    assert choose_plan(count=1_000_000, max_distance=20) is None
    with pytest.raises(ValueError, match="method"):
        hamming_pairs(np.zeros(3, dtype=np.uint64), max_distance=1, method="fast")


@pytest.fixture(scope="module")
def code_pairs(dataset) -> tuple[np.ndarray, np.ndarray]:
    """A third of the dataset's pHashes as uint64 codes (its rows are shuffled, so the planted
    crowds are in it too), and every pair within 5 bits by comparing them all."""
    codes = np.ascontiguousarray(dataset[0][:12_000]).view(np.uint64).ravel()
    return codes, hamming_pairs(codes, max_distance=5, method="exhaustive")


@pytest.mark.parametrize("plan", [Plan(blocks=6, matching=1), Plan(blocks=7, matching=2), Plan(blocks=9, matching=4)])
@pytest.mark.parametrize("queried", [1, 40, 1000, "all"])
def test_every_plan_answers_a_query_exactly(code_pairs, plan, queried):
    """The incremental path (only the queried codes sorted, every code screened against them)
    gives the exhaustive pairs with a queried end, for any block layout and any number asked,
    on the planted crowds (a bucket of 400 equal codes, 200 within 2 bits of one code)."""
    codes, every_pair = code_pairs
    rng = np.random.default_rng(queried if queried != "all" else 0)
    queries = np.ones(len(codes), dtype=bool) if queried == "all" else np.zeros(len(codes), dtype=bool)
    if queried != "all":
        _, code_of_row, code_counts = np.unique(codes, return_inverse=True, return_counts=True)
        crowded = np.flatnonzero(code_counts[code_of_row] > 1)
        queries[rng.choice(len(codes), size=queried, replace=False)] = True
        queries[crowded[:queried // 4]] = True  # some from the heavy bucket, whose members meet each other
    want = every_pair[queries[every_pair[:, 0]] | queries[every_pair[:, 1]]]
    found = np.concatenate(_query_pairs(codes, 5, plan, queries) or [np.zeros((0, 2), dtype=np.int64)])
    assert sorted(map(tuple, found.tolist())) == sorted(map(tuple, want.tolist()))
    assert len(set(map(tuple, found.tolist()))) == len(found)  # each pair once


def test_plans_are_chosen_on_how_often_the_codes_really_share_keys():
    """Perceptual hashes are far from random (the scale benchmark's pictures shared 4-of-9-block
    keys 1,750x as often as random codes): the plan is chosen on key sharing measured on a sample.
    Here every other bit is always 0, so keys hold half the bits they seem to."""
    rng = np.random.default_rng(7)
    codes = rng.integers(0, 2**64 - 1, size=50_000, dtype=np.uint64, endpoint=True) & np.uint64(0x5555555555555555)
    assumed = choose_plan(count=len(codes), max_distance=5)
    measured = choose_plan(count=len(codes), max_distance=5, codes=codes)
    assert assumed is not None and measured is not None
    assert measured.matching / measured.blocks > assumed.matching / assumed.blocks  # longer keys, emptier buckets
    random_codes = rng.integers(0, 2**64 - 1, size=len(codes), dtype=np.uint64, endpoint=True)
    assert choose_plan(count=len(codes), max_distance=5, codes=random_codes) == assumed
    found = hamming_pairs(codes, max_distance=5)
    want = np.concatenate(_index_pairs(codes, 5, assumed))
    assert len(found) > 10_000
    assert sorted(map(tuple, found.tolist())) == sorted(map(tuple, want.tolist()))


def test_generated_edge_codes_give_the_exhaustive_pairs_whatever_the_plan():
    """Generated attacks on the incremental query: uint64 edges (0, 2^64-1), all-equal codes,
    codes differing in one block, and codes whose keys share a 2^20-filter flag (Fibonacci hash)
    without being equal; queried: the first, the last, both, or all; distances 0 to 20."""
    from trainwell.audit.hamming import _FIBONACCI, _FILTER_BITS

    rng = np.random.default_rng(11)
    base = rng.integers(0, 2**63, dtype=np.uint64)
    # key + inverse(F) * s lands s below the next 2^44 boundary of key * F: the same flag (s < 2^44).
    step = np.uint64(pow(int(_FIBONACCI), -1, 2**64))
    with np.errstate(over="ignore"):
        colliding = base + step * rng.integers(1, 1 << 8, 40, dtype=np.uint64)
        flags = (np.append(colliding, base) * _FIBONACCI) >> np.uint64(64 - _FILTER_BITS)
    assert (flags == flags[-1]).sum() > 10  # the attack is real: many other keys on base's flag
    families = {
        "edges": rng.choice(np.array([0, 2**64 - 1, 1, 2**63], dtype=np.uint64), 40),
        "equal": np.full(40, base, dtype=np.uint64),
        "one block": base ^ (rng.integers(0, 1 << 9, 40, dtype=np.uint64) << np.uint64(20)),
        "filter collisions": np.append(base, colliding[:39]),
    }
    for name, codes in families.items():
        for first_last in ([0], [39], [0, 39], list(range(40))):
            queries = np.zeros(40, dtype=bool)
            queries[first_last] = True
            for max_distance in (0, 1, 3, 8, 20):
                want = hamming_pairs(codes, max_distance=max_distance, queries=queries, method="exhaustive")
                for plan in {Plan(blocks=max_distance + 1, matching=1), Plan(blocks=max_distance + 2, matching=2)}:
                    found = np.concatenate(_query_pairs(codes, max_distance, plan, queries)
                                           or [np.zeros((0, 2), dtype=np.int64)])
                    assert sorted(map(tuple, found.tolist())) == sorted(map(tuple, want.tolist())), (name, plan)
                    assert len(set(map(tuple, found.tolist()))) == len(found)


def test_structured_codes_below_the_old_measuring_threshold_are_measured():
    """49,999 codes with their low 32 bits equal: chosen for random codes, 6 blocks / 2 matching
    made every pair a candidate in 6 of 15 tables (78 s); 50,000 were measured (1.5 s)."""
    rng = np.random.default_rng(5)
    codes = rng.integers(0, 2**32, size=49_999, dtype=np.uint64) << np.uint64(32)
    assumed = choose_plan(count=len(codes), max_distance=4)
    measured = choose_plan(count=len(codes), max_distance=4, codes=codes)
    assert measured != assumed
    small = codes[:3_000]
    found = hamming_pairs(small, max_distance=4)
    want = hamming_pairs(small, max_distance=4, method="exhaustive")
    assert sorted(map(tuple, found.tolist())) == sorted(map(tuple, want.tolist()))


def test_a_slot_holding_another_key_gives_no_bucket():
    """The slot table is looked up by a hash of the key: a code whose slot holds another key (or a
    slot two keys share) must meet exactly the queried codes with its own key, never the others."""
    from trainwell.audit.hamming import _bucket_bounds

    sorted_keys = np.array([3, 3, 8, 9, 9, 9], dtype=np.uint64)
    distinct, starts, ends = np.array([3, 8, 9], dtype=np.uint64), np.array([0, 2, 3]), np.array([2, 3, 6])
    entry = np.array([1, 3, 1, -1, -1, 2], dtype=np.int32)  # slot of: key 3, key 9, another key in 3's slot, ...
    keys = np.array([3, 9, 5, 8, 7, 8], dtype=np.uint64)
    low, high = _bucket_bounds(entry, keys, sorted_keys=sorted_keys, distinct=distinct, starts=starts, ends=ends)
    assert [list(range(a, b)) for a, b in zip(low.tolist(), high.tolist())] == [[0, 1], [3, 4, 5], [], [2], [], [2]]


def test_fine_similarity_is_the_best_aligned_correlation():
    """fine_similarities against a plain loop: the first's central 14x14 against each of the
    second's nine one-pixel-shifted windows, each standardised with its spread floored at
    LOW_CONTRAST, 1 - half the mean squared difference (the correlation for contrasty pictures)."""
    from trainwell.audit.similarity import LOW_CONTRAST, fine_similarities

    rng = np.random.default_rng(3)
    first = rng.integers(0, 256, size=(50, 256), dtype=np.uint8)
    first[40:] = 90 + rng.integers(0, 3, size=(10, 256), dtype=np.uint8)  # near-flat pictures
    second = np.concatenate([first[:10], np.roll(first[10:20].reshape(10, 16, 16), 1, axis=2).reshape(10, 256),
                             rng.integers(0, 256, size=(10, 256), dtype=np.uint8),
                             np.full((10, 256), 90, dtype=np.uint8) + rng.integers(0, 2, size=(10, 256), dtype=np.uint8),
                             first[40:] + 1])
    found = fine_similarities(first, second)
    for row in range(50):
        def standard(values: np.ndarray) -> np.ndarray:
            values = values.astype(np.float64).ravel()
            return (values - values.mean()) / max(values.std(), LOW_CONTRAST)

        a = standard(first[row].reshape(16, 16)[1:-1, 1:-1])
        best = max(1 - 0.5 * np.mean((a - standard(second[row].reshape(16, 16)[down:down + 14, across:across + 14]))
                                     ** 2) for down in range(3) for across in range(3))
        assert found[row] == pytest.approx(best, abs=1e-5)
        if row < 30:  # contrasty pictures: the same as Pearson's correlation of the best window
            assert found[row] <= 1.0
    assert (found[:20] > 0.999).all()  # the same picture, and shifted by a pixel
    assert (found[20:30] < 0.5).all()  # other noise
    assert (found[30:40] < 0.995).all()  # a near-flat picture against noise: different
    assert (found[40:] > 0.999).all()  # a near-flat picture one grey level brighter: the same


def test_confirmation_keeps_alike_copies_and_drops_the_others(dataset, expected):
    """The planted copies sit on both sides of the bar: confirmation must take some candidates and refuse others."""
    hashes, fine, thumbnails = dataset
    candidates = near_duplicate_pairs(hashes=hashes, fine=fine, thumbnails=thumbnails, max_distance=5,
                                      confirm=Confirm(min_similarity=-1.0, max_colour_difference=255.0))
    assert len(expected[5]) < len(candidates)
    kept = {tuple(pair) for pair in expected[5].tolist()}
    assert kept <= {tuple(pair) for pair in candidates.tolist()}
