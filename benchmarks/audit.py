"""Benchmark: `trainwell audit` images/s beside cleanvision's Imagelab.find_issues() on the same folder.

Usage: python benchmarks/audit.py [--images 3000] [--repeats 3] [--side 75]
Needs the bench extra (pip install -e '.[bench]') for cleanvision 0.3.7.

Prints, from one run on one freshly generated folder of clean 75x75 JPEGs (--side: another size;
cleanvision 0.3.7 crashes on a truncated JPEG, so the comparison folder is clean):
- full audit: trainwell vs cleanvision images/s and their ratio (bar: trainwell >= 20x, issue #16);
- incremental re-audit after changing 1% of the files, as a share of the full audit time (bar: < 5%);
- which problem kinds each tool can detect (trainwell must cover a superset);
- peak memory of a trainwell audit at 1x and 4x the folder size (should stay flat: no
  per-image arrays are kept, only a few KiB of results per file).
Both tools use every core; runs are interleaved and the median is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# cleanvision draws tqdm bars on stderr even with verbose=False.
os.environ.setdefault("TQDM_DISABLE", "1")

from trainwell.audit.dataset import audit_dataset
from trainwell.data.demo import SHAPES, draw_shape, encode_jpeg
from trainwell.kinds import DEFAULT_SEVERITY
from trainwell.params import AuditParams, DataParams

# cleanvision 0.3.7's issue types and the trainwell kind that covers each.
CLEANVISION_TO_TRAINWELL = {
    "dark": "dark",
    "light": "light",
    "odd_aspect_ratio": "odd_aspect_ratio",
    "low_information": "low_information",
    "exact_duplicates": "exact_duplicate",
    "near_duplicates": "near_duplicate",
    "blurry": "blurry",
    "grayscale": "grayscale",
    "odd_size": "too_small",
}


def make_folder(root: Path, images: int, *, seed: int = 0, side: int = 75) -> None:
    per_class = images // len(SHAPES)
    for label in SHAPES:
        for index in range(per_class):
            image = draw_shape(shape=label, size=side, rng=np.random.default_rng([seed, SHAPES.index(label), index]))
            path = root / label / f"{label}_{index:05d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(encode_jpeg(image))


def time_trainwell(root: Path, cache: Path | None = None) -> float:
    start = time.perf_counter()
    audit_dataset(root=root, data=DataParams(dir=str(root)), policy=AuditParams(), cache_file=cache)
    return time.perf_counter() - start


def time_cleanvision(root: Path) -> float:
    from cleanvision import Imagelab

    start = time.perf_counter()
    Imagelab(data_path=str(root), verbose=False).find_issues(verbose=False)
    return time.perf_counter() - start


def peak_memory_mib(root: Path) -> float:
    """Peak RSS of a fresh process auditing root (trainwell CLI, standalone mode), in MiB.

    Read from /proc (VmHWM, the process's own address space): getrusage's ru_maxrss survives
    exec, so a child of this large benchmark process would report this process's peak instead.
    """
    code = (
        "import sys; from trainwell.cli import main; main(['audit', sys.argv[1], '--format', 'json'])\n"
        "print(next(line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM:')), "
        "file=sys.stderr)"
    )
    done = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, check=False)
    return int(done.stderr.strip().splitlines()[-1]) / 1024


def incremental_times(root: Path, cache: Path, repeats: int, side: int) -> dict[str, list[float]]:
    """Full audits, then re-audits with the cache after changing a different 1% each round.

    Runs in a process of its own (see main), so numerator and denominator come from the same
    process and nothing cleanvision left behind (threads, imports, heap) weighs on either. The
    new bytes are drawn from a seed no earlier run used: bytes the cache has seen before would be
    found by content hash and never decoded, which flatters the figure.
    """
    full = [time_trainwell(root) for _ in range(repeats)]
    time_trainwell(root, cache)  # fills the cache
    files = sorted(root.rglob("*.jpg"))
    fresh = time.time_ns() % 2**32
    incremental = []
    for repeat in range(repeats):
        for index, path in enumerate(files[repeat::100]):
            image = draw_shape(shape="ring", size=side, rng=np.random.default_rng([fresh, repeat, index]))
            path.write_bytes(encode_jpeg(image))
        incremental.append(time_trainwell(root, cache))
    return {"full": full, "incremental": incremental, "changed": len(files[::100])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--side", type=int, default=75, help="image width and height in pixels (75: the demo's; "
                        "400 is near ImageNet's typical 500x375)")
    parser.add_argument("--incremental-only", metavar="FOLDER", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.incremental_only:
        folder = Path(args.incremental_only)
        print(json.dumps(incremental_times(folder / "images", folder / "cache.json", args.repeats, args.side)))
        return
    workspace = Path(tempfile.mkdtemp(prefix="trainwell-bench-audit-"))
    try:
        root = workspace / "images"
        make_folder(root, args.images, side=args.side)
        count = sum(1 for _ in root.rglob("*.jpg"))
        ours, theirs = [], []
        for _ in range(args.repeats):
            ours.append(time_trainwell(root))
            theirs.append(time_cleanvision(root))
        ours_rate, theirs_rate = count / statistics.median(ours), count / statistics.median(theirs)
        print(f"folder: {count} JPEGs, {args.side}x{args.side}")
        print(f"trainwell audit:            {ours_rate:9.0f} images/s (median of {args.repeats})")
        print(f"cleanvision find_issues():  {theirs_rate:9.0f} images/s (median of {args.repeats})")
        ratio = ours_rate / theirs_rate
        print(f"ratio trainwell/cleanvision: {ratio:.1f}x (bar: >= 20x) {'PASS' if ratio >= 20 else 'FAIL'}")

        done = subprocess.run([sys.executable, __file__, "--incremental-only", str(workspace), "--repeats",
                               str(args.repeats), "--side", str(args.side)], capture_output=True, text=True, check=True)
        times = json.loads(done.stdout.strip().splitlines()[-1])
        full, incremental = statistics.median(times["full"]), statistics.median(times["incremental"])
        share = incremental / full
        print(f"incremental re-audit after changing {times['changed']} files ({times['changed'] / count:.0%}): "
              f"{incremental:.3f} s vs {full:.3f} s full in the same fresh process = {share:.1%} (medians of "
              f"{args.repeats}; bar: < 5%) {'PASS' if share < 0.05 else 'FAIL'}")

        theirs_kinds = set(CLEANVISION_TO_TRAINWELL)
        ours_kinds = set(DEFAULT_SEVERITY)
        missing = sorted(kind for kind in theirs_kinds if CLEANVISION_TO_TRAINWELL[kind] not in ours_kinds)
        print(f"problem kinds: cleanvision {len(theirs_kinds)}, trainwell {len(ours_kinds)}; cleanvision kinds "
              f"trainwell lacks: {missing or 'none'}; trainwell only: "
              f"{sorted(ours_kinds - set(CLEANVISION_TO_TRAINWELL.values()))}")

        # Four times as many different pictures (copies would be 12,000 duplicate findings, and
        # measure the report's size rather than the audit's streaming).
        bigger = workspace / "bigger"
        make_folder(bigger, 4 * args.images, seed=1, side=args.side)
        small_peak, large_peak = peak_memory_mib(root), peak_memory_mib(bigger)
        print(f"peak RSS: {small_peak:.0f} MiB at {count} files, {large_peak:.0f} MiB at {4 * count} files "
              f"(x{large_peak / small_peak:.2f} for 4x the files; "
              f"{(large_peak - small_peak) * 1024 / (3 * count):.1f} KiB per added file)")
        print(json.dumps({"trainwell_images_per_s": round(ours_rate), "cleanvision_images_per_s": round(theirs_rate),
                          "ratio": round(ratio, 2), "incremental_share": round(share, 4),
                          "peak_rss_mib": [round(small_peak), round(large_peak)]}))
    finally:
        shutil.rmtree(workspace, ignore_errors=True)


if __name__ == "__main__":
    main()
