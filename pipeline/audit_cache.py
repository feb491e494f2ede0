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


def encode_result(result) -> dict:
    return {
        "findings": [list(finding) for finding in result.findings],
        "pixel_hash": result.pixel_hash,
        "perceptual_hash": None if result.perceptual_hash is None else result.perceptual_hash.tobytes().hex(),
        "thumbnail": None if result.thumbnail is None else result.thumbnail.tobytes().hex(),
    }


def decode_result(entry: dict, *, path: str, label: str, result_type):
    result = result_type(path=path, label=label)
    result.findings = [tuple(finding) for finding in entry["findings"]]
    result.pixel_hash = entry["pixel_hash"]
    if entry["perceptual_hash"] is not None:
        result.perceptual_hash = np.frombuffer(bytes.fromhex(entry["perceptual_hash"]), dtype=np.uint8)
    if entry["thumbnail"] is not None:
        result.thumbnail = np.frombuffer(bytes.fromhex(entry["thumbnail"]), dtype=np.uint8)
    return result


class AuditCache:
    """{relative path: (size, mtime_ns, content hash, result)} in one JSON file.

    Lookup by (size, mtime) skips reading an unchanged file at all; a file whose stat changed is
    read and hashed, and reuses the result of any file with the same bytes (moved or touched).
    Files no longer in the dataset drop out when the cache is saved. It is trainwell's own
    scratch file, never the user's data.
    """

    def __init__(self, path: str | Path | None, policy: AuditParams) -> None:
        self.path = Path(path) if path else None
        self.fingerprint = fingerprint(policy)
        self.entries: dict[str, dict] = {}
        self.fresh: dict[str, dict] = {}
        # Paths whose bytes are unchanged since the last run (matched by size and mtime).
        self.stable: set[str] = set()
        self.near_settings = [policy.near_duplicate_distance, policy.near_duplicate_pixel_difference]
        self.previous_near_pairs: list[list[str]] = []
        self.near_valid = False  # previous_near_pairs were computed with today's settings
        self.near_pairs: list[list[str]] = []
        if self.path and self.path.exists():
            try:
                stored = json.loads(self.path.read_text())
            except (OSError, ValueError):
                stored = {}
            if stored.get("fingerprint") == self.fingerprint:
                self.entries = stored.get("files", {})
                near = stored.get("near_duplicates", {})
                if near.get("settings") == self.near_settings:
                    self.previous_near_pairs = near.get("pairs", [])
                    self.near_valid = True
        self.by_content = {entry["content"]: entry for entry in self.entries.values()}

    def lookup(self, root: Path, path: str) -> dict | None:
        """The cached result for root/path if its bytes are known, else None (must be decoded)."""
        if not self.path:
            return None
        full = os.path.join(root, path)
        try:
            stat = os.stat(full, follow_symlinks=False)
        except OSError:
            return None
        entry = self.entries.get(path)
        if entry and entry["size"] == stat.st_size and entry["mtime_ns"] == stat.st_mtime_ns:
            self.fresh[path] = entry
            self.stable.add(path)
            return entry["result"]
        try:
            with open(full, "rb") as handle:
                digest = content_hash(handle.read())
        except OSError:
            return None
        known = self.by_content.get(digest)
        if known is None:
            return None
        self.fresh[path] = {**known, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        return known["result"]

    def store(self, root: Path, path: str, result) -> None:
        if not self.path or any(kind == "unreadable" for kind, _ in result.findings):
            return
        try:
            stat = os.stat(root / path, follow_symlinks=False)
            digest = content_hash((root / path).read_bytes())
        except OSError:
            return
        self.fresh[path] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "content": digest,
                            "result": encode_result(result)}

    def save(self) -> None:
        """Write only this run's files, atomically."""
        if not self.path:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        near = {"settings": self.near_settings, "pairs": self.near_pairs}
        temporary.write_text(json.dumps({"fingerprint": self.fingerprint, "files": self.fresh, "near_duplicates": near}))
        os.replace(temporary, self.path)
