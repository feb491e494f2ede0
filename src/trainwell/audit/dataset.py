"""Auditing a whole dataset: per-file checks (cached by content), duplicates, balance, and the policy's verdict."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainwell import storage
from trainwell.audit.cache import AuditCache
from trainwell.audit.checks import new_columns
from trainwell.audit.close_look import CloseLook, common_centre_keys
from trainwell.audit.near_duplicates import Confirm, Scored, distinctive, near_duplicate_groups, scored_pairs
from trainwell.audit.properties import property_findings
from trainwell.audit.report import AuditReport
from trainwell.audit.workers import CheckedBatch, check_all, frozen_heap, reap_all
from trainwell.data.listing import Listing, list_sources
from trainwell.kinds import Finding, judge, shared_notes
from trainwell.params import AuditParams, DataParams, Params


@dataclass
class FileTable:
    """Per-file results of one audit as columns, row i describing paths[i] (see file_checks.stored_columns).

    Only `findings` holds per-file Python objects, and only for the files that have some: a
    re-audit fills the columns for unchanged files with one gather from the cache.
    """

    paths: list[str]
    labels: list[str]
    columns: dict[str, np.ndarray]
    findings: dict[str, list[tuple[str, str]]]  # path -> (kind, detail) pairs

    @classmethod
    def empty(cls, files: list[tuple[str, str]]) -> FileTable:
        return cls(paths=[path for path, _ in files], labels=[label for _, label in files],
                   columns=new_columns(len(files)), findings={})

    def put(self, positions: np.ndarray, batch: CheckedBatch) -> None:
        """Rows `positions` from a batch of freshly checked files, one array assignment per column."""
        for name, column in batch.columns.items():
            self.columns[name][positions] = column
        for row, found in batch.findings.items():
            self.findings[self.paths[positions[row]]] = found

    @property
    def decoded(self) -> np.ndarray:
        """Which rows decoded to pixels (and so take part in the duplicate checks)."""
        return self.columns["pixel_hash"] != b""


# A finding names at most this many of its group's other members: a group of n copies would
# otherwise write n x n names into the report (the whole group is in its duplicate_groups list).
NAMED_OTHERS = 5
# Crop hashes are searched (candidates.crop_pairs) up to this many decoded files. Their
# search grows faster than the files: 2.9 s at 100,000 but 102 s at 1,000,000 against 15 s for
# the pHashes alone (benchmarks/near_duplicates.py --crops), past the 60 s bar for 1M hashes.
CROP_SEARCH_MAX_FILES = 250_000
# Fine thumbnails are compared pair by pair for candidates (candidates.neighbour_pairs) up to
# this many decoded files: its cost grows with their square (~5 s at 20,000 on 2 cores, minutes at
# 100,000); past it the hashes alone find the candidates.
NEIGHBOUR_SEARCH_MAX_FILES = 20_000


def _others(paths: list[str], position: int) -> str:
    """The group members other than paths[position], the first NAMED_OTHERS by name and a count of the rest."""
    named = [other for index, other in enumerate(paths[:NAMED_OTHERS + 1]) if index != position][:NAMED_OTHERS]
    rest = len(paths) - 1 - len(named)
    return ", ".join(named) + (f" and {rest} more (the group is listed whole in the JSON report)" if rest else "")


def _duplicate_findings(table: FileTable) -> tuple[list[Finding], list[list[str]]]:
    """Same pixels within a class are duplicates; same pixels under two classes is a label conflict.

    Also returns the groups of pixel-identical files, which `split` keeps in one split."""
    decoded = np.flatnonzero(table.decoded)
    hashes = np.ascontiguousarray(table.columns["pixel_hash"][decoded])
    # Only rows whose hash's first 8 bytes recur can repeat it: found by sorting integers (a
    # million 16-byte strings took ~0.5 s to sort), then the few candidates compared whole.
    _, prefix_of_row, prefix_counts = np.unique(hashes.view(np.uint64)[::2], return_inverse=True,
                                                return_counts=True)
    candidates = decoded[prefix_counts[prefix_of_row.ravel()] > 1]
    _, inverse, counts = np.unique(table.columns["pixel_hash"][candidates], return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    # Members of every repeated hash at once: rows sorted by hash, cut where the hash changes
    # (one pass, where a mask per group cost a pass over every file per group).
    repeated_rows = np.flatnonzero(counts[inverse] > 1)
    ordered = repeated_rows[np.argsort(inverse[repeated_rows], kind="stable")]
    cuts = np.flatnonzero(np.diff(inverse[ordered])) + 1
    issues, path_groups = [], []
    for group in np.split(candidates[ordered], cuts) if len(ordered) else []:
        members = group.tolist()
        labels = sorted({table.labels[member] for member in members})
        paths = [table.paths[member] for member in members]
        path_groups.append(paths)
        for position, path in enumerate(paths):
            if len(labels) > 1:
                issues.append(Finding(path, "label_conflict",
                                      f"same pixels appear under classes {labels}: {_others(paths, position)}"))
            else:
                issues.append(Finding(path, "exact_duplicate", f"same pixels as {_others(paths, position)}"))
    return issues, sorted(path_groups)


def _constant_rows(table: FileTable) -> np.ndarray:
    """Which rows the audit found to be one colour throughout (file_checks.constant_findings)."""
    blank = {path for path, found in table.findings.items() if any(kind == "constant" for kind, _ in found)}
    constant = np.zeros(len(table.paths), dtype=bool)
    if blank:  # only files with findings are looked at until one is blank
        constant[[row for row, path in enumerate(table.paths) if path in blank]] = True
    return constant


def _near_duplicate_findings(
    table: FileTable, *, policy: AuditParams, stable: np.ndarray, previous_pairs: list[list],
    previous_searches: list | None = None,
) -> tuple[list[Finding], list[dict], list[list], list]:
    """Near-duplicate issues and groups (pHash candidates confirmed by finer thumbnails, grouped
    around representatives), leaving out groups that are only exact copies; also the kept
    candidate pairs as [path, path, similarity, strong] and the searches that found them
    ([crop hashes, thumbnails and centre blocks, each on below a file count; the digest of the
    centre blocks left out as common]), for the cache.

    Pairs between two `stable` files (bytes unchanged since `previous_pairs` were found with
    today's settings and the same searches) are taken from those; only the other files are compared against the rest,
    so a re-audit after a small change stays cheap. Which kept pairs are near-duplicates is
    decided afresh over all of them (near_duplicates.distinctive), so a new file that is a closer
    rival undoes a distinctive match, exactly as a full audit would.
    """
    # A one-colour picture (its own `constant` finding) is a brightness shift of every other blank
    # of its hue, so the search (which evens out brightness and contrast) would pair them all:
    # 411 blank tiles of 13 fogged photographs made one 469-file group of greys 170 to 207. Blanks
    # are grouped by their exact colour instead (_blank_groups), and searched with nothing.
    constant = _constant_rows(table) & table.decoded
    issues: list[Finding] = []
    path_groups: list[dict] = []
    for representative, members in _blank_groups(table, np.flatnonzero(constant)):
        _report_group(table, representative=representative, members=members, lowest=1.0, issues=issues,
                      path_groups=path_groups)
    decoded = np.flatnonzero(table.decoded & ~constant)
    if len(decoded) < 2:
        return issues, path_groups, [], []
    hashes = table.columns["perceptual_hash"][decoded]
    fine = table.columns["fine"][decoded]
    native, native_shape = table.columns["native"][decoded], table.columns["native_shape"][decoded]
    detail = CloseLook(table.columns["detail"][decoded], native, native_shape)
    thumbnails = table.columns["thumbnail"][decoded]
    confirm = Confirm(min_similarity=policy.near_duplicate_similarity,
                      max_colour_difference=policy.near_duplicate_pixel_difference,
                      min_crop_similarity=policy.near_duplicate_crop_similarity,
                      min_distinctive_similarity=policy.near_duplicate_distinctive_similarity,
                      distinctive_ratio=policy.near_duplicate_distinctive_ratio)
    crops = table.columns["crop_hashes"][decoded] if len(decoded) <= CROP_SEARCH_MAX_FILES else None
    neighbours = len(decoded) <= NEIGHBOUR_SEARCH_MAX_FILES
    # Centre blocks many files share are left out of the block search; a pair's candidacy then
    # depends on the pair and this set, so another set means a fresh search, as a crossed cap does.
    common = common_centre_keys(native, native_shape) if neighbours else np.zeros(0, np.uint64)
    settings: dict = dict(crops=crops, fine=fine, thumbnails=thumbnails, detail=detail, neighbours=neighbours,
                          max_distance=policy.near_duplicate_distance, confirm=confirm, common_blocks=common)
    searches = [crops is not None, neighbours, hashlib.sha256(common.tobytes()).hexdigest()[:16]]
    # A set that crossed a search's file count must not keep pairs only the other search finds.
    changed = np.flatnonzero(~stable[decoded]) if previous_searches == searches else np.arange(len(decoded))
    if len(changed) == len(decoded):
        found = scored_pairs(hashes=hashes, **settings)
    else:
        kept: list[tuple[int, int, float, bool]] = []
        if previous_pairs:
            positions = np.flatnonzero(stable[decoded])
            where = dict(zip([table.paths[row] for row in decoded[positions].tolist()], positions.tolist()))
            kept = [(where[a], where[b], similarity, strong) for a, b, similarity, strong in previous_pairs
                    if a in where and b in where]
        fresh = scored_pairs(hashes=hashes, rows=changed, **settings) if len(changed) else None
        old = Scored(np.array([entry[:2] for entry in kept], dtype=np.int64).reshape(-1, 2),
                     np.array([entry[2] for entry in kept], dtype=np.float32),
                     np.array([entry[3] for entry in kept], dtype=bool))
        found = old if fresh is None else Scored(np.concatenate([old.pairs, fresh.pairs]),
                                                  np.concatenate([old.similarity, fresh.similarity]),
                                                  np.concatenate([old.strong, fresh.strong]))
    accepted = distinctive(found.pairs, found.similarity, found.strong, confirm, fine=fine, detail=detail)
    pairs, pair_similarity = found.pairs[accepted], found.similarity[accepted]
    named = decoded[found.pairs].reshape(-1, 2).tolist()
    kept_pairs = [[table.paths[a], table.paths[b], float(similarity), bool(strong)]
                  for (a, b), similarity, strong in zip(named, found.similarity.tolist(), found.strong.tolist())]
    for group in near_duplicate_groups(pairs, count=len(decoded), fine=fine, similarity=pair_similarity):
        _report_group(table, representative=int(decoded[group.representative]), members=decoded[group.members],
                      lowest=group.lowest_similarity, issues=issues, path_groups=path_groups)
    return issues, path_groups, kept_pairs, searches


def _blank_groups(table: FileTable, blanks: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(representative, member rows) of the one-colour pictures that share their exact colour (a
    blank resized or cropped is the same blank), the first by path representing each; a colour
    held by one file makes no group."""
    by_colour: dict[bytes, list[int]] = {}
    for row in sorted(blanks.tolist(), key=lambda row: table.paths[row]):
        # A one-colour picture's colour thumbnail is that colour in every cell, whatever its size.
        by_colour.setdefault(table.columns["thumbnail"][row].tobytes(), []).append(row)
    return [(rows[0], np.array(rows, dtype=np.int64)) for rows in by_colour.values() if len(rows) > 1]


def _report_group(table: FileTable, *, representative: int, members: np.ndarray, lowest: float,
                  issues: list[Finding], path_groups: list[dict]) -> None:
    """A near-duplicate group (table rows) as a finding per member and an entry of the report's
    groups; nothing when its pixels are identical (already exact_duplicate or label_conflict)."""
    if len(set(table.columns["pixel_hash"][members].tolist())) == 1:
        return
    group_paths = [table.paths[member] for member in members.tolist()]
    named = table.paths[representative]
    path_groups.append({"representative": named, "members": group_paths, "size": len(group_paths),
                        "lowest_similarity": lowest})
    labels = sorted({table.labels[member] for member in members.tolist()})
    across = f" across classes {labels}" if len(labels) > 1 else ""
    for position, path in enumerate(group_paths):
        role = "the representative" if path == named else f"like {named}"
        issues.append(Finding(path, "near_duplicate", f"{role} of a group of {len(group_paths)} near-duplicates "
                              f"(each correlates >= {lowest:.3f} with the representative)"
                              f"{across}: {_others(group_paths, position)}"))


# Below this many images a class needs more images, not a larger loss weight (params' split.min_images_per_class default).
TOO_FEW_TO_WEIGHT = 10


def _imbalance_findings(class_counts: dict[str, int], *, policy: AuditParams) -> list[Finding]:
    present = {label: count for label, count in class_counts.items() if count > 0}
    if len(present) < 2:
        return []
    largest = max(present, key=lambda label: present[label])
    smallest = min(present, key=lambda label: present[label])
    ratio = present[largest] / present[smallest]
    if ratio <= policy.max_class_imbalance:
        return []
    # Weighting cannot help a class with a handful of images: it cannot even appear in every split.
    advice = ("too few to train, validate and test on (the split stage refuses a class below "
              "split.min_images_per_class): add images to it or leave it out of data.classes"
              if present[smallest] < TOO_FEW_TO_WEIGHT else "consider train.class_weight: balanced")
    return [Finding(smallest, "class_imbalance", f"{present[largest]} images in '{largest}' vs {present[smallest]} "
                  f"in '{smallest}' (ratio {ratio:.1f} > {policy.max_class_imbalance}); {advice}")]


def audit_folder(path: str | Path, *, params: Params | None = None, cache_file: str | Path | None = None) -> AuditReport:
    """Audit a dataset folder (one sub-folder per class, or params.data.manifest) under params' policy.

    The library's entry point: `trainwell.audit_folder("images/")` uses the default policy.
    Reads files, never writes or moves one; `cache_file` makes a re-audit decode only changes.
    """
    params = params or Params()
    return audit_dataset(root=path, data=params.data, policy=params.audit, cache_file=cache_file)


def audit_dataset(
    *, root: str | Path, data: DataParams, policy: AuditParams, cache_file: str | Path | None = None
) -> AuditReport:
    """Audit a folder-per-class dataset against a policy. Reads files; never writes or moves them.

    With `cache_file`, per-file results are reused for files whose bytes were audited before
    under the same thresholds and code; only new or changed files are decoded.
    """
    root = str(root) if storage.is_remote(root) else Path(root)
    with frozen_heap():
        # The cache keys files by local stat (size, mtime); remote objects are always read afresh.
        # Made first: a cache file it refuses stops the audit before any listing or decoding.
        # With a manifest only its rows are read, so a cache under the root is never audited.
        audit_cache = AuditCache(None if storage.is_remote(root) else cache_file, policy,
                           dataset=None if data.manifest else root)
        listing = list_sources(root, manifest=data.manifest, classes=data.classes, extensions=data.extensions)
        table = FileTable.empty(listing.files)
        stats = np.frombuffer(listing.stats, dtype=np.int64) if listing.stats is not None and len(listing.stats) \
            else np.full(2 * len(listing.files), -1, dtype=np.int64)
        sizes, mtimes = stats.reshape(-1, 2).T
        rows, unchanged = audit_cache.match(root=Path(root), paths=table.paths, sizes=sizes, mtimes=mtimes)
        _reuse_rows(table, audit_cache, rows)
        for position, found in audit_cache.reused_findings(rows).items():
            table.findings[table.paths[position]] = found
        todo = np.flatnonzero(rows < 0)
        done = 0
        for batch in check_all([listing.files[position] for position in todo.tolist()], root=root, policy=policy,
                               reap=False):
            table.put(todo[done:done + len(batch)], batch)
            done += len(batch)
        try:
            return _judge_and_save_cache(listing=listing, table=table, audit_cache=audit_cache, policy=policy,
                                         sizes=sizes, mtimes=mtimes, rows=rows, unchanged=unchanged,
                                         decoded=len(todo))
        finally:
            reap_all()  # the checkers exited while the dataset-level checks ran


def _reuse_rows(table: FileTable, audit_cache: AuditCache, rows: np.ndarray) -> None:
    """Fill the table's rows from the cache's (rows from AuditCache.match; -1 rows are left for the checks)."""
    reused = np.flatnonzero(rows >= 0)
    if not len(reused):
        return
    if len(rows) == len(audit_cache.paths) and np.array_equal(rows[reused], reused):
        # The same files in the same order, the usual re-audit: whole columns copied, no gather
        # (~4x faster). Rows to be checked get a stale copy here, which their check overwrites.
        for name, column in table.columns.items():
            column[:] = audit_cache.columns[name]
        return
    for name, column in table.columns.items():
        column[reused] = audit_cache.columns[name][rows[reused]]


def _judge_and_save_cache(*, listing: Listing, table: FileTable, audit_cache: AuditCache, policy: AuditParams,
                          sizes: np.ndarray, mtimes: np.ndarray, rows: np.ndarray, unchanged: np.ndarray,
                          decoded: int) -> AuditReport:
    """The dataset-level checks over every file's results, the audit cache saved, and the policy's verdict."""
    findings: list[Finding] = list(listing.issues)
    for path, found in table.findings.items():
        findings.extend(Finding(path, kind, detail) for kind, detail in found)
    duplicate_findings, duplicate_groups = _duplicate_findings(table)
    findings.extend(duplicate_findings)
    near_findings, near_groups, near_pairs, near_searches = _near_duplicate_findings(
        table, policy=policy, stable=unchanged if audit_cache.near_valid else np.zeros(len(rows), dtype=bool),
        previous_pairs=audit_cache.previous_near_pairs, previous_searches=audit_cache.previous_near_searches)
    findings.extend(near_findings)
    # Judged here, against every file's score, never per file: what is dark or blurry depends on the dataset.
    property_issues, notes = property_findings(table.paths, table.labels, table.columns, policy=policy)
    findings.extend(property_issues)
    findings, shared = shared_notes(findings, files=len(listing.files), policy_kinds={*policy.fail_on, *policy.quarantine})
    notes = shared + notes
    audit_cache.save(paths=table.paths, sizes=sizes, mtimes=mtimes, columns=table.columns, findings=table.findings,
                     near_pairs=near_pairs, near_searches=near_searches,
                     unchanged=bool(unchanged.all()) and len(rows) == len(audit_cache.paths))

    # Quarantine and balance: the class counts that matter are those left after the quarantine.
    quarantine_kinds = set(policy.quarantine)
    flagged = {found.path for found in findings if found.kind in quarantine_kinds}
    label_of = dict(listing.files) if flagged else {}
    quarantined = sorted(path for path in flagged if path in label_of)
    class_counts = Counter(table.labels)
    class_counts.subtract(label_of[path] for path in quarantined)
    counts = {label: class_counts.get(label, 0) for label in listing.classes}
    findings.extend(_imbalance_findings(counts, policy=policy))
    issues = judge(findings, fail_on=policy.fail_on)
    return AuditReport(
        root=str(listing.root),
        classes=listing.classes,
        files_scanned=len(listing.files),
        issues=issues,
        quarantined=quarantined,
        class_counts=counts,
        violations=[issue for issue in issues if issue.severity == "error"],
        near_duplicate_groups=near_groups,
        duplicate_groups=duplicate_groups,
        notes=notes,
        files_decoded=decoded,
    )
