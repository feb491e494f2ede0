"""What `trainwell predict` is asked to classify, checked as the audit checks a file: refused by path and reason."""

from __future__ import annotations

from trainwell import storage
from trainwell.audit.workers import check_all
from trainwell.data.targets import Targets
from trainwell.kinds import BLOCKING_KINDS, DEFAULT_SEVERITY
from trainwell.params import AuditParams


def check_targets(targets: Targets, *, policy: AuditParams
                  ) -> tuple[list[int], dict[int, str], dict[int, str], dict[int, bytes]]:
    """Positions that pass the audit's per-file checks, the refused ones with why, warnings by
    position, and the content digest of the bytes each accepted file was checked with.

    The audit's own check (in child processes, so a decoder crash is a finding and a decoder
    past audit.file_timeout_s is killed, not the end of the command) decides: a file the project
    would quarantine is never classified.
    """
    refuse_on = set(BLOCKING_KINDS) | set(policy.quarantine)
    accepted: list[int] = []
    refused: dict[int, str] = {}
    notes: dict[int, str] = {}
    digests: dict[int, bytes] = {}
    by_root: dict[str, list[int]] = {}
    for position, location in enumerate(targets.locations):
        # Object-store files are checked with threads under their bucket; local files in processes.
        root = "/".join(location.split("/", 3)[:3]) if storage.is_remote(location) else ""
        by_root.setdefault(root, []).append(position)
    for root, positions in by_root.items():
        items = [(targets.locations[position][len(root):].lstrip("/") if root else targets.locations[position], "")
                 for position in positions]
        checked = [(batch.findings.get(row, []), bytes(batch.columns["content"][row]))
                   for batch in check_all(items, root=root, policy=policy) for row in range(len(batch))]
        for position, (found, digest) in zip(positions, checked):
            blocking = [(kind, text) for kind, text in found if kind in refuse_on]
            if blocking:
                refused[position] = "; ".join(f"{kind}: {text}" for kind, text in blocking)
                continue
            accepted.append(position)
            digests[position] = digest
            warned = [kind for kind, _ in found if DEFAULT_SEVERITY.get(kind, "warning") == "warning"]
            if warned:
                notes[position] = ",".join(warned)
    return sorted(accepted), refused, notes, digests
