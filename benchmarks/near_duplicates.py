"""Benchmark: the audit's near-duplicate search (multi-index hashing) beside comparing every pair, in one run.

Usage: python benchmarks/near_duplicates.py [--sizes 10000 100000] [--full] [--baseline-sizes 10000 40000] [--crops]

Synthetic pHashes, 16x16 fine and 8x8 colour thumbnails shaped like a real audit's: 90% random
pictures, 9.8% near copies of earlier ones (1 to d+1 bits flipped, fine thumbnails with noise on
both sides of the confirmation bar, colours shifted in brightness) and 0.2% blank pictures sharing
one hash and thumbnails (the heavy bucket). For each size it prints
the seconds and peak RSS of the indexed search (`near_duplicate_pairs`, method "index"), and
where comparing every pair is affordable (--baseline-sizes) that exhaustive search's figures,
the speed-up ratio and whether both found the same pairs. --crops adds five crop hashes a file
(each 2-8 bits from its own pHash, as real ones are), searched against every pHash as the audit does. --full adds 1,000,000 hashes (about
half a minute with data generation; the bar there is under 60 s and 2 GiB).

Each measurement runs in a fresh process that first generates its data, then resets its peak
RSS (/proc/self/clear_refs), so "peak" is the process's largest RSS during the search: the
inputs (printed beside it) plus what the search held, not data generation's temporaries. A
SHA-256 of the found pairs checks that both searches agree.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time

import numpy as np

from trainwell.audit.hamming import choose_plan
from trainwell.audit.near_duplicates import Confirm, near_duplicate_pairs
from trainwell.params import AuditParams

# --shipped-rule: the audit's whole rule (the crop bar and distinctive matches too), whose
# crop-tolerant comparisons cost ~10x a fine one for each candidate between 0.9 and the fine bar.
SHIPPED = Confirm(min_similarity=AuditParams().near_duplicate_similarity,
                  max_colour_difference=AuditParams().near_duplicate_pixel_difference,
                  min_crop_similarity=AuditParams().near_duplicate_crop_similarity,
                  min_distinctive_similarity=AuditParams().near_duplicate_distinctive_similarity,
                  distinctive_ratio=AuditParams().near_duplicate_distinctive_ratio)
CONFIRM = Confirm(min_similarity=AuditParams().near_duplicate_similarity,
                  max_colour_difference=AuditParams().near_duplicate_pixel_difference)
RULE = [CONFIRM]  # the rule this run confirms with


def synthetic(count: int, max_distance: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`count` pHashes (n, 8), fine (n, 256) and colour thumbnails (n, 192) with near copies and a
    blank crowd, shuffled."""
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 256, size=(count, 8), dtype=np.uint8)
    fine = rng.integers(0, 256, size=(count, 256), dtype=np.uint8)
    thumbnails = rng.integers(0, 256, size=(count, 192), dtype=np.uint8)
    copies, blanks = int(count * 0.098), int(count * 0.002)
    originals = rng.integers(0, count - copies - blanks, size=copies)
    targets = np.arange(count - copies - blanks, count - blanks)
    # Flip 1..d+1 distinct bits: a random permutation's first k positions per row.
    flips = rng.integers(1, max_distance + 2, size=copies)
    chosen = np.argsort(rng.random((copies, 64)), axis=1) < flips[:, None]
    hashes[targets] = hashes[originals] ^ np.packbits(chosen, axis=1)
    # Fine thumbnails with noise of 0..12 grey levels (around the 0.995 bar for a spread of ~74), and
    # colours made brighter by 0..20 (chroma unchanged: every copy passes the colour check).
    noise = rng.integers(0, 13, size=(copies, 1)) * rng.uniform(-1, 1, size=(copies, 256))
    fine[targets] = np.clip(fine[originals] + noise, 0, 255).astype(np.uint8)
    nudge = rng.integers(0, 21, size=(copies, 1), dtype=np.int16)
    thumbnails[targets] = np.clip(thumbnails[originals].astype(np.int16) + nudge, 0, 255).astype(np.uint8)
    hashes[count - blanks :] = 0
    fine[count - blanks :] = 0
    thumbnails[count - blanks :] = 0
    order = rng.permutation(count)
    return hashes[order], fine[order], thumbnails[order]


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as status:
        return int(next(line.split()[1] for line in status if line.startswith(field + ":"))) / 1024


def synthetic_crops(hashes: np.ndarray, seed: int = 1) -> np.ndarray:
    """Crop hashes (n, 5, 8) shaped like real ones: each within 2..8 bits of its own file's pHash
    (a 2% crop moves pHash a few bits), so every file's crops meet its own pHash and its copies'."""
    rng = np.random.default_rng(seed)
    count = len(hashes)
    flips = rng.integers(2, 9, size=(count, 5))
    chosen = np.argsort(rng.random((count, 5, 64)), axis=2) < flips[:, :, None]
    return hashes[:, None, :] ^ np.packbits(chosen, axis=2)


def measure(count: int, max_distance: int, method: str, crops: bool = False) -> dict:
    """One search in this process: seconds, RSS of the inputs, peak RSS while searching (MiB)."""
    hashes, fine, thumbnails = synthetic(count, max_distance)
    crop_hashes = synthetic_crops(hashes) if crops else None
    inputs = _status_mib("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # reset VmHWM to the current RSS (Linux >= 4.0)
        reset = True
    except OSError:
        reset = False
    start = time.perf_counter()
    pairs = near_duplicate_pairs(hashes=hashes, crops=crop_hashes, fine=fine, thumbnails=thumbnails,
                                 max_distance=max_distance, confirm=RULE[0], method=method)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "inputs_mib": inputs, "peak_mib": _status_mib("VmHWM"), "peak_is_search_only": reset,
            "pairs": len(pairs), "digest": hashlib.sha256(pairs.tobytes()).hexdigest()[:16]}


def in_fresh_process(count: int, max_distance: int, method: str, crops: bool = False) -> dict:
    done = subprocess.run([sys.executable, __file__, "--measure", str(count), str(max_distance), method,
                           *(["--crops"] if crops else []), *(["--shipped-rule"] if RULE[0] is SHIPPED else [])],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000], help="hash counts to search")
    parser.add_argument("--full", action="store_true", help="also search 1,000,000 hashes")
    parser.add_argument("--baseline-sizes", type=int, nargs="*", default=[10_000, 40_000],
                        help="counts at which every pair is also compared (quadratic: 40,000 take ~5 s)")
    parser.add_argument("--distance", type=int, default=5, help="audit.near_duplicate_distance (bits)")
    parser.add_argument("--crops", action="store_true",
                        help="also search five crop hashes a file against every pHash (the audit's default); "
                             "the every-pair baseline then compares only the pHashes exhaustively")
    parser.add_argument("--shipped-rule", action="store_true",
                        help="confirm with the audit's whole rule (crop bar, distinctive matches), not the fine bar alone")
    parser.add_argument("--measure", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.shipped_rule:
        RULE[0] = SHIPPED
    if args.measure:
        count, max_distance, method = args.measure
        print(json.dumps(measure(int(count), int(max_distance), method, crops=args.crops)))
        return
    sizes = sorted(set(args.sizes) | set(args.baseline_sizes) | ({1_000_000} if args.full else set()))
    print(f"near-duplicate search, d = {args.distance} bits, confirmed at similarity {CONFIRM.min_similarity}"
          f"{' (and the crop bar, distinctive matches)' if args.shipped_rule else ''}")
    print(f"{'hashes':>9}  {'plan':<18} {'indexed s':>9} {'peak MiB':>9} {'inputs':>7} {'pairs':>8}  "
          f"{'every pair s':>12} {'peak MiB':>9}  speed-up  same pairs")
    results = []
    for count in sizes:
        plan = choose_plan(count=count, max_distance=args.distance)
        label = f"{plan.matching} of {plan.blocks} blocks" if plan else "exhaustive"
        ours = in_fresh_process(count, args.distance, "index", crops=args.crops)
        line = (f"{count:>9,}  {label:<18} {ours['seconds']:>9.3f} {ours['peak_mib']:>9.0f} "
                f"{ours['inputs_mib']:>7.0f} {ours['pairs']:>8,}")
        row = {"count": count, "plan": label, "indexed": ours}
        if count in args.baseline_sizes:
            theirs = in_fresh_process(count, args.distance, "exhaustive", crops=args.crops)
            ratio = theirs["seconds"] / ours["seconds"]
            line += (f"  {theirs['seconds']:>12.3f} {theirs['peak_mib']:>9.0f}  {ratio:>7.1f}x  "
                     f"{'yes' if theirs['digest'] == ours['digest'] else 'NO'}")
            row.update(exhaustive=theirs, speedup=round(ratio, 1))
        print(line, flush=True)
        results.append(row)
    if not all(row["indexed"]["peak_is_search_only"] for row in results):
        print("note: /proc/self/clear_refs was not writable, so peaks include the inputs")
    if args.full:
        million = next(row["indexed"] for row in results if row["count"] == 1_000_000)
        holds = million["seconds"] < 60 and million["peak_mib"] < 2048
        print(f"1,000,000 hashes: {million['seconds']:.1f} s, peak {million['peak_mib']:.0f} MiB "
              f"(bar: < 60 s and < 2048 MiB) {'PASS' if holds else 'FAIL'}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
