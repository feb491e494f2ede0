"""The watchdog: which file each checker process is on and since when, and killing one past audit.file_timeout_s.

An alarm inside a checker is handled only between Python bytecodes, so a decoder stuck in C code
never sees it: a scan-bomb JPEG inside libjpeg ran 78 s against a 30 s limit. The checkers post
what they are doing in memory shared with the auditing process, where a thread kills any checker
whose file has run past its time.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

from trainwell.params import AuditParams

# A check still running this long (s) after its alarm is killed with its process. The grace lets
# a check in Python code stop at the alarm, keeping its process (and its pool).
KILL_GRACE_S = 0.5
# How often (s) the watchdog looks at what each checker process is doing.
WATCH_INTERVAL_S = 0.05


def timeout_finding(policy: AuditParams, *, killed: bool) -> tuple[str, str]:
    """The decode_timeout finding of a check stopped by the alarm, or killed with its process."""
    how = "its process was killed (a decoder in C code cannot be interrupted)" if killed else "interrupted"
    return ("decode_timeout", f"checking took longer than audit.file_timeout_s = {policy.file_timeout_s:g} s; "
            f"{how}; not decoded")


class Board:
    """What each checker process is doing, in memory shared with them (forked after it is made).

    Three doubles per slot: the checker's pid, the index (in check_all's items) of the file it is
    checking, -1 between files, and when that check started (time.monotonic: one clock for every
    process). A checker claims a slot when it starts; the watchdog (watched) reads them all.
    """

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.cells = multiprocessing.RawArray(ctypes.c_double, [0.0, -1.0, 0.0] * slots)
        self.claimed = multiprocessing.RawValue(ctypes.c_int, 0)
        self.lock = multiprocessing.Lock()


# In a checker process: its board and the offset of its slot there (None: unwatched, as the
# auditing process's own threads are, which only an alarm can stop).
_my_slot: tuple[Board, int] | None = None


def claim_slot(board: Board) -> None:
    """Run in a new checker process: take the board's next free slot."""
    global _my_slot
    with board.lock:
        slot = board.claimed.value
        board.claimed.value = slot + 1
    if slot < board.slots:
        board.cells[3 * slot] = os.getpid()
        _my_slot = (board, 3 * slot)


@contextlib.contextmanager
def watched(board: Board, *, policy: AuditParams, timed_out: set[int]) -> Iterator[None]:
    """While inside, kill every checker whose file has run KILL_GRACE_S past audit.file_timeout_s,
    adding that file's index to `timed_out`: its result is then decode_timeout, and it is never
    checked again in this audit. A thread of the auditing process, asleep but for a look at the
    board every WATCH_INTERVAL_S."""
    stop = threading.Event()
    limit_s = policy.file_timeout_s + KILL_GRACE_S

    def watch() -> None:
        while not stop.wait(WATCH_INTERVAL_S):
            now = time.monotonic()
            for base in range(0, 3 * board.slots, 3):
                pid, index, started = board.cells[base:base + 3]
                # The index is written after the start time and cleared between files, so an
                # index that is the same on a second look goes with the start time read.
                if index >= 0 and now - started > limit_s and board.cells[base + 1] == index and pid > 0:
                    timed_out.add(int(index))
                    board.cells[base + 1] = -1.0
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)

    thread = threading.Thread(target=watch, name="trainwell-check-watchdog", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def my_cells() -> tuple[Any, int]:
    """(the board's cells, this process's first cell) in a checker process; (None, 0) elsewhere."""
    return (_my_slot[0].cells, _my_slot[1]) if _my_slot is not None else (None, 0)
