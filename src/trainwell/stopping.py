"""SIGTERM and Ctrl-C stop a command: it unwinds as for Ctrl-C, and one stuck in native code is ended after a grace period."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psutil

# Seconds a command has, after SIGTERM or Ctrl-C, to unwind before it is ended where it stands:
# Python runs a signal handler only between bytecodes, never while the main thread waits inside
# TensorFlow (a collective waiting for a worker that died, a cluster start-up).
GRACE_S = 10.0
# Seconds between looks at whether the DVC process that started this command is still there: a
# killed `dvc` (SIGKILL, a closed terminal) signals nothing to its stage's command.
PARENT_POLL_S = 1.0
# DVC sets it for every stage command it runs (dvc/stage/run.py, prepare_kwargs).
DVC_STAGE_VARIABLE = "DVC_STAGE"
# Shells DVC may run a stage's command through (`$SHELL -c`); the `dvc` process is the first
# ancestor that is none of them.
SHELL_NAMES = frozenset({"sh", "ash", "dash", "bash", "zsh", "ksh", "mksh", "fish", "busybox", "csh", "tcsh"})
STOPPING_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_watcher: threading.Thread | None = None


class Stopped(BaseException):
    """SIGTERM reached the command; like KeyboardInterrupt, no `except Exception` holds it."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal.Signals(signal_number).name)
        self.signal_number = signal_number


def _raise_stopped(signal_number: int, frame: object) -> None:
    raise Stopped(signal_number)


def stop_on_signals() -> None:
    """SIGTERM raises Stopped in the main thread, and a watcher ends the process GRACE_S after SIGTERM
    or SIGINT if it has not ended by then (exit 128 + the signal's number, as a shell reports it).

    Call it again after TensorFlow starts a multi-worker cluster: its preemption notifier takes
    SIGTERM for itself and only logs it, so a worker would ignore `kill` and a cancelled CI job.
    """
    global _watcher
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread (a library caller's thread)
    signal.signal(signal.SIGTERM, _raise_stopped)
    if _watcher is None:
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)
        signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        os.register_at_fork(after_in_child=_forget_in_child)
        _watcher = threading.Thread(target=_watch, args=(read_end,), name="trainwell-stop-watcher", daemon=True)
        _watcher.start()


def stop_with_dvc() -> None:
    """Under DVC, stop as on SIGTERM when the `dvc` process that started this command ends.

    `dvc repro` runs a stage as `$SHELL -c 'trainwell train'`: bash replaces itself with the
    command, dash (Debian's /bin/sh, DVC's shell when SHELL is unset) stays as its parent. Killed,
    `dvc` leaves the shell and the command running as orphans that hold the data, the backup and
    (multi-worker) the port. Only under DVC: a command a person starts with `nohup` or `&` is meant
    to outlive the shell that started it. Call it after stop_on_signals, so the SIGTERM it sends
    unwinds as Stopped.
    """
    if DVC_STAGE_VARIABLE not in os.environ or threading.current_thread() is not threading.main_thread():
        return
    starter = _nearest_non_shell_ancestor()
    if starter is None:
        return  # already an orphan (or DVC is the container's first process): nothing to follow
    threading.Thread(target=_watch_starter, args=(starter,), name="trainwell-parent-watcher", daemon=True).start()


def _nearest_non_shell_ancestor() -> psutil.Process | None:
    """The first ancestor that is not a shell (`dvc` itself), or None when the chain reaches pid 1."""
    import psutil  # here, not at import: every command imports this module, only a DVC stage needs it

    shells = SHELL_NAMES | {os.path.basename(os.environ.get("SHELL") or "/bin/sh")}
    try:
        ancestor = psutil.Process(os.getppid())
        while ancestor.pid > 1 and ancestor.name() in shells:
            parent = ancestor.parent()
            if parent is None:
                return None
            ancestor = parent
    except psutil.Error:
        return None  # it ended while being looked at: too late to follow
    return ancestor if ancestor.pid > 1 else None


def _watch_starter(starter: psutil.Process) -> None:
    """SIGTERM to this process once `starter` has ended (is_running also sees a reused pid)."""
    while _running(starter):
        time.sleep(PARENT_POLL_S)
    with contextlib.suppress(OSError):
        os.write(sys.stderr.fileno(), f"trainwell: the dvc process that started this command (pid {starter.pid}) "
                                      f"has ended; stopping as on SIGTERM.\n".encode())
    os.kill(os.getpid(), signal.SIGTERM)


def _running(process: psutil.Process) -> bool:
    """Running, and not a zombie: a killed `dvc` stays one until its own parent reaps it."""
    import psutil

    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _watch(read_end: int) -> None:
    """Wait for a stopping signal's byte from the wakeup pipe, then give the main thread GRACE_S to end."""
    while True:
        received = os.read(read_end, 64)
        stopping = [number for number in received if number in STOPPING_SIGNALS]
        if stopping:
            break
    time.sleep(GRACE_S)
    name = signal.Signals(stopping[0]).name
    with contextlib.suppress(OSError):
        os.write(sys.stderr.fileno(), f"trainwell: still running {GRACE_S:.0f} s after {name} (waiting inside "
                                      f"TensorFlow); stopped there. What was written is whole.\n".encode())
    os._exit(128 + stopping[0])


def _forget_in_child() -> None:
    """A forked child (an audit checker) keeps Python's defaults: its SIGTERM ends it, and it never
    writes to the parent's wakeup pipe."""
    global _watcher
    _watcher = None  # the thread was not copied into the child
    with contextlib.suppress(ValueError):  # a fork from another thread: nothing was set there
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
