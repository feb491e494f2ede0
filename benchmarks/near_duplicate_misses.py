"""Benchmark: where the planted near-duplicates the audit misses fall, per set and per edit, beside the nearest false pairs.

Usage: python benchmarks/near_duplicate_misses.py [--sets mnist,photos,...] [--planted 200] [--seed 0]

Plants copies as benchmarks/audit_precision.py does (same edits, same seed), audits the folder
with the shipped params, and for every planted pair the audit did not group prints why: was it
a candidate at all (pHash within audit.near_duplicate_distance bits, one's crop hash within that
of the other's pHash, or fine thumbnails alike unshifted), was it kept (alike enough to be
weighed), its fine and detail similarities, its colour difference, and the best similarity
either file has with any OTHER kept candidate that is not strong (its candidate rival) and with
its nearest thumbnails (its nearest rival): a distinctive match needs its distance at most
audit.near_duplicate_distinctive_ratio x a rival's. Beside them, the best similarities among
kept candidate pairs that are not planted copies (the look-alikes a looser bar would group).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("TQDM_DISABLE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import audit_precision
import real_data
from trainwell.audit import dataset as audit_dataset_module
from trainwell.audit.candidates import block_pairs
from trainwell.audit.close_look import CloseLook, common_centre_keys
from trainwell.audit.hamming import cross_pairs, hamming_pairs, popcount
from trainwell.audit.near_duplicates import Confirm, nearest_rivals, neighbour_pairs, scored
from trainwell.audit.similarity import colour_differences, detail_similarities, fine_similarities
from trainwell.console import QUIET, set_verbosity
from trainwell.params import Params

TABLES: list = []
DUMP: list[Path] = []
CROP_DISTANCE = [0]  # --crop-distance: bits for the crop hashes' search (0: the audit's)  # --dump: where each set's candidate pairs and scores are saved
_original = audit_dataset_module._near_duplicate_findings


def _capturing(table, **keywords):
    TABLES.append(table)
    return _original(table, **keywords)


audit_dataset_module._near_duplicate_findings = _capturing


def candidate_pairs(codes: np.ndarray, crops: np.ndarray, fine: np.ndarray, max_distance: int,
                    crop_distance: int, look: CloseLook) -> np.ndarray:
    """Every candidate pair (i < j) the audit's search makes: pHash or crop hash matches (the
    crop hashes within crop_distance bits: the audit's is max_distance; more, to see what a
    wider crop search would find), fine thumbnails alike unshifted (neighbour_pairs) and native
    centre blocks shared (block_pairs)."""
    plain = hamming_pairs(codes, max_distance=max_distance)
    probes = crops.shape[1]
    flat = np.ascontiguousarray(crops).view(np.uint64).ravel()
    found = cross_pairs(flat, codes, max_distance=crop_distance, owners=np.repeat(np.arange(len(codes)), probes))
    cropped = np.stack([found[:, 0] // probes, found[:, 1]], axis=1)
    both = np.concatenate([plain, np.sort(cropped, axis=1), neighbour_pairs(fine),
                           block_pairs(look.native, look.shape, common=common_centre_keys(look.native, look.shape))])
    return np.unique(both, axis=0)


def _confirm() -> Confirm:
    policy = Params().audit
    return Confirm(min_similarity=policy.near_duplicate_similarity,
                   max_colour_difference=policy.near_duplicate_pixel_difference,
                   min_crop_similarity=policy.near_duplicate_crop_similarity,
                   min_distinctive_similarity=policy.near_duplicate_distinctive_similarity,
                   distinctive_ratio=policy.near_duplicate_distinctive_ratio)


def measure(name: str, planted_count: int, seed: int, scratch: Path) -> list[dict]:
    folder = scratch / name
    real_data.write(name, folder)
    planted = audit_precision.plant(folder, planted_count, seed)
    TABLES.clear()
    report, _, _ = audit_precision.audit(folder, {})
    table = TABLES[-1]
    decoded = np.flatnonzero(table.decoded)
    paths = [table.paths[row] for row in decoded.tolist()]
    index = {path: position for position, path in enumerate(paths)}
    columns = {key: table.columns[key][decoded] for key in ("perceptual_hash", "crop_hashes", "fine", "detail",
                                                             "thumbnail", "native", "native_shape")}
    codes = np.ascontiguousarray(columns["perceptual_hash"]).view(np.uint64).ravel()
    max_distance = Params().audit.near_duplicate_distance
    fine, detail, thumbnails = columns["fine"], columns["detail"], columns["thumbnail"]
    look = CloseLook(detail, columns["native"], columns["native_shape"])
    pairs = candidate_pairs(codes, columns["crop_hashes"], fine, max_distance, CROP_DISTANCE[0] or max_distance, look)
    confirm = _confirm()
    # What the audit weighs: each candidate's similarity (detail for kept pairs), strength and whether it is kept.
    score, strong, kept = scored(pairs, fine=fine, thumbnails=thumbnails, confirm=confirm, detail=look)
    # Copies of one original are also copies of each other: not look-alikes.
    origin = np.arange(len(paths))
    for original, copy, _ in planted:
        if original in index and copy in index:
            origin[index[copy]] = index[original]
    false = origin[pairs[:, 0]] != origin[pairs[:, 1]]
    group_of = {}
    for number, group in enumerate([*(group["members"] for group in report["near_duplicate_groups"]),
                                    *report["duplicate_groups"]]):
        for path in group:
            group_of[path] = number
    rows = []
    for original, copy, edit in planted:
        a, b = index[original], index[copy]
        low, high = min(a, b), max(a, b)
        distance = int(popcount(codes[low:low + 1] ^ codes[high:high + 1])[0])
        crop_distance = min(int(popcount(np.ascontiguousarray(columns["crop_hashes"][x]).view(np.uint64) ^ codes[y]).min())
                            for x, y in ((a, b), (b, a)))
        where = np.flatnonzero((pairs[:, 0] == low) & (pairs[:, 1] == high))
        colour = float(colour_differences(thumbnails[[low]], thumbnails[[high]], fine[[low]], fine[[high]])[0])
        rival = [float(score[((pairs[:, 0] == end) | (pairs[:, 1] == end)) & false & kept & ~strong].max(initial=-1.0))
                 for end in (a, b)]
        nearest = nearest_rivals(np.array([[low, high]]), fine, copies=np.zeros((0, 2), np.int64), detail=look)
        rows.append({"set": name, "edit": edit, "found": original in group_of and group_of.get(copy) == group_of[original],
                     "candidate": len(where) > 0, "kept": bool(len(where) and kept[where[0]]),
                     "strong": bool(len(where) and strong[where[0]]), "distance": distance,
                     "crop_distance": crop_distance, "fine": float(fine_similarities(fine[[low]], fine[[high]])[0]),
                     "detail": float(detail_similarities(detail[[low]], detail[[high]])[0]), "colour": colour,
                     "rival": max(rival), "nearest": float(nearest.max())})
    if DUMP:
        copy_edit = np.full(len(paths), "", dtype=object)
        for _, copy, edit in planted:
            copy_edit[index[copy]] = edit
        np.savez(DUMP[0] / f"{name}.npz", pairs=pairs, score=score, strong=strong, kept=kept, origin=origin,
                 edit=copy_edit.astype(str))
    look_alikes = score[false & kept]
    print(f"{name}: {len(paths)} files, {len(pairs):,} candidate pairs, {int(false.sum()):,} not planted copies "
          f"({int((false & kept).sum()):,} kept); kept look-alikes' best similarity "
          f"{np.round(np.sort(look_alikes)[::-1][:3], 4).tolist()}, strong ones {int((false & strong).sum())}")
    for edit in audit_precision.EDITS:
        mine = [row for row in rows if row["edit"] == edit]
        missed = [row for row in mine if not row["found"]]
        print(f"  {edit:10s} found {len(mine) - len(missed)}/{len(mine)}; misses: "
              f"not candidates {sum(not row['candidate'] for row in missed)}")
        for row in missed:
            print(f"    candidate {'yes' if row['candidate'] else 'no '} kept {'yes' if row['kept'] else 'no '} "
                  f"pHash {row['distance']:2d} crop-hash {row['crop_distance']:2d} fine {row['fine']:.4f} "
                  f"detail {row['detail']:.4f} colour {row['colour']:5.1f} candidate rival {row['rival']:.4f} "
                  f"nearest rival {row['nearest']:.4f}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default=",".join(real_data.SETS))
    parser.add_argument("--planted", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dump", type=Path, help="save each set's candidate pairs and their scores here (.npz)")
    parser.add_argument("--crop-distance", type=int, default=0, help="search crop hashes within this many bits")
    args = parser.parse_args()
    CROP_DISTANCE[0] = args.crop_distance
    if args.dump:
        args.dump.mkdir(parents=True, exist_ok=True)
        DUMP.append(args.dump)
    set_verbosity(QUIET)
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.sets.split(","):
            measure(name, args.planted, args.seed, Path(scratch))
            shutil.rmtree(Path(scratch) / name)


if __name__ == "__main__":
    main()
