"""Every pair of 64-bit codes within a Hamming distance, exactly: multi-index hashing, sub-quadratic in the count."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import combinations

import numpy as np

BITS = 64
# Candidate pairs held at once while a table's buckets are expanded: each costs about 50 bytes
# across the working arrays, so 2M candidates stay near 100 MiB however crowded a bucket is.
_CANDIDATE_BUDGET = 1 << 21
# The exhaustive path's distance block: rows x columns of float32 similarities, 4M = 16 MiB.
_EXHAUSTIVE_BLOCK = 1 << 22
# Rough costs on one core (seconds), only to choose between plans; every plan gives the same pairs.
# Measured on 1,000,000 random codes: a table (mask, argsort, bucket bounds) ~60 ns per code; a
# candidate pair (gather, xor, popcount, filters) ~40 ns; an exhaustive distance (BLAS product, threshold, nonzero) ~5 ns.
_SECONDS_PER_TABLE_CODE = 60e-9
# A code screened against a table of queried keys (mask, hash, one flag looked up; see _query_pairs):
# measured 10 ns at 100,000 codes, 20 at 1,000,000 (the filter falls out of the cache).
_SECONDS_PER_SCREENED_CODE = 12e-9
# A code whose slot holds a key: its key compared and its bucket bounds gathered (see _bucket_bounds).
_SECONDS_PER_LOOKUP = 15e-9
# From this many codes on, choose_plan measures how often real codes share keys, on a sample of at
# most _SAMPLE of them (three sorts of it per plan weighed: ~0.1 s at 1,000,000 codes, microseconds
# at 1,000). Below, a poor choice costs at most ~0.3 s (every pair a candidate in each of 15
# tables); above, a plan chosen for random codes can cost minutes on codes that share many bits.
_MEASURE_FROM = 1_000
_SAMPLE = 1 << 16
_SECONDS_PER_CANDIDATE = 40e-9
_SECONDS_PER_DISTANCE = 5e-9


@dataclass(frozen=True)
class Plan:
    """Split the 64 bits into `blocks` contiguous blocks and look up pairs that agree exactly on
    `matching` of them, one table (sort by the masked code) per choice of blocks.

    Pigeonhole: two codes at most d bits apart differ in at most d blocks, so with
    blocks - d = matching they agree on at least `matching` blocks and meet in some table's bucket.
    With matching = 1 this is classic multi-index hashing (d + 1 substrings); a larger `matching`
    makes the keys longer and the buckets emptier at the price of more tables.
    """

    blocks: int
    matching: int

    @property
    def block_masks(self) -> list[int]:
        """Bit masks of the blocks, as equal as 64 bits allow (widths differ by at most one)."""
        width, wider = divmod(BITS, self.blocks)
        masks, start = [], 0
        for index in range(self.blocks):
            size = width + (index < wider)
            masks.append(((1 << size) - 1) << start)
            start += size
        return masks

    @property
    def tables(self) -> int:
        return math.comb(self.blocks, self.matching)


def _uniform_collisions(plan: Plan) -> float:
    """Chance, summed over the plan's tables, that two random codes share a table's key: 2^-(key
    bits) each; keys are `matching` blocks of `width` bits, `chosen_wide` of them one bit wider."""
    width, wider = divmod(BITS, plan.blocks)
    narrow = plan.blocks - wider
    return sum(math.comb(wider, chosen_wide) * math.comb(narrow, plan.matching - chosen_wide)
               * 2.0 ** -(plan.matching * width + chosen_wide)
               for chosen_wide in range(min(wider, plan.matching) + 1))


def _measured_collisions(plan: Plan, sample: np.ndarray) -> float:
    """The same chance measured on a sample of the real codes, from three of the plan's tables
    (the first, an evenly spread and the last choice of blocks), times the number of tables.

    Perceptual hashes are not random: the bits of pictures with similar structure agree far more
    often than chance. On 1,000,000 hashes of the scale benchmark's pictures, two codes shared a
    key of 2-of-7 blocks 43x as often as random codes would, and of 4-of-9 blocks 1,750x; the plan
    chosen for random codes then compared 1.4 billion candidates (44 s)."""
    masks = plan.block_masks
    blocks, matching = plan.blocks, plan.matching
    picks = {tuple(range(matching)), tuple(index * blocks // matching for index in range(matching)),
             tuple(range(blocks - matching, blocks))}
    pairs = len(sample) * (len(sample) - 1) / 2
    shares = []
    for chosen in picks:
        keys = np.sort(sample & np.uint64(sum(masks[block] for block in chosen)))
        runs = np.diff(np.append(_run_starts(keys), len(keys)))
        shares.append(float((runs * (runs - 1)).sum()) / 2 / pairs)
    return plan.tables * sum(shares) / len(shares)


def _expected_seconds(plan: Plan | None, *, count: int, compared: float, queried: int | None = None,
                      sample: np.ndarray | None = None) -> float:
    """Rough time of a plan (None: exhaustive) for `compared` pairs among `count` codes, `queried`
    of them asked about (None: all), with key collisions measured on `sample` (None: random codes)."""
    if plan is None:
        return compared * _SECONDS_PER_DISTANCE
    collisions = _uniform_collisions(plan)
    if sample is not None and len(sample) > 1:
        collisions = max(collisions, _measured_collisions(plan, sample))
    # An incremental search looks up every code that shares a key with some queried code.
    lookups = 0.0 if queried is None else count * min(plan.tables, queried * collisions)
    return (_table_seconds(plan, count=count, queried=queried) + compared * collisions * _SECONDS_PER_CANDIDATE
            + lookups * _SECONDS_PER_LOOKUP)


def _table_seconds(plan: Plan, *, count: int, queried: int | None) -> float:
    """Building the plan's tables: every code sorted into each (a full search), or only the
    queried codes sorted and every code screened against them (an incremental one)."""
    if queried is None:
        return plan.tables * count * _SECONDS_PER_TABLE_CODE
    return plan.tables * (count * _SECONDS_PER_SCREENED_CODE + queried * _SECONDS_PER_TABLE_CODE)


def choose_plan(*, count: int, max_distance: int, queried: int | None = None,
                codes: np.ndarray | None = None) -> Plan | None:
    """The cheapest plan for `count` codes (`queried` of them asked about; None: all), or None
    when comparing every pair is cheaper or no plan exists. Given the `codes` themselves (at
    _MEASURE_FROM or more), how often they share keys is measured on a sample of them, not assumed.

    Plans need blocks > max_distance and at most 64 one-bit blocks, so a distance of 64 or more
    (every pair qualifies) always compares exhaustively. Large distances at large counts also end
    there, because the tables needed outnumber what they save: the tables win up to a distance of
    11 at 10,000 codes and 13 at 1,000,000 (audit.near_duplicate_distance allows up to 20).
    """
    compared = count * (count - 1) / 2 if queried is None else queried * (count - 1.0)
    # Every count // 16-th code (up to _SAMPLE): pairs in the sample then resolve a key-sharing
    # chance of ~500 / count^2, about the fewest candidate pairs that would matter.
    sample = None if codes is None or count < _MEASURE_FROM else \
        np.ascontiguousarray(codes[::max(16, count // _SAMPLE)], dtype=np.uint64)
    best, best_seconds = None, _expected_seconds(None, count=count, compared=compared)
    for blocks in range(max_distance + 1, BITS + 1):
        plan = Plan(blocks=blocks, matching=blocks - max_distance)
        if _table_seconds(plan, count=count, queried=queried) >= best_seconds:
            break  # tables only multiply from here on (C(blocks, d) grows with blocks)
        seconds = _expected_seconds(plan, count=count, compared=compared, queried=queried, sample=sample)
        if seconds < best_seconds:
            best, best_seconds = plan, seconds
    return best


def popcount(values: np.ndarray) -> np.ndarray:
    """Set bits of each uint64 (SWAR; numpy 1.x has no bitwise_count)."""
    values = values - ((values >> np.uint64(1)) & np.uint64(0x5555555555555555))
    values = (values & np.uint64(0x3333333333333333)) + ((values >> np.uint64(2)) & np.uint64(0x3333333333333333))
    values = (values + (values >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return (values * np.uint64(0x0101010101010101)) >> np.uint64(56)


def pairs_in_ranges(sources: np.ndarray, low: np.ndarray, high: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(source, partner) pairs for partner in [low, high) of each source, at most about
    _CANDIDATE_BUDGET at a time (a source with more partners comes alone)."""
    counts = high - low
    ends = np.cumsum(counts)
    start = 0
    while start < len(sources):
        before = int(ends[start - 1]) if start else 0
        stop = max(start + 1, int(np.searchsorted(ends, before + _CANDIDATE_BUDGET, side="right")))
        chunk_counts = counts[start:stop]
        total = int(ends[stop - 1]) - before
        partners = np.repeat(low[start:stop] - (np.cumsum(chunk_counts) - chunk_counts), chunk_counts)
        partners += np.arange(total)
        yield np.repeat(sources[start:stop], chunk_counts), partners
        start = stop


def _index_pairs(codes: np.ndarray, max_distance: int, plan: Plan) -> list[np.ndarray]:
    """hamming_pairs over all codes through the plan's tables: each pair is kept only in the first table (in
    lexicographic order of block choices) it meets in, so no pair is found twice.

    That first table is the `matching` lowest-numbered blocks the two codes agree on; a pair met
    in table t is therefore kept when every block not in t and below t's highest block differs.
    """
    count = len(codes)
    masks = plan.block_masks
    found: list[np.ndarray] = []
    for chosen in combinations(range(plan.blocks), plan.matching):
        table_mask = np.uint64(sum(masks[block] for block in chosen))
        earlier = [np.uint64(masks[block]) for block in range(chosen[-1]) if block not in chosen]
        keys = codes & table_mask
        order = np.argsort(keys)
        run_starts = _run_starts(keys[order])
        run_lengths = np.diff(np.append(run_starts, count))
        crowded = run_lengths > 1
        if not crowded.any():
            continue
        # Sorted positions inside buckets of two or more, with their bucket's bounds.
        run_starts, run_lengths = run_starts[crowded], run_lengths[crowded]
        positions = np.repeat(run_starts - (np.cumsum(run_lengths) - run_lengths), run_lengths)
        positions += np.arange(len(positions))
        run_end = np.repeat(run_starts + run_lengths, run_lengths)
        # Each pair from its earlier position in the bucket.
        has_later = run_end - positions > 1
        for source, partner in pairs_in_ranges(positions[has_later], positions[has_later] + 1, run_end[has_later]):
            found.append(_kept(order[source], order[partner], codes=codes, max_distance=max_distance, earlier=earlier))
    return found


def _run_starts(ordered: np.ndarray) -> np.ndarray:
    """Positions in a sorted array where a run of equal values begins."""
    new_run = np.ones(len(ordered), dtype=bool)
    np.not_equal(ordered[1:], ordered[:-1], out=new_run[1:])
    return np.flatnonzero(new_run)


def _kept(first: np.ndarray, second: np.ndarray, *, codes: np.ndarray, max_distance: int, earlier: list[np.uint64],
          also: np.ndarray | None = None) -> np.ndarray:
    """The candidate pairs (first[i], second[i]) a table keeps, as (lower, higher) rows: within
    max_distance bits, `also` where given, and met here first (they differ in every `earlier` block).
    The distance goes first: it drops most candidates, so the block tests see few."""
    difference = codes[first] ^ codes[second]
    keep = popcount(difference) <= max_distance
    if also is not None:
        keep &= also
    first, second, difference = first[keep], second[keep], difference[keep]
    keep = np.ones(len(first), dtype=bool)
    for block in earlier:
        keep &= (difference & block) != 0
    return np.stack([np.minimum(first, second)[keep], np.maximum(first, second)[keep]], axis=1)


# The slots that screen every code against one table's queried keys: 2^20 (4 MiB of int32), at a
# multiplicative (Fibonacci) hash of each key, which spreads any mask's bits over the top bits.
_FILTER_BITS = 20
_FIBONACCI = np.uint64(0x9E3779B97F4A7C15)


def _query_pairs(codes: np.ndarray, max_distance: int, plan: Plan, queries: np.ndarray) -> list[np.ndarray]:
    """_index_pairs for a few queried codes among many, without sorting every code into each table.

    Per table, only the queried codes' keys are sorted, and each distinct key is entered in a
    2^20-slot table at a hash of the key; one vectorised pass looks every code's slot up, and a
    code whose slot holds its very key meets that key's queried codes (a slot two keys share is
    settled by binary search). At 100,000 codes and 1,000 queried this is ~1 ms a table where
    sorting every code took ~10. The pairs are those _index_pairs keeps: each in the first table
    it meets in, a pair of two queried codes once.
    """
    asked = np.flatnonzero(queries)
    masks = plan.block_masks
    shift = np.uint64(BITS - _FILTER_BITS)
    found: list[np.ndarray] = []
    # One pass per table over every code: into buffers allocated once (fresh 8 MB temporaries per
    # step cost a page fault per 4 KiB, a third of the pass at 1,000,000 codes).
    keys, slots, entry = np.empty_like(codes), np.empty_like(codes), np.empty(len(codes), dtype=np.int32)
    buckets = np.zeros(1 << _FILTER_BITS, dtype=np.int32)  # slot -> 1 + distinct key's index, 0 none, -1 shared
    for chosen in combinations(range(plan.blocks), plan.matching):
        table_mask = np.uint64(sum(masks[block] for block in chosen))
        earlier = [np.uint64(masks[block]) for block in range(chosen[-1]) if block not in chosen]
        asked_keys = codes[asked] & table_mask
        order = np.argsort(asked_keys)
        sorted_keys = asked_keys[order]
        starts = _run_starts(sorted_keys)
        distinct, ends = sorted_keys[starts], np.append(starts[1:], len(sorted_keys))
        slot_of = ((distinct * _FIBONACCI) >> shift).view(np.int64)  # uint64 products wrap, as a hash should
        numbers = np.arange(1, len(distinct) + 1, dtype=np.int32)
        buckets[slot_of] = numbers
        buckets[slot_of[buckets[slot_of] != numbers]] = -1  # two keys on one slot
        np.bitwise_and(codes, table_mask, out=keys)
        np.multiply(keys, _FIBONACCI, out=slots)
        np.right_shift(slots, shift, out=slots)
        np.take(buckets, slots.view(np.int64), out=entry)  # slots < 2^20: the same numbers
        buckets[slot_of] = 0
        screened = np.flatnonzero(entry)
        low, high = _bucket_bounds(entry[screened], keys[screened], sorted_keys=sorted_keys, distinct=distinct,
                                   starts=starts, ends=ends)
        meets = high > low
        for source, position in pairs_in_ranges(screened[meets], low[meets], high[meets]):
            partner = asked[order[position]]
            # Two queried codes meet from both ends (and each meets itself): kept from the lower one.
            found.append(_kept(source, partner, codes=codes, max_distance=max_distance, earlier=earlier,
                               also=(source < partner) | ~queries[source]))
    return found


def _bucket_bounds(entry: np.ndarray, keys: np.ndarray, *, sorted_keys: np.ndarray, distinct: np.ndarray,
                   starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[low, high) in sorted_keys of the queried codes sharing each screened code's key (empty
    when none does), from its slot's entry: 1 + a distinct key's index, or -1 for a shared slot."""
    index = np.maximum(entry, 1) - 1
    low, high = starts[index], ends[index]
    other = (entry > 0) & (distinct[index] != keys)  # the slot holds another key with the same hash
    high[other] = low[other]
    shared = np.flatnonzero(entry < 0)
    if len(shared):
        low[shared] = np.searchsorted(sorted_keys, keys[shared], side="left")
        high[shared] = np.searchsorted(sorted_keys, keys[shared], side="right")
    return low, high


def _exhaustive_pairs(codes: np.ndarray, max_distance: int, queries: np.ndarray | None) -> list[np.ndarray]:
    """hamming_pairs by comparing every (queried) code with every later one (or every other one),
    a block of rows at a time. Hamming distance by matrix product: with bits as +-1,
    a.b = 64 - 2 * distance, one BLAS call per block sized to hold about 4M distances (16 MiB)."""
    count = len(codes)
    signs = np.unpackbits(codes.view(np.uint8).reshape(count, 8), axis=1).astype(np.float32) * 2.0 - 1.0
    threshold = BITS - 2 * max_distance - 0.5
    found: list[np.ndarray] = []
    if queries is None:
        start = 0
        while start < count - 1:
            # Rows [start, stop) against columns [start, count): the upper triangle only.
            stop = min(count, start + max(1, _EXHAUSTIVE_BLOCK // (count - start)))
            local, column = np.nonzero(signs[start:stop] @ signs[start:].T >= threshold)
            row, column = local + start, column + start
            keep = column > row
            found.append(np.stack([row[keep], column[keep]], axis=1))
            start = stop
        return found
    asked = np.flatnonzero(queries)
    block = max(1, _EXHAUSTIVE_BLOCK // count)
    for start in range(0, len(asked), block):
        chosen = asked[start : start + block]
        local, column = np.nonzero(signs[chosen] @ signs.T >= threshold)
        row = chosen[local]
        keep = (column > row) | ((column < row) & ~queries[column])
        found.append(np.stack([np.minimum(row, column)[keep], np.maximum(row, column)[keep]], axis=1))
    return found


def hamming_pairs(
    codes: np.ndarray, *, max_distance: int, queries: np.ndarray | None = None, method: str = "auto"
) -> np.ndarray:
    """Index pairs (i < j) of uint64 `codes` at most `max_distance` bits apart, as an (n, 2) int64
    array in no particular order, each pair once; with a boolean `queries` mask, only the pairs
    with at least one queried end.

    `method`: "index" (the multi-index tables), "exhaustive" (every pair, in blocks) or "auto"
    (whichever choose_plan expects to be faster; the answer is the same).
    """
    codes = np.ascontiguousarray(codes, dtype=np.uint64)
    count = len(codes)
    empty = np.zeros((0, 2), dtype=np.int64)
    if count < 2 or max_distance < 0 or (queries is not None and not queries.any()):
        return empty
    if method == "exhaustive":
        plan = None
    else:
        queried = None if queries is None else int(queries.sum())
        plan = choose_plan(count=count, max_distance=max_distance, queried=queried, codes=codes)
        if method == "index" and plan is None and max_distance < BITS:
            plan = Plan(blocks=max_distance + 1, matching=1)
        elif method not in ("auto", "index"):
            raise ValueError(f"method must be 'auto', 'index' or 'exhaustive', not {method!r}")
    if plan is None:
        found = _exhaustive_pairs(codes, max_distance, queries)
    elif queries is None:
        found = _index_pairs(codes, max_distance, plan)
    else:
        found = _query_pairs(codes, max_distance, plan, queries)
    return np.concatenate(found).astype(np.int64, copy=False) if found else empty


def cross_pairs(queries: np.ndarray, database: np.ndarray, *, max_distance: int, method: str = "auto",
                owners: np.ndarray | None = None) -> np.ndarray:
    """Index pairs (q, d) with queries[q] at most `max_distance` bits from database[d], as an
    (n, 2) int64 array in no particular order, each pair once: hamming_pairs between two sets.
    With `owners` (per query, a database index or -1), the pair (q, owners[q]) is left out.

    The database is sorted into the tables of the plan choose_plan picks for it, and each query's
    key is looked up in each table (a pair kept only in the first table it meets in, as
    _index_pairs keeps it); when comparing every pair is cheaper, it does that in blocks.
    `method` forces one as hamming_pairs' does ("index" or "exhaustive"; "auto" chooses).

    A crop hash shares most tables' keys with its own file's pHash: a bucket holding only the
    owner is skipped before any pair is built (at 1,000,000 files those were most candidates).
    """
    queries = np.ascontiguousarray(queries, dtype=np.uint64)
    database = np.ascontiguousarray(database, dtype=np.uint64)
    if not len(queries) or not len(database) or max_distance < 0:
        return np.zeros((0, 2), dtype=np.int64)
    if method not in ("auto", "index", "exhaustive"):
        raise ValueError(f"method must be 'auto', 'index' or 'exhaustive', not {method!r}")
    plan = None if method == "exhaustive" else choose_plan(count=len(database), max_distance=max_distance,
                                                            codes=database)
    if method == "index" and plan is None and max_distance < BITS:
        plan = Plan(blocks=max_distance + 1, matching=1)
    found = [np.zeros((0, 2), dtype=np.int64)]
    owners = np.full(len(queries), -1, dtype=np.int64) if owners is None else np.asarray(owners, dtype=np.int64)
    owned = owners >= 0
    if plan is None:
        query_signs, database_signs = (np.unpackbits(codes.view(np.uint8).reshape(-1, 8), axis=1).astype(np.float32)
                                       * 2.0 - 1.0 for codes in (queries, database))
        block = max(1, _EXHAUSTIVE_BLOCK // len(database))
        for start in range(0, len(queries), block):
            row, column = np.nonzero(query_signs[start:start + block] @ database_signs.T >= BITS - 2 * max_distance - 0.5)
            keep = column != owners[row + start]
            found.append(np.stack([row[keep] + start, column[keep]], axis=1).astype(np.int64))
        return np.concatenate(found)
    masks = plan.block_masks
    for chosen in combinations(range(plan.blocks), plan.matching):
        earlier = [np.uint64(masks[block]) for block in range(chosen[-1]) if block not in chosen]
        source_of, low, high, order = _cross_buckets(queries, database, [masks[block] for block in chosen])
        table_mask = np.uint64(sum(masks[block] for block in chosen))
        # Whether each query's owner is in its bucket (then one of the bucket's entries is no partner).
        own = owned & (((database[np.maximum(owners, 0)] ^ queries) & table_mask) == 0)
        meets = np.flatnonzero(high - low > own[source_of])
        for found_at, position in pairs_in_ranges(meets, low[meets], high[meets]):
            source = source_of[found_at]
            partner = order[position]
            difference = queries[source] ^ database[partner]
            keep = (popcount(difference) <= max_distance) & (partner != owners[source])
            for block_mask in earlier:
                keep &= (difference & block_mask) != 0
            found.append(np.stack([source[keep], partner[keep]], axis=1).astype(np.int64))
    return np.concatenate(found)


# Keys of at most this many bits are looked up in a table of 2^bits bucket starts (8 MiB at 20),
# not by sorting the queries and binary search.
_DIRECT_KEY_BITS = 22


def _compact_keys(codes: np.ndarray, block_masks: list[int]) -> np.ndarray:
    """The bits of `codes` under the (contiguous) block masks, packed side by side from bit 0."""
    keys = np.zeros(len(codes), dtype=np.uint64)
    offset = 0
    for mask in block_masks:
        start, width = (mask & -mask).bit_length() - 1, mask.bit_count()
        keys |= ((codes >> np.uint64(start)) & np.uint64((1 << width) - 1)) << np.uint64(offset)
        offset += width
    return keys


def _cross_buckets(queries: np.ndarray, database: np.ndarray,
                   block_masks: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For one table (the blocks `block_masks`): the database's positions sorted by key (`order`)
    and, per query (`source_of` gives which), the range [low, high) of `order` sharing its key.

    A short key indexes an array of bucket bounds: two gathers a query, where sorting 500,000
    queries' keys and searching for them cost 8x that; a long one falls back to the sorts."""
    bits = sum(mask.bit_count() for mask in block_masks)
    if bits <= _DIRECT_KEY_BITS:
        database_keys = _compact_keys(database, block_masks).astype(np.int64)
        order = np.argsort(database_keys, kind="stable")
        sizes = np.bincount(database_keys, minlength=1 << bits)
        query_keys = _compact_keys(queries, block_masks).astype(np.int64)
        high = np.cumsum(sizes)[query_keys]
        return np.arange(len(queries)), high - sizes[query_keys], high, order
    table_mask = np.uint64(sum(block_masks))
    order = np.argsort(database & table_mask)
    sorted_keys = (database & table_mask)[order]
    # The queries' keys sorted too: binary searches for ascending keys stay in cache (unsorted,
    # 500,000 searches in 100,000 keys took 0.14 s a table, ~8x this).
    source_of = np.argsort(queries & table_mask)
    keys = (queries & table_mask)[source_of]
    return source_of, np.searchsorted(sorted_keys, keys, side="left"), np.searchsorted(sorted_keys, keys, side="right"), order
