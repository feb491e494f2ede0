"""Test helpers: tiny params, running the real commands, snapshots of folders. Fixtures live in conftest.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["circle", "square", "triangle", "cross", "ring"]


def tiny_params(*, images_per_class: int = 12, image_size: int = 32, epochs: int = 2) -> dict:
    """A complete params mapping (DVC needs every key a stage declares) with tiny sizes: seconds per stage."""
    from trainwell.params import Params

    params = Params().model_dump(mode="json")
    overrides = {
        "demo": {"images_per_class": images_per_class, "image_size": image_size},
        "data": {"image_size": image_size},
        "split": {"val_fraction": 0.25, "test_fraction": 0.25},
        "build": {"shard_size": 16},
        "train": {"epochs": epochs, "batch_size": 8, "learning_rate": 0.001},
        "evaluate": {"batch_size": 16},
        # Two epochs on 30 images prove the plumbing, not the model: gate on what they can reach.
        "gate": {"checks": [{"metric": "metrics/eval.json:accuracy", "min": 0.0},
                            {"metric": "metrics/audit.json:errors", "max": 0},
                            {"metric": "metrics/audit.json:quarantined", "max": 0}]},
    }
    for section, values in overrides.items():
        params[section].update(values)
    return params


def write_params(folder: Path, params: dict) -> Path:
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def make_project(folder: Path, params: dict) -> Path:
    """A git repository made a trainwell project by `trainwell init`, with the given params, committed."""
    run(["git", "init", "-q", "-b", "main"], folder)
    run(["git", "config", "user.email", "ci@example.invalid"], folder)
    run(["git", "config", "user.name", "trainwell tests"], folder)
    run(["trainwell", "init"], folder)
    write_params(folder, params)
    run(["git", "add", "-A"], folder)
    run(["git", "commit", "-q", "-m", "project"], folder)
    return folder


def pipeline_params() -> dict:
    """Tiny params for a whole `dvc repro`: tiny_params' two epochs and a two-fold, one-epoch label review.

    Two epochs, as test_dvc_pipeline always trained: that model's test-split metrics come out the same
    bytes with evaluate.batch_size 7 and 16, which the params-change test relies on (after one epoch
    the calibration error moves in its 8th digit, so card and report re-run too).
    """
    params = tiny_params()
    params["label_review"].update({"folds": 2, "epochs_per_fold": 1})
    return params


def copy_project(source: Path, target: Path) -> Path:
    """A private copy of a project (its git repository and DVC cache included), free to change."""
    shutil.copytree(source, target, symlinks=True, dirs_exist_ok=True)
    return target


def tool_env() -> dict[str, str]:
    """Environment for subprocesses: this interpreter's bin folder first, so `trainwell` and `dvc` resolve."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env.pop("DVC_EXP_NAME", None)
    return env


def user_env() -> dict[str, str]:
    """tool_env() as a user's shell has it: no TF_CPP_MIN_LOG_LEVEL (trainwell must keep TensorFlow quiet itself)
    and no TF_ENABLE_ONEDNN_OPTS (the command picks the kernels itself; conftest set it for this process)."""
    environment = tool_env()
    environment.pop("TF_CPP_MIN_LOG_LEVEL", None)
    environment.pop("TF_ENABLE_ONEDNN_OPTS", None)
    return environment


def run(command: list[str], cwd: Path, check: bool = True,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a command (in tool_env() unless `env`), capturing output; on an unexpected failure show everything it printed."""
    result = subprocess.run(command, cwd=cwd, env=env or tool_env(), capture_output=True, text=True)
    return _checked(result) if check else result


def _checked(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """The result, or an AssertionError showing the command and everything it printed when it failed."""
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, result.args))} exited {result.returncode}\nstdout:\n{result.stdout}"
                             f"\nstderr:\n{result.stderr}")
    return result


def trainwell_in_process(arguments: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """`trainwell ARGUMENTS` run by cli.main in this process, in `cwd`, returning what run() would:
    its exit status and what it printed. For commands a test runs many times: a child Python pays
    TensorFlow's import (about 6 s of CPU here) each time, this process once. The console entry
    point's own part (signal handlers, exit) is tested through real processes (test_cli, test_stopping)."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from trainwell import cli

    stdout, stderr = (io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True) for _ in range(2))
    before = Path.cwd()
    os.chdir(cwd)
    try:
        with redirect_stdout(stdout), redirect_stderr(stderr):
            code = cli.main(arguments)
    finally:
        os.chdir(before)
    printed = [stream.buffer.getvalue().decode("utf-8") for stream in (stdout, stderr)]  # type: ignore[attr-defined]
    result = subprocess.CompletedProcess(["trainwell", *arguments], code, *printed)
    return _checked(result) if check else result


def kill_train_after_backup(workdir: Path, backup_meta: Path, *, timeout_s: float = 120,
                            signal_number: int = 9) -> subprocess.Popen:
    """Start `trainwell train` in workdir and send it `signal_number` (SIGKILL) as soon as its first
    epoch backup appears; its stderr is kept in `process.stderr_text`."""
    import time

    process = subprocess.Popen(["trainwell", "train"], cwd=workdir, env=tool_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not backup_meta.exists():
        time.sleep(0.01)
    process.send_signal(signal_number)
    _, process.stderr_text = process.communicate()  # type: ignore[attr-defined]
    return process


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every file's bytes and mode under a folder, to prove a stage changed nothing there."""
    state = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            state[str(path.relative_to(folder))] = (0, os.readlink(path).encode())
        elif path.is_file():
            state[str(path.relative_to(folder))] = (path.stat().st_mode, path.read_bytes())
    return state


EXPORT_SIZE = 32  # image side of the model the export tests serve
# The exported test project's served limits: low, so the bombs that cross them stay small.
EXPORT_MAX_PIXELS = 1_000_000
EXPORT_MAX_IMAGE_BYTES = 1 << 20


def save_export_model(path: Path, *, near_ties: bool = False) -> None:
    """An untrained tiny network (its outputs still depend on the input).

    near_ties: every class's head weights are one shared column plus differences a thousandth of
    its size, far below int8's step (1/127 of the largest weight), so int8 reorders the classes.
    """
    import keras
    import numpy as np

    from trainwell.training.model_files import save_model_file
    from trainwell.training.network import build_model

    keras.utils.set_random_seed(0)
    model = build_model(num_classes=len(CLASSES), image_size=EXPORT_SIZE, conv_filters=[8, 8], kernel_size=3,
                        dense_units=16)
    if near_ties:
        head = model.get_layer("class_scores")
        kernel, bias = head.get_weights()
        shared = np.repeat(kernel[:, :1], kernel.shape[1], axis=1)
        differences = np.random.default_rng(1).normal(size=kernel.shape) * np.abs(kernel).mean() * 1e-3
        head.set_weights([shared + differences, np.zeros_like(bias)])
    save_model_file(model, path)
