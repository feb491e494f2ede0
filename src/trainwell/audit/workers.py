"""Running the per-file checks in parallel, so that no file can stop the audit: not a crash, not a hang.

Files are checked in forked worker processes, chunk by chunk. A decoder that kills its process
(a segfault or abort in a C library, the kernel's out-of-memory killer) breaks the pool: the
chunk in question is then retried one file per fresh process, the file that kills its process
again is reported as `decoder_crash`, and the rest of the audit goes on in a new pool. A file
whose check outlasts `audit.file_timeout_s` is interrupted by an alarm and is `decode_timeout`.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import multiprocessing
import os
import pickle
import signal
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainwell import storage
from trainwell.audit.checks import Findings, check_into, clear_row, new_columns, warm_up
from trainwell.params import AuditParams
from trainwell.progress import progress_bar

Item = tuple[str, str]  # (path relative to the root, label)
# Fewer files than this are checked in bare forked children; more in a process pool.
SMALL_JOB = 64


@dataclass
class CheckedBatch:
    """The results of checking a run of files, row i for the run's file i: their columns
    (cache.COLUMNS) and the findings of the rows that have any.

    This is what crosses from a worker to the auditing process: a few arrays and a short dict
    per chunk, where one object per file cost more to pickle and unpickle than checking a
    small file's content."""

    columns: dict[str, np.ndarray]
    findings: dict[int, Findings]

    def __len__(self) -> int:
        return len(self.columns["content"])

    @classmethod
    def alone(cls, finding: tuple[str, str]) -> CheckedBatch:
        """One unchecked file with one finding."""
        return cls(columns=new_columns(1), findings={0: [finding]})

    @classmethod
    def joined(cls, batches: list[CheckedBatch]) -> CheckedBatch:
        offsets = np.cumsum([0, *(len(batch) for batch in batches)]).tolist()
        return cls(columns={name: np.concatenate([batch.columns[name] for batch in batches])
                            for name in batches[0].columns} if batches else new_columns(0),
                   findings={offset + row: found for offset, batch in zip(offsets, batches)
                             for row, found in batch.findings.items()})


class CheckTimedOut(BaseException):
    """Raised by the alarm inside a check; a BaseException so no `except Exception` swallows it."""


def _on_alarm(signum: int, frame: object) -> None:
    raise CheckTimedOut


def _check_chunk(chunk: list[Item], *, root: Path | str, policy: AuditParams) -> CheckedBatch:
    """check_into for each item, each interrupted after audit.file_timeout_s by an alarm (in a
    process's main thread only, where signals are delivered; elsewhere the checks run unbounded).

    The handler is installed once per chunk and only the timer is set per file: a handler swap
    per file cost ~25 us, 7% of a file's check.
    """
    batch = CheckedBatch(columns=new_columns(len(chunk)), findings={})
    timed = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGALRM, _on_alarm) if timed else None
    timeout_s = policy.file_timeout_s
    try:
        for row, (path, _) in enumerate(chunk):
            try:
                if timed:
                    signal.setitimer(signal.ITIMER_REAL, timeout_s)
                found = check_into(batch.columns, row, root=root, path=path, policy=policy)
            except CheckTimedOut:
                clear_row(batch.columns, row)  # what it wrote before the alarm is not a result
                found = [("decode_timeout", f"checking took longer than audit.file_timeout_s = {timeout_s:g} s; "
                          "not decoded")]
            finally:
                if timed:
                    signal.setitimer(signal.ITIMER_REAL, 0)
            if found:
                batch.findings[row] = found
    finally:
        if timed:
            signal.signal(signal.SIGALRM, previous)
    return batch


def _alone(item: Item, *, root: Path | str, policy: AuditParams) -> CheckedBatch:
    """One file in a process of its own: a decoder_crash finding when that process dies."""
    results = _in_children([item], root=root, policy=policy, workers=1)
    if results is not None:
        return results
    return CheckedBatch.alone(("decoder_crash", "decoding it killed the process (a crash in a decoder library, or "
                               "the out-of-memory killer); never decoded again"))


def _fork_check(items: list[Item], *, root: Path | str, policy: AuditParams) -> tuple[int, int]:
    """Fork a child that checks items and pickles the results into a pipe; return (pid, read end)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: check, answer, and leave without running the parent's exit handlers
        status = 1
        try:
            os.close(read_end)
            with os.fdopen(write_end, "wb") as answer:
                pickle.dump(_check_chunk(items, root=root, policy=policy), answer)
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    return pid, read_end


def _collect(children: list[tuple[int, int]]) -> CheckedBatch | None:
    """The joined answers of forked checkers (pid, read end), in order; None when one died before
    it answered. A complete answer is all that is needed of a child: it is reaped later, so that
    its exit (the kernel unmapping its copy of this process, ~1 ms) does not hold this one up."""
    results: list[CheckedBatch] = []
    died = False
    for pid, read_end in children:  # each child has its own pipe: reading one at a time cannot deadlock
        with os.fdopen(read_end, "rb") as answer:
            data = answer.read()
        _reap_later(pid)
        try:
            results.append(pickle.loads(data))
        except Exception:  # nothing, or a cut-off pickle: the child died mid-answer
            died = True
    return None if died else CheckedBatch.joined(results)


_unreaped: list[int] = []


def _reap_later(pid: int) -> None:
    """Reap a child that has answered (or was killed) now if it is gone, else at reap_all."""
    if os.waitpid(pid, os.WNOHANG)[0] == 0:
        _unreaped.append(pid)


def reap_all() -> None:
    """Wait for every child _reap_later left: by now they have long exited, so this is immediate."""
    while _unreaped:
        os.waitpid(_unreaped.pop(), 0)


def _in_children(items: list[Item], *, root: Path | str, policy: AuditParams, workers: int) -> CheckedBatch | None:
    """Check a few files in `workers` forked children side by side; None when one died before it answered.

    Bare forks and pipes cost ~2 ms each where a process pool costs ~8: the difference is a
    quarter of a re-audit after a small change, which is exactly when a handful of files is checked.
    """
    share = -(-len(items) // workers)
    return _collect([_fork_check(items[start:start + share], root=root, policy=policy)
                     for start in range(0, len(items), share)])


def _in_processes(items: list[Item], *, root: Path | str, policy: AuditParams, workers: int) -> Iterator[CheckedBatch]:
    # Processes, not threads: per-file work is ~0.3 ms of mostly Python and small numpy calls, so
    # threads serialise on the GIL. Chunks amortise the hand-over of their results (a few arrays,
    # ~0.1 ms); at most 64 files each, so the last chunk leaves the other workers idle for ~20 ms,
    # not the ~60 ms of 3,000 files cut into 16 chunks.
    size = max(1, min(64, len(items) // (workers * 8)))
    chunks = [items[start:start + size] for start in range(0, len(items), size)]
    check = functools.partial(_check_chunk, root=root, policy=policy)
    position = 0
    while position < len(chunks):
        broken = None
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork")) as pool:
            # Each future is let go once its batch is handed on: a finished future keeps its
            # result, and holding every one would keep a second copy of the audit's columns.
            pending = deque(pool.submit(check, chunk) for chunk in chunks[position:])
            offset = 0
            while pending:
                try:
                    results = pending.popleft().result()
                except BrokenProcessPool:
                    broken = position + offset
                    break
                offset += 1
                yield results
        if broken is None:
            return
        # Some worker died; the pool's other results are lost with it. The first chunk without a
        # result is checked one file per process (finding the culprit), the rest in a new pool.
        yield CheckedBatch.joined([_alone(item, root=root, policy=policy) for item in chunks[broken]])
        position = broken + 1


def check_all(items: list[Item], *, root: Path | str, policy: AuditParams, reap: bool = True) -> Iterator[CheckedBatch]:
    """The results of items, in order, as consecutive CheckedBatches as they are ready.

    With `reap=False` the checker processes are left for the caller to reap (reap_all) once it
    has other work done: by then they have exited, where waiting here holds the caller up."""
    try:
        yield from _check_all(items, root=root, policy=policy)
    finally:
        if reap:
            reap_all()


def _check_all(items: list[Item], *, root: Path | str, policy: AuditParams) -> Iterator[CheckedBatch]:
    workers = policy.workers or os.cpu_count() or 1
    if storage.is_remote(root):
        # Object-store reads wait on the network, so threads overlap them; forked processes would
        # each start tensorflow-io's S3 client (and its abort at exit, see storage.exit_process).
        check = functools.partial(_check_chunk, root=root, policy=policy)
        with ThreadPoolExecutor(max_workers=4 * workers) as pool:
            yield from _counted(pool.map(check, [items[start:start + 16] for start in range(0, len(items), 16)]),
                                total=len(items))
        return
    warm_up()
    with frozen_heap():
        if workers == 1 or len(items) < SMALL_JOB:
            # A few files (a re-audit after a small change): bare child processes, still apart from this one.
            results = _in_children(items, root=root, policy=policy, workers=workers) if items else None
            if results is None and items:  # a decoder killed it: find which file, one process each
                results = CheckedBatch.joined([_alone(item, root=root, policy=policy) for item in items])
            if results is not None:
                yield results
            return
        yield from _counted(_in_processes(items, root=root, policy=policy, workers=workers), total=len(items))


_frozen_depth = 0


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Leave every object that exists now out of garbage collection until the outermost exit.

    The auditing process holds a Python object or two per file (the listing, the cache's paths):
    a forked child's garbage collector would walk them all, touching, and so copying, every page
    they sit on (at 100,000 files a re-audit's checks took 3x as long per file as a full audit's),
    and each collection in this process would walk them again. Nested uses unfreeze only at the end.
    """
    global _frozen_depth
    gc.freeze()
    _frozen_depth += 1
    try:
        yield
    finally:
        _frozen_depth -= 1
        if _frozen_depth == 0:
            gc.unfreeze()


def _counted(batches: Iterator[CheckedBatch], *, total: int) -> Iterator[CheckedBatch]:
    """Pass batches through, moving a progress bar by the files each holds."""
    bar = progress_bar(total=total, description="audit")
    try:
        for batch in batches:
            yield batch
            bar.update(len(batch))
    finally:
        bar.close()
