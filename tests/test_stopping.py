"""SIGTERM and Ctrl-C stop a trainwell process: unwinding in Python, or ended after the grace period when stuck in native code."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests.helpers import run, tool_env

# A child Python with trainwell's handlers; `body` runs after it prints "ready".
PRELUDE = """
import hashlib, os, signal, sys, time
from trainwell import stopping
stopping.GRACE_S = {grace}
stopping.stop_on_signals()
print("ready", flush=True)
"""


def _as_from_a_terminal() -> None:
    """SIGINT at its default in the child, as a command started from a shell has it: a pytest-xdist
    worker ignores SIGINT, its children inherit that, and Python then leaves Ctrl-C ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(body: str, *, grace: float = 0.5) -> subprocess.Popen:
    script = PRELUDE.format(grace=grace) + textwrap.dedent(body)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, preexec_fn=_as_from_a_terminal)
    assert process.stdout is not None and process.stdout.readline() == "ready\n"
    return process


@pytest.mark.parametrize(("sent", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_process_stuck_in_native_code_is_ended_after_the_grace_period(sent, code):
    # pbkdf2 runs in C for minutes without looking at signals, like a TensorFlow collective waiting for a peer.
    process = start("hashlib.pbkdf2_hmac('sha256', b'x', b'y', 2**31 - 1)")
    time.sleep(0.2)
    process.send_signal(sent)
    started = time.monotonic()
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == code and time.monotonic() - started < 30
    assert f"still running 0 s after {signal.Signals(sent).name}" in stderr


def test_sigterm_in_python_code_unwinds_as_stopped():
    process = start("""
        try:
            print("sleeping", flush=True)
            time.sleep(60)
        except stopping.Stopped as stopped:
            print("unwound", stopped.signal_number, flush=True)
            sys.exit(7)
    """, grace=30)
    assert process.stdout is not None and process.stdout.readline() == "sleeping\n"
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 7 and f"unwound {int(signal.SIGTERM)}" in stdout, stderr


def test_a_forked_child_keeps_the_default_sigterm_and_leaves_its_parent_alone():
    process = start("""
        read_end, write_end = os.pipe()
        child = os.fork()
        if child == 0:
            os.write(write_end, b"x")  # the fork hooks have run
            time.sleep(60)
            os._exit(0)
        os.read(read_end, 1)
        os.kill(child, signal.SIGTERM)
        _, status = os.waitpid(child, 0)
        print("child", os.waitstatus_to_exitcode(status), flush=True)
        time.sleep(1.0)  # twice the grace period: the parent's watcher must not have fired
        print("parent alive", flush=True)
    """)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert f"child {-int(signal.SIGTERM)}" in stdout and "parent alive" in stdout


# A stage command as `trainwell` sets itself up (cli.run), which writes its pid, then waits.
STAGE_SCRIPT = """
import os, sys, time
from pathlib import Path
from trainwell import stopping
stopping.stop_on_signals()
stopping.stop_with_dvc()
Path("pid").write_text(str(os.getpid()))
try:
    time.sleep(120)
except stopping.Stopped:
    Path("stopped").write_text("yes")
    sys.exit(143)
"""


def _wait_for(path, *, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    return path.exists()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.dvc
@pytest.mark.parametrize("shell", ["/bin/bash", "/bin/sh"])
def test_a_stage_command_stops_when_dvc_is_killed(tmp_path, shell):
    # A real `dvc repro`, SIGKILLed mid-stage: its command must stop by itself (before, `trainwell
    # train` ran on as an orphan holding its port). DVC runs it through $SHELL: bash replaces itself
    # with the command; dash (/bin/sh on Debian, DVC's shell when SHELL is unset) stays its parent
    # and outlives `dvc`, which is how CI, with no SHELL, caught a watcher that followed the parent.
    (tmp_path / "stage.py").write_text(STAGE_SCRIPT)
    (tmp_path / "dvc.yaml").write_text(f"stages:\n  wait:\n    cmd: {sys.executable} stage.py\n    deps: [stage.py]\n")
    run(["git", "init", "-q", "-b", "main"], tmp_path)
    run(["dvc", "init", "-q"], tmp_path)
    dvc = subprocess.Popen(["dvc", "repro", "-q"], cwd=tmp_path, env={**tool_env(), "SHELL": shell},
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert _wait_for(tmp_path / "pid", timeout_s=60)
        stage = int((tmp_path / "pid").read_text())
        dvc.kill()
        dvc.wait(timeout=30)
        assert _wait_for(tmp_path / "stopped", timeout_s=20)  # PARENT_POLL_S is 1 s
        deadline = time.monotonic() + 20
        while _alive(stage) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(stage)
    finally:
        if dvc.poll() is None:
            dvc.kill()


def test_outside_dvc_a_command_outlives_its_parent(tmp_path):
    # `nohup trainwell train &`: the shell that started it may end; the command must not.
    (tmp_path / "stage.py").write_text(STAGE_SCRIPT)
    environment = {key: value for key, value in tool_env().items() if key != "DVC_STAGE"}
    middle = subprocess.Popen([sys.executable, "-c", f"import subprocess, sys; subprocess.Popen([{sys.executable!r}, "
                               "'stage.py']); import time; time.sleep(120)"], cwd=tmp_path, env=environment)
    try:
        assert _wait_for(tmp_path / "pid", timeout_s=60)
        orphan = int((tmp_path / "pid").read_text())
        middle.kill()
        middle.wait(timeout=30)
        time.sleep(3)  # three of stop_with_dvc's polls, had it been watching
        assert _alive(orphan) and not (tmp_path / "stopped").exists()
        os.kill(orphan, signal.SIGTERM)
        assert _wait_for(tmp_path / "stopped", timeout_s=20)
    finally:
        with contextlib.suppress(ProcessLookupError, ValueError, FileNotFoundError):
            os.kill(int((tmp_path / "pid").read_text()), signal.SIGKILL)
