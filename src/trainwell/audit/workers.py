"""Running the per-file checks in parallel, so that no file can stop the audit: not a crash, not a hang.

Files are checked in forked worker processes, chunk by chunk. A decoder that kills its process
(a segfault or abort in a C library, the kernel's out-of-memory killer) breaks the pool: the
chunk in question is then retried one file per fresh process, the file that kills its process
again is reported as `decoder_crash`, and the rest of the audit goes on in a new pool. A file
whose check outlasts `audit.file_timeout_s` is `decode_timeout`: interrupted by an alarm when it is
in Python code, killed with its process by a watchdog in the auditing process when it is not (a
decoder inside C never sees the alarm), and never checked again in that audit.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import multiprocessing
import os
import pickle
import signal
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trainwell import storage
from trainwell.audit.checks import KindDetails, check_into, clear_row, new_columns, warm_up
from trainwell.audit.watchdog import Board, claim_slot, my_cells, timeout_finding, watched
from trainwell.data.decode import max_file_bytes
from trainwell.params import AuditParams
from trainwell.progress import progress_bar

Item = tuple[str, str]  # (path relative to the root, label)
# Fewer files than this are checked in bare forked children; more in a process pool.
SMALL_JOB = 64


@dataclass
class CheckedBatch:
    """The results of checking a run of files, row i for the run's file i: their columns
    (file_checks.stored_columns) and the findings of the rows that have any.

    This is what crosses from a worker to the auditing process: a few arrays and a short dict
    per chunk, where one object per file cost more to pickle and unpickle than checking a
    small file's content."""

    columns: dict[str, np.ndarray]
    findings: dict[int, KindDetails]

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


def _check_chunk(chunk: list[Item], *, root: Path | str, policy: AuditParams, first: int = 0,
                 known: frozenset[int] = frozenset()) -> CheckedBatch:
    """check_into for each item (item i being check_all's item first + i), each interrupted after
    audit.file_timeout_s by an alarm (in a process's main thread only, where signals are
    delivered) and, in a watched checker process, killed past it (audit/watchdog.py). Items in `known`
    already timed out in this audit: they are decode_timeout without a second try.

    The handler is installed once per chunk and only the timer is set per file: a handler swap
    per file cost ~25 us, 7% of a file's check.
    """
    batch = CheckedBatch(columns=new_columns(len(chunk)), findings={})
    timed = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGALRM, _on_alarm) if timed else None
    cells, base = my_cells()
    try:
        for row, (path, _) in enumerate(chunk):
            if first + row in known:
                batch.findings[row] = [timeout_finding(policy, killed=True)]
                continue
            try:
                if cells is not None:  # the start time first: the watchdog trusts an index's time
                    cells[base + 2] = time.monotonic()
                    cells[base + 1] = first + row
                if timed:
                    signal.setitimer(signal.ITIMER_REAL, policy.file_timeout_s)
                found = check_into(batch.columns, row, root=root, path=path, policy=policy)
            except CheckTimedOut:
                clear_row(batch.columns, row)  # what it wrote before the alarm is not a result
                found = [timeout_finding(policy, killed=False)]
            finally:
                if timed:
                    signal.setitimer(signal.ITIMER_REAL, 0)
                if cells is not None:
                    cells[base + 1] = -1.0
            if found:
                batch.findings[row] = found
    finally:
        if timed:
            signal.signal(signal.SIGALRM, previous)
    return batch


@dataclass
class _Job:
    """What the checks of one check_all call share: the root, the policy, and the indices of the
    files whose checker was killed for running out of time (never checked again)."""

    root: Path | str
    policy: AuditParams
    timed_out: set[int] = field(default_factory=set)

    def known(self, first: int, count: int) -> frozenset[int]:
        """The timed-out indices among items first .. first + count - 1 (a copy: the watchdog adds to the set)."""
        return frozenset(index for index in frozenset(self.timed_out) if first <= index < first + count)


def _alone(item: Item, index: int, *, job: _Job) -> CheckedBatch:
    """Item `index` in a process of its own: decode_timeout when it was killed for its time, a
    decoder_crash finding when that process died otherwise."""
    if index not in job.timed_out:
        results = _in_children([item], first=index, job=job, workers=1)[0]
        if results is not None:
            return results
    if index in job.timed_out:
        return CheckedBatch.alone(timeout_finding(job.policy, killed=True))
    return CheckedBatch.alone(("decoder_crash", "decoding it killed the process (a crash in a decoder library, or "
                               "the out-of-memory killer); never decoded again"))


def _one_by_one(items: list[Item], *, first: int, job: _Job) -> CheckedBatch:
    """_alone for each of items (item i being check_all's item first + i): the share of a checker
    that died, checked again so that only the file that kills its process is lost."""
    return CheckedBatch.joined([_alone(item, first + row, job=job) for row, item in enumerate(items)])


def _fork_check(items: list[Item], *, first: int, job: _Job, board: Board) -> tuple[int, int]:
    """Fork a child that checks items (check_all's first, first + 1, ...) and pickles the results
    into a pipe, watched on `board`; return (pid, read end)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: check, answer, and leave without running the parent's exit handlers
        status = 1
        try:
            os.close(read_end)
            claim_slot(board)
            with os.fdopen(write_end, "wb") as answer:
                pickle.dump(_check_chunk(items, root=job.root, policy=job.policy, first=first,
                                         known=job.known(first, len(items))), answer)
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    return pid, read_end


def _collect(children: list[tuple[int, int]]) -> list[CheckedBatch | None]:
    """The answers of forked checkers (pid, read end), in order: None for one that died (or was
    killed) before it answered. A complete answer is all that is needed of a child: it is reaped
    later, so that its exit (the kernel unmapping its copy of this process, ~1 ms) does not hold
    this one up."""
    results: list[CheckedBatch | None] = []
    for pid, read_end in children:  # each child has its own pipe: reading one at a time cannot deadlock
        with os.fdopen(read_end, "rb") as answer:
            data = answer.read()
        _reap_later(pid)
        try:
            results.append(pickle.loads(data))
        except Exception:  # nothing, or a cut-off pickle: the child died mid-answer
            results.append(None)
    return results


_unreaped: list[int] = []


def _reap_later(pid: int) -> None:
    """Reap a child that has answered (or was killed) now if it is gone, else at reap_all."""
    if os.waitpid(pid, os.WNOHANG)[0] == 0:
        _unreaped.append(pid)


def reap_all() -> None:
    """Wait for every child _reap_later left: by now they have long exited, so this is immediate."""
    while _unreaped:
        os.waitpid(_unreaped.pop(), 0)


def _in_children(items: list[Item], *, first: int, job: _Job, workers: int) -> list[CheckedBatch | None]:
    """Check a few files (check_all's first, first + 1, ...) in `workers` forked children side by
    side, each a consecutive share of them; per child, its results, or None when it died (or was
    killed for its time) before it answered.

    Bare forks and pipes cost ~2 ms each where a process pool costs ~8: the difference is a
    quarter of a re-audit after a small change, which is exactly when a handful of files is checked.
    """
    share = -(-len(items) // workers)
    starts = range(0, len(items), share)
    board = Board(len(starts))
    with watched(board, policy=job.policy, timed_out=job.timed_out):
        return _collect([_fork_check(items[start:start + share], first=first + start, job=job, board=board)
                         for start in starts])


def _apart(items: list[Item], *, job: _Job, workers: int) -> CheckedBatch:
    """_in_children for check_all's items; the share of a child that died is checked again one
    file per process, which finds the file that kills its process (or outlasts its time)."""
    share = -(-len(items) // workers)
    batches = _in_children(items, first=0, job=job, workers=workers)
    return CheckedBatch.joined([
        batch if batch is not None else _one_by_one(items[start:start + share], first=start, job=job)
        for start, batch in zip(range(0, len(items), share), batches)])


def _in_processes(items: list[Item], *, job: _Job, workers: int) -> Iterator[CheckedBatch]:
    # Processes, not threads: per-file work is ~0.3 ms of mostly Python and small numpy calls, so
    # threads serialise on the GIL. Chunks amortise the hand-over of their results (a few arrays,
    # ~0.1 ms); at most 64 files each, so the last chunk leaves the other workers idle for ~20 ms,
    # not the ~60 ms of 3,000 files cut into 16 chunks.
    size = max(1, min(64, len(items) // (workers * 8)))
    starts = range(0, len(items), size)
    check = functools.partial(_check_chunk, root=job.root, policy=job.policy)
    position = 0
    while position < len(starts):
        broken = None
        board = Board(workers)  # a pool starts at most `workers` processes, each claiming a slot
        with watched(board, policy=job.policy, timed_out=job.timed_out), ProcessPoolExecutor(
                max_workers=workers, mp_context=multiprocessing.get_context("fork"), initializer=claim_slot,
                initargs=(board,)) as pool:
            # Each future is let go once its batch is handed on: a finished future keeps its
            # result, and holding every one would keep a second copy of the audit's columns.
            pending = deque(pool.submit(check, items[start:start + size], first=start,
                                        known=job.known(start, size)) for start in starts[position:])
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
        # Some worker died or was killed; the pool's other results are lost with it. The first chunk
        # without a result is checked one file per process (finding the culprit), the rest in a new
        # pool, which skips every file that has timed out.
        start = starts[broken]
        yield _one_by_one(items[start:start + size], first=start, job=job)
        position = broken + 1


# Object-store files are fetched and checked a group at a time, the next group fetched while one
# is checked: at most 32 files a group, and at most SPOOL_BYTES of temporary copies on disk at once
# (two groups of files of max_file_bytes(audit.max_pixels): 3 files a group at the default 40M pixels).
SPOOLED = 32
SPOOL_BYTES = 4 << 30


def _fetch(path: str, name: str, *, job: _Job, spool: str) -> KindDetails | None:
    """Copy one object, bounded by what max_pixels allows, to spool/name; or why it cannot be."""
    try:
        data = storage.read_regular_file(storage.join(job.root, path), max_bytes=max_file_bytes(job.policy.max_pixels))
    except storage.FileTooLarge as exc:
        return [("too_large", str(exc))]
    except OSError as exc:
        return [("unreadable", f"could not read the file: {exc.strerror or exc}")]
    with open(os.path.join(spool, name), "wb") as copy:
        copy.write(data)
    return None


class _WatchedPool:
    """A fork pool of checker processes watched for files past their time (audit/watchdog.py), for work
    that arrives in groups: started once (forking a process that has loaded TensorFlow costs tens
    of ms), and again after a worker dies or is killed."""

    def __init__(self, *, job: _Job, workers: int) -> None:
        self.job, self.workers = job, workers
        self.check = functools.partial(_check_chunk, root=job.root, policy=job.policy)
        self.stack: contextlib.ExitStack | None = None
        self.pool: ProcessPoolExecutor | None = None

    def _start(self) -> ProcessPoolExecutor:
        board = Board(self.workers)
        self.stack = contextlib.ExitStack()
        self.stack.enter_context(watched(board, policy=self.job.policy, timed_out=self.job.timed_out))
        self.pool = self.stack.enter_context(ProcessPoolExecutor(
            max_workers=self.workers, mp_context=multiprocessing.get_context("fork"), initializer=claim_slot,
            initargs=(board,)))
        return self.pool

    def close(self) -> None:
        if self.stack is not None:
            self.stack.close()
        self.stack = self.pool = None

    def checked(self, items: list[Item], *, first: int) -> CheckedBatch:
        """Items first, first + 1, ... of the job, checked in a share per worker; the share of a
        worker that died is checked again one file per process (_alone), and the pool started anew."""
        share = -(-len(items) // self.workers)
        starts = range(0, len(items), share)
        pool = self.pool or self._start()
        futures = [pool.submit(self.check, items[start:start + share], first=first + start,
                               known=self.job.known(first + start, share)) for start in starts]
        batches: list[CheckedBatch] = []
        for start, future in zip(starts, futures):
            try:
                batches.append(future.result())
            except BrokenProcessPool:
                self.close()
                batches.append(_one_by_one(items[start:start + share], first=first + start, job=self.job))
        return CheckedBatch.joined(batches)


def _fetched_then_checked(items: list[Item], *, job: _Job, workers: int) -> Iterator[CheckedBatch]:
    """Object-store files, a group at a time: fetched by threads (reads wait on the network) into a
    private temporary folder, the next group while one is checked there as local files are, in a
    pool of forked processes, so a decoder stuck in C is killed on time here too. The checkers
    never touch the object store (so none starts tensorflow-io's S3 client, with its abort at
    exit: see storage.exit_process)."""
    size = max(1, min(SPOOLED, SPOOL_BYTES // (2 * max_file_bytes(job.policy.max_pixels))))
    # Numbered copies, each with its object's extension (extension_mismatch is judged from it).
    names = [f"{index:09d}{os.path.splitext(path)[1]}" for index, (path, _) in enumerate(items)]
    with ThreadPoolExecutor(max_workers=4 * workers) as readers, \
            tempfile.TemporaryDirectory(prefix="trainwell-audit-") as spool:
        fetch = functools.partial(_fetch, job=job, spool=spool)
        checkers = _WatchedPool(job=_Job(root=spool, policy=job.policy), workers=workers)

        def fetching(start: int) -> list:
            return [readers.submit(fetch, items[index][0], names[index]) for index in range(start, start + size)
                    if index < len(items)]

        first = 0
        try:
            ahead = fetching(0)
            for start in range(0, len(items), size):
                fetched = [future.result() for future in ahead]
                ahead = fetching(start + size)  # the next group downloads while this one is checked
                batch = CheckedBatch(columns=new_columns(len(fetched)), findings={})
                copied = [row for row, found in enumerate(fetched) if found is None]
                if copied:  # numbered for the checkers from `first` on, so a killed one is known by its number
                    checked = checkers.checked([(names[start + row], "") for row in copied], first=first)
                    first += len(copied)
                    for name, column in checked.columns.items():
                        batch.columns[name][copied] = column
                    batch.findings.update({copied[row]: found for row, found in checked.findings.items()})
                batch.findings.update({row: found for row, found in enumerate(fetched) if found is not None})
                for row in copied:
                    os.unlink(os.path.join(spool, names[start + row]))
                yield batch
        finally:
            checkers.close()


def check_all(items: list[Item], *, root: Path | str, policy: AuditParams, reap: bool = True) -> Iterator[CheckedBatch]:
    """The results of items, in order, as consecutive CheckedBatches as they are ready.

    With `reap=False` the checker processes are left for the caller to reap (reap_all) once it
    has other work done: by then they have exited, where waiting here holds the caller up."""
    try:
        yield from _check_all(items, job=_Job(root=root, policy=policy))
    finally:
        if reap:
            reap_all()


def _check_all(items: list[Item], *, job: _Job) -> Iterator[CheckedBatch]:
    workers = job.policy.workers or os.cpu_count() or 1
    warm_up()
    if storage.is_remote(job.root):
        with frozen_heap():
            yield from _counted(_fetched_then_checked(items, job=job, workers=workers), total=len(items))
        return
    with frozen_heap():
        if workers == 1 or len(items) < SMALL_JOB:
            # A few files (a re-audit after a small change): bare child processes, still apart from this one.
            if items:
                yield _apart(items, job=job, workers=workers)
            return
        yield from _counted(_in_processes(items, job=job, workers=workers), total=len(items))


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
