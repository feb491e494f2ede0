"""Checker processes forked as a re-audit starts, so that their start overlaps the listing."""

from __future__ import annotations

import os
import pickle
import signal
from pathlib import Path

from trainwell.audit.checks import rehearse, warm_up
from trainwell.audit.workers import CheckedBatch, Item, collect, frozen_heap, reap_later, send_answer
from trainwell.params import AuditParams


class Standby:
    """Checker processes forked before a re-audit lists the dataset, each waiting for a few files.

    A re-audit after a small change checks a handful of files, and a child's start (the fork, and
    the first touches of the parent's pages, each copied on write) cost more than the checks:
    ~15 ms of a ~37 ms re-audit of 3,000 files. Forked first, the children rehearse a check on an
    in-memory image while the parent lists the folders and matches its cache, and are warm when
    the changed files are known. They take fewer than workers.SMALL_JOB files between them; a
    larger job (or none) sends them away, and a process pool takes it. A child that dies is the
    same finding as in any checker (workers.check_all falls back to one process per file).

    (Listing the folders in these children too was measured and dropped: a forked child's first
    lstat loop pays its copy-on-write faults, and the hand-over cost the rest of the gain.)
    """

    def __init__(self, *, workers: int) -> None:
        self.children: list[tuple[int, int, int]] = []  # (pid, request write end, answer read end)
        warm_up()
        with frozen_heap():
            for _ in range(workers):
                self.children.append(self._fork())

    def _fork(self) -> tuple[int, int, int]:
        request_read, request_write = os.pipe()
        answer_read, answer_write = os.pipe()
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                # Earlier children's pipes must not stay open here, or they never see their end.
                for _, other_request, other_answer in self.children:
                    os.close(other_request)
                    os.close(other_answer)
                os.close(request_write)
                os.close(answer_read)
                rehearse()
                with os.fdopen(request_read, "rb") as request:
                    data = request.read()
                if data:
                    items, root, policy = pickle.loads(data)
                    send_answer(answer_write, items=items, root=root, policy=policy)
                status = 0
            finally:
                os._exit(status)
        os.close(request_read)
        os.close(answer_write)
        return pid, request_write, answer_read

    def take(self, items: list[Item], *, root: Path | str, policy: AuditParams) -> CheckedBatch | None:
        """Check items in the waiting children side by side; None when one died before it answered."""
        children, self.children = self.children, []
        share = -(-len(items) // len(children)) if children else 0
        for number, (_, request_write, _) in enumerate(children):
            part = items[number * share:(number + 1) * share]
            with os.fdopen(request_write, "wb") as request:  # an empty request sends a child away
                request.write(pickle.dumps((part, root, policy)) if part else b"")
        return collect([(pid, answer_read) for pid, _, answer_read in children]) if children else None

    def close(self) -> None:
        """Send away the children that were not needed. They hold nothing and may be mid-rehearsal,
        so they are killed rather than waited for (and reaped later, see workers.reap_later)."""
        children, self.children = self.children, []
        for pid, request_write, answer_read in children:
            os.kill(pid, signal.SIGKILL)
            os.close(request_write)
            os.close(answer_read)
            reap_later(pid)

    def __enter__(self) -> Standby:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
