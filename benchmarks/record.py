"""Run a benchmark and keep what it printed in benchmarks/results/NAME.txt, which docs/benchmarks.md includes.

Usage: python benchmarks/record.py NAME [ARGS...]     (NAME: a script in benchmarks/, without .py)

The script runs as it would on its own (its output shown as it comes); when it exits 0, its
standard output is saved under a header naming the command, the trainwell commit, the date and
the machine's load, so the figures in the documentation are the benchmark's own words, never
typed by hand. A failed run writes nothing and exits with the script's code.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
RESULTS = BENCHMARKS / "results"
REPOSITORY = BENCHMARKS.parent
# This runner, the real-data loader the others import, the baselines end_to_end.py runs, and a
# diagnostic that lists audit_precision's misses (no figure beside a baseline).
NOT_BENCHMARKS = {"record", "real_data", "tutorial_train", "cleanlab_review", "near_duplicate_misses"}


def benchmark_names() -> list[str]:
    """Every script in benchmarks/ that record.py can run."""
    return sorted(path.stem for path in BENCHMARKS.glob("*.py")
                  if path.stem not in NOT_BENCHMARKS and not path.stem.startswith("_"))


def commit() -> str:
    """The checkout's commit, with "+changes" when the working tree differs from it."""
    def git(*arguments: str) -> str:
        done = subprocess.run(["git", *arguments], cwd=REPOSITORY, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""
    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def header(*, command: list[str], checkout: str, started: datetime, load_before: float, load_after: float,
           seconds: float) -> str:
    when = started.strftime("%Y-%m-%d %H:%M UTC")
    return (f"$ python {' '.join(command)}\n"
            f"# trainwell {checkout}, {when}, {os.cpu_count()} cores, 1-min load average "
            f"{load_before:.1f} at the start, {load_after:.1f} at the end, {seconds:.0f} s\n")


def run(name: str, arguments: list[str]) -> int:
    """Run benchmarks/NAME.py, echo and collect its stdout; save it when it succeeds."""
    script = BENCHMARKS / f"{name}.py"
    command = [f"benchmarks/{name}.py", *arguments]
    # The checkout and time it started from (a commit made while it runs is not what it measured).
    checkout, started_at = commit(), datetime.now(timezone.utc)
    load_before, started = os.getloadavg()[0], time.monotonic()
    process = subprocess.Popen([sys.executable, "-u", str(script), *arguments], cwd=REPOSITORY,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        lines.append(line)
    if process.wait() != 0:
        print(f"record: benchmarks/{name}.py exited {process.returncode}; nothing saved", file=sys.stderr)
        return process.returncode
    from trainwell.outputs import write_bytes_atomically

    text = header(command=command, checkout=checkout, started=started_at, load_before=load_before, load_after=os.getloadavg()[0],
                  seconds=time.monotonic() - started) + "".join(lines)
    target = RESULTS / f"{name}.txt"
    write_bytes_atomically(target, text.encode())
    print(f"record: saved {target}", file=sys.stderr)
    return 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python benchmarks/record.py NAME [ARGS...]\n\n" + __doc__ + "\nBenchmarks: "
              + ", ".join(benchmark_names()))
        return 0 if argv else 2
    if argv[0] not in benchmark_names():
        print(f"record: no benchmark named {argv[0]!r}; one of: {', '.join(benchmark_names())}", file=sys.stderr)
        return 2
    return run(argv[0], argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
