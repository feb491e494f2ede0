"""Quiet by default and quick to start: no TensorFlow log line at default verbosity (-v shows them),
`import trainwell` and help() load no TensorFlow, a missing input is said before TensorFlow starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import copy_project, user_env
from trainwell import console

TENSORFLOW_MODULES = ("tensorflow", "keras", "tensorflow_io", "absl.logging")
NATIVE_LOG_LINES = [
    b"W0000 00:00:1796563295.341043   11739 tf_tfl_flatbuffer_helpers.cc:390] Ignored output_format.\n",
    b"I0000 00:00:1.0 1 x.cc:1] info\n",
    b"2026-12-06 13:35:04.426681: E external/local_xla/xla/stream_executor/cuda/cuda_fft.cc:479] Unable to register\n",
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
]


def loaded_after(code: str, cwd: Path) -> list[str]:
    """The TensorFlow-family modules a fresh interpreter holds after running code."""
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in {TENSORFLOW_MODULES!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], cwd=cwd, env=user_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.split("\n")[-2].split()


def test_import_and_help_load_no_tensorflow(tmp_path):
    assert loaded_after("import trainwell", tmp_path) == []
    assert loaded_after("import io, contextlib, trainwell\nwith contextlib.redirect_stdout(io.StringIO()):\n"
                        "    help(trainwell)", tmp_path) == []
    import pydoc

    import trainwell

    text = pydoc.render_doc(trainwell, renderer=pydoc.plaintext)
    for name in ("audit_folder", "check_model", "DivergenceGuard", "plan_inputs", trainwell.__version__):
        assert name in text, name  # the docstring still lists the whole API


@pytest.mark.parametrize("command", [["train"], ["evaluate"], ["export"], ["label-review"], ["card"],
                                     ["predict", "picture.jpg"], ["build"]])
def test_a_missing_input_is_said_before_tensorflow_starts(command, tmp_path):
    code = ("import sys\nfrom trainwell.cli import main\n"
            f"status = main({command!r})\nassert status in (1, 2), status\n")
    assert loaded_after(code, tmp_path) == []
    result = subprocess.run(["trainwell", *command], cwd=tmp_path, env=user_env(), capture_output=True, text=True)
    assert result.returncode in (1, 2) and any(word in result.stderr for word in ("missing", "no model", "lists no", "needs the model")), \
        result.stderr


@pytest.mark.parametrize("verbosity", [console.QUIET, console.NORMAL, console.VERBOSE])
def test_native_log_lines_are_held_below_verbose(verbosity, capfd):
    saved = console.verbosity()
    console.set_verbosity(verbosity)
    try:
        with console.native_logs_hidden():
            for line in NATIVE_LOG_LINES:
                os.write(2, line)
            os.write(2, b"a native line that is not TensorFlow's\n")
            print("python's own stderr", file=sys.stderr)
    finally:
        console.set_verbosity(saved)
    stderr = capfd.readouterr().err
    assert "a native line that is not TensorFlow's" in stderr and "python's own stderr" in stderr
    shown = [line.decode().strip() for line in NATIVE_LOG_LINES if line.decode().strip() in stderr]
    assert shown == ([] if verbosity < console.VERBOSE else [line.decode().strip() for line in NATIVE_LOG_LINES])


def test_an_exception_inside_still_restores_stderr(capfd):
    with pytest.raises(RuntimeError), console.native_logs_hidden():
        os.write(2, b"kept\n")
        raise RuntimeError("boom")
    os.write(2, b"after\n")
    assert capfd.readouterr().err.splitlines()[-2:] == ["kept", "after"]


# The commands no stage runs; every stage's command is read from the shared `dvc repro` (conftest's
# `reproduced`, run in a user's environment): the same commands, started by DVC as a user starts them.
OTHER_COMMANDS = [["gate"], ["predict", "data/demo/circle"], ["doctor"]]


def assert_no_native_log_line(text: str, what: str) -> None:
    for line in text.splitlines():
        assert not console._NATIVE_LOG_LINE.match(line.encode()), f"{what}: {line}"
        assert not line.startswith(("WARNING:tensorflow", "WARNING:absl", "INFO:tensorflow")), f"{what}: {line}"


@pytest.fixture(scope="module")
def other_commands(reproduced, tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess]:
    """Each command no stage runs, once, on a copy of the reproduced project, with a user's environment."""
    folder = copy_project(reproduced.folder, tmp_path_factory.mktemp("quiet"))
    return {command[0]: subprocess.run(["trainwell", *command], cwd=folder, env=user_env(), capture_output=True,
                                       text=True) for command in OTHER_COMMANDS}


@pytest.mark.train
@pytest.mark.dvc
def test_no_tensorflow_log_line_from_any_stage_under_dvc_repro(reproduced):
    stages = [line for line in reproduced.output.splitlines() if line.startswith("Running stage")]
    assert len(stages) >= 10, reproduced.output  # versions, demo_data ... report: every stage printed here
    assert_no_native_log_line(reproduced.output + reproduced.errors, "dvc repro")


@pytest.mark.train
@pytest.mark.dvc
@pytest.mark.parametrize("command", [command[0] for command in OTHER_COMMANDS])
def test_no_tensorflow_log_line_at_default_verbosity(other_commands, command):
    result = other_commands[command]
    assert result.returncode == 0, result.stderr
    assert_no_native_log_line(result.stdout + result.stderr, command)
