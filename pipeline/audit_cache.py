"""Per-file audit results cached by content, so a re-audit decodes only new or changed files."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from pipeline.params import AuditParams

# Per-file checks depend on these policy fields; the dataset-level ones (duplicates, balance)
# are recomputed from cached per-file results on every run.
_PER_FILE_FIELDS = ("max_pixels", "min_side", "max_aspect_ratio", "dark_below", "light_above", "min_entropy",
                    "blurry_below")
_CODE = ("decode.py", "audit.py", "similarity.py")


def fingerprint(policy: AuditParams) -> str:
    """Changes whenever a cached result could be stale: the per-file thresholds or the checking code."""
    digest = hashlib.sha256(json.dumps({name: getattr(policy, name) for name in _PER_FILE_FIELDS}).encode())
    for name in _CODE:
        digest.update((Path(__file__).parent / name).read_bytes())
    return digest.hexdigest()


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


class AuditCache:
    """Per-file audit results from earlier runs, stored column-wise for a fast reload.

    `cache.json` holds the fingerprint, the file paths, the findings of files that have any and
    the near-duplicate pairs; the `cache.json.npz` sidecar holds, row by row, each file's size,
    mtime, content hash, pixel hash, pHash and 8x8 thumbnail. (Per-file JSON objects took longer
    to parse than the rest of a re-audit.)

    Lookup by (size, mtime) skips reading an unchanged file at all; a file whose stat changed is
    read and hashed, and reuses the result of any file with the same bytes (moved or touched).
    Files no longer in the dataset drop out when the cache is saved, and nothing is written when
    nothing changed. It is trainwell's own scratch state, never the user's data.
    """

    def __init__(self, path: str | Path | None, policy: AuditParams) -> None:
        self.path = Path(path) if path else None
        self.fingerprint = fingerprint(policy)
        self.index: dict[str, int] = {}  # path -> row of the stored columns
        self.columns: dict[str, np.ndarray] = {}
        self.sizes: list[int] = []
        self.mtimes: list[int] = []
        self.findings: dict[str, list] = {}
        self.fresh: dict[str, tuple] = {}  # path -> ("row", row, size, mtime) | ("new", result, size, mtime, content)
        self.dirty = False
        # Paths whose bytes are unchanged since the last run (matched by size and mtime).
        self.stable: set[str] = set()
        self.near_settings = [policy.near_duplicate_distance, policy.near_duplicate_pixel_difference]
        self.previous_near_pairs: list[list[str]] = []
        self.near_valid = False  # previous_near_pairs were computed with today's settings
        self.near_pairs: list[list[str]] = []
        if self.path and self.path.exists():
            try:
                stored = json.loads(self.path.read_text())
                with np.load(self._sidecar()) as sidecar:
                    columns = {name: sidecar[name] for name in sidecar.files}
            except (OSError, ValueError, KeyError):
                stored, columns = {}, {}
            if stored.get("fingerprint") == self.fingerprint and len(stored.get("paths", [])) == len(columns.get("size", [])):
                self.index = {path: row for row, path in enumerate(stored["paths"])}
                self.columns = columns
                self.sizes, self.mtimes = columns["size"].tolist(), columns["mtime_ns"].tolist()
                self.findings = stored.get("findings", {})
                near = stored.get("near_duplicates", {})
                if near.get("settings") == self.near_settings:
                    self.previous_near_pairs = near.get("pairs", [])
                    self.near_valid = True
        self.by_content = {digest: row for row, digest in enumerate(self.columns["content"].tolist())} \
            if self.columns else {}
        self.paths_by_row = {row: path for path, row in self.index.items()}
        # Per-row Python values prepared once: rebuilding 3,000 results must cost microseconds each.
        self.pixel_hex = [digest.hex() for digest in self.columns["pixel_hash"].tolist()] if self.columns else []
        self.hash_rows = list(self.columns["perceptual_hash"]) if self.columns else []
        self.thumb_rows = list(self.columns["thumbnail"]) if self.columns else []

    def _sidecar(self) -> Path:
        assert self.path is not None
        return self.path.with_name(self.path.name + ".npz")

    def result_for(self, row: int, *, path: str, label: str, result_type):
        """A FileResult rebuilt from stored row `row` (array rows are views, not copies)."""
        result = result_type(path=path, label=label)
        stored = self.findings.get(self.paths_by_row[row])
        if stored:
            result.findings = [tuple(finding) for finding in stored]
        if self.pixel_hex[row]:
            result.pixel_hash = self.pixel_hex[row]
            result.perceptual_hash = self.hash_rows[row]
            result.thumbnail = self.thumb_rows[row]
        return result

    def lookup(self, root: Path, path: str) -> int | None:
        """The stored row for root/path if its bytes are known, else None (must be decoded)."""
        if not self.path:
            return None
        full = os.path.join(root, path)
        try:
            stat = os.stat(full, follow_symlinks=False)
        except OSError:
            return None
        row = self.index.get(path)
        if row is not None and self.sizes[row] == stat.st_size and self.mtimes[row] == stat.st_mtime_ns:
            self.fresh[path] = ("row", row, stat.st_size, stat.st_mtime_ns)
            self.stable.add(path)
            return row
        try:
            with open(full, "rb") as handle:
                digest = content_hash(handle.read())
        except OSError:
            return None
        known = self.by_content.get(bytes.fromhex(digest))  # S16 columns come back as bytes
        if known is None:
            return None
        self.fresh[path] = ("row", known, stat.st_size, stat.st_mtime_ns)
        self.dirty = True
        return known

    def store(self, root: Path, path: str, result) -> None:
        """Remember a freshly checked file under the content hash check_file computed from its bytes."""
        if not self.path or result.content_hash is None:
            return  # unreadable: nothing to remember, it is checked again next time
        try:
            stat = os.stat(os.path.join(root, path), follow_symlinks=False)
        except OSError:
            return
        self.fresh[path] = ("new", result, stat.st_size, stat.st_mtime_ns, result.content_hash)
        self.dirty = True

    def save(self) -> None:
        """Write this run's files (JSON + sidecar) atomically; skip when nothing changed."""
        if not self.path:
            return
        if (not self.dirty and len(self.fresh) == len(self.index) and self.near_valid
                and self.near_pairs == self.previous_near_pairs):
            return
        # Rows are written reused-first, then new: reused rows are copied with one fancy-index
        # gather per column, only new results are assembled one by one.
        findings: dict[str, list] = {}
        reused_paths, old_rows, new_paths, new_results = [], [], [], []
        for path, record in self.fresh.items():
            if record[0] == "row":
                reused_paths.append(path)
                old_rows.append(record[1])
                stored = self.findings.get(self.paths_by_row[record[1]])
                if stored:
                    findings[path] = stored
            else:
                new_paths.append(path)
                new_results.append(record)
                if record[1].findings:
                    findings[path] = [list(finding) for finding in record[1].findings]
        paths = reused_paths + new_paths
        reused = np.array(old_rows, dtype=np.int64)
        size = [self.fresh[path][2] for path in paths]
        mtime = [self.fresh[path][3] for path in paths]

        def column(name: str, make, empty: np.ndarray) -> np.ndarray:
            parts = [self.columns[name][reused]] if len(reused) else []
            if new_results:
                parts.append(np.array([make(record) for record in new_results], dtype=empty.dtype).reshape(
                    (len(new_results), *empty.shape[1:])))
            return np.concatenate(parts) if parts else empty

        def vector(value, width: int) -> np.ndarray:
            return value if value is not None else np.zeros(width, np.uint8)

        content = column("content", lambda record: bytes.fromhex(record[4]), np.zeros(0, "S16"))
        pixel = column("pixel_hash", lambda record: bytes.fromhex(record[1].pixel_hash) if record[1].pixel_hash
                       else b"", np.zeros(0, "S16"))
        phash = column("perceptual_hash", lambda record: vector(record[1].perceptual_hash, 8), np.zeros((0, 8), np.uint8))
        thumb = column("thumbnail", lambda record: vector(record[1].thumbnail, 192), np.zeros((0, 192), np.uint8))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        sidecar = self._sidecar()
        temporary = sidecar.with_name(sidecar.name + ".tmp.npz")
        np.savez(
            temporary,
            size=np.array(size, dtype=np.int64),
            mtime_ns=np.array(mtime, dtype=np.int64),
            content=content,
            pixel_hash=pixel,
            perceptual_hash=phash,
            thumbnail=thumb,
        )
        os.replace(temporary, sidecar)
        document = {"fingerprint": self.fingerprint, "paths": paths, "findings": findings,
                    "near_duplicates": {"settings": self.near_settings, "pairs": self.near_pairs}}
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(json.dumps(document))
        os.replace(temporary, self.path)
