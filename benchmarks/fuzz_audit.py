"""Fuzz the audit for as long as you like: seeded mutations of every supported format, round after round.

Usage: python benchmarks/fuzz_audit.py [--minutes 10] [--files 1000] [--out fuzz-failures]

Each round writes --files mutated files (tests/fuzzing.py: bit flips, truncations, extreme header
fields, duplicated, dropped and swapped chunks of 16 valid seed files), audits them with the
library (an exception is a failure), then decodes every file the audit let through the way
`build` does (a file that passes the audit but fails to decode is a failure). Every failing
file is saved under --out with the round's seed in its name, to reproduce with
`trainwell audit --format json FOLDER`. Prints files/s beside the bare decode rate of the same
files in one process (the baseline: what the checks cost on top of decoding).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.fuzzing

from tests import fuzzing
from trainwell.audit.dataset import audit_dataset
from trainwell.data.decode import DecodeError, decode_image, resize_image
from trainwell.params import Params


def save(out: Path, seed: int, relative: str, data: bytes, why: str) -> None:
    target = out / f"seed{seed}" / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    (target.parent / f"{target.name}.why.txt").write_text(why)
    print(f"FAILURE seed {seed} {relative}: {why.splitlines()[-1] if why else ''} (saved to {target})")


def bare_decode_seconds(files: dict[str, bytes], max_pixels: int) -> float:
    started = time.perf_counter()
    for relative, data in files.items():
        with contextlib.suppress(DecodeError):
            decode_image(data, suffix=Path(relative).suffix, max_pixels=max_pixels)
    return time.perf_counter() - started


def one_round(seed: int, count: int, out: Path, params: Params) -> tuple[int, float, float, int]:
    """(files, audit seconds, bare decode seconds, failures) of one round."""
    files = fuzzing.corpus(count, seed=seed)
    failures = 0
    with tempfile.TemporaryDirectory(prefix="trainwell-fuzz-") as folder:
        root = Path(folder)
        for relative, data in files.items():
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            (root / relative).write_bytes(data)
        started = time.perf_counter()
        try:
            report = audit_dataset(root=root, data=params.data, policy=params.audit)
        except Exception:  # the audit itself must never raise for a file
            save(out, seed, "round", b"", traceback.format_exc())
            return count, time.perf_counter() - started, 0.0, 1
        audit_seconds = time.perf_counter() - started
    blocked = {issue.path for issue in report.issues if issue.severity == "error"}
    for relative in sorted(set(files) - blocked):
        try:
            decoded = decode_image(files[relative], suffix=Path(relative).suffix, max_pixels=params.audit.max_pixels)
            resize_image(decoded.image, size=params.data.image_size)
        except Exception:
            failures += 1
            save(out, seed, relative, files[relative], "passed the audit but does not build:\n" + traceback.format_exc())
    return count, audit_seconds, bare_decode_seconds(files, params.audit.max_pixels), failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--files", type=int, default=1000, help="files per round (default: %(default)s)")
    parser.add_argument("--out", default="fuzz-failures", help="where failing files are saved (default: %(default)s)")
    parser.add_argument("--first-seed", type=int, default=1)
    args = parser.parse_args()
    params = Params.model_validate({"audit": {"max_pixels": 4_000_000}})
    # libtiff's codecs come through tensorflow-io: loaded once here, so forked workers inherit it
    # instead of each round paying the import (~3 s) and the first round measuring mostly that.
    import tensorflow_io  # noqa: F401
    deadline = time.monotonic() + 60 * args.minutes
    seed, total, audit_time, bare_time, failures = args.first_seed, 0, 0.0, 0.0, 0
    while time.monotonic() < deadline:
        count, audited, bare, failed = one_round(seed, args.files, Path(args.out), params)
        total, audit_time, bare_time, failures = total + count, audit_time + audited, bare_time + bare, failures + failed
        print(f"round seed {seed}: {count} files, audit {count / audited:.0f} files/s, {failed} failure(s)")
        seed += 1
    print(f"fuzzed {total} files in {seed - args.first_seed} rounds: audit {total / audit_time:.0f} files/s (all cores) "
          f"beside a bare one-process decode of the same files at {total / bare_time:.0f} files/s "
          f"(ratio {bare_time / audit_time:.2f}); {failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
