"""The tier guard: costly work a test's markers do not declare fails the test, in its process or a child's."""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT
from tests.tier_guard import trainwell_tier_guard as tier_guard


@contextlib.contextmanager
def watched(record: Path, allowed: str = "") -> Iterator[Path]:
    """Uses recorded to a file of this test's own, with `allowed` markers: the suite's record stays clean."""
    names = (tier_guard.RECORD_VARIABLE, tier_guard.ALLOWED_VARIABLE)
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update({tier_guard.RECORD_VARIABLE: str(record), tier_guard.ALLOWED_VARIABLE: allowed})
    try:
        yield record
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.mark.parametrize(
    ("command", "cost"),
    [
        (["dvc", "repro"], "dvc"),
        (["/venv/bin/dvc", "repro", "build"], "dvc"),
        (["dvc", "exp", "run", "-S", "train.epochs=2"], "dvc"),
        ([sys.executable, "-m", "dvc", "repro"], "dvc"),
        ("dvc repro evaluate", "dvc"),  # a shell command line
        (["/usr/bin/chromium", "--headless", "--dump-dom", "file:///x.html"], "browser"),
        (["chromium-browser", "--headless"], "browser"),
        ([sys.executable, "-m", "venv", "--without-pip", "/tmp/v"], "install"),
        ([Path(sys.executable), "-m", "pip", "wheel", "--no-deps", "."], "install"),
        (["pip", "install", "trainwell"], "install"),
        ([b"/usr/bin/python3", b"-m", b"pip", b"install", b"x"], "install"),
        (["dvc", "exp", "show"], None),
        (["dvc", "metrics", "show", "--json"], None),
        (["dvc", "init"], None),
        (["trainwell", "train"], None),  # a child Python: its fit() reports itself
        (["git", "commit", "-m", "dvc repro"], None),
        ([sys.executable, "-m", "pip", "--version"], None),
        ([], None),
        ("", None),
    ],
)
def test_command_costs(command, cost):
    found = tier_guard.cost_of_command(command)
    assert (found[0] if found else None) == cost


def test_any_command_line_is_classified_without_error():
    rng = random.Random(0)
    words = ["dvc", "repro", "exp", "run", "-m", "python3", "pip", "install", "venv", "chromium", "", " ", "\x00",
             "é", "--", "-S", "/", "./dvc"]
    for _ in range(3000):
        line = [rng.choice(words) for _ in range(rng.randrange(0, 6))]
        for command in (line, " ".join(line), [os.fsencode(word) for word in line], tuple(line)):
            found = tier_guard.cost_of_command(command)
            assert found is None or found[0] in tier_guard.COSTS
    for odd in (None, 3, object(), [None], [3, "x"]):
        assert tier_guard.cost_of_command(odd) is None


def test_unmarked_costly_work_in_this_process_is_refused_before_it_starts(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(loss="mse")
    with watched(tmp_path / "uses") as record:
        with pytest.raises(tier_guard.TierViolation, match=r"keras Model.fit: this test fits a Keras model .*@pytest\.mark\.train"):
            model.fit([[0.0, 1.0]], [[1.0]], verbose=0)
        with pytest.raises(tier_guard.TierViolation, match=r"@pytest\.mark\.train"):
            model.train_on_batch([[0.0, 1.0]], [[1.0]])
        with pytest.raises(tier_guard.TierViolation, match=r"dvc repro: this test runs a DVC pipeline .*@pytest\.mark\.dvc"):
            subprocess.run(["dvc", "repro"], cwd=tmp_path)  # refused before the process starts
        with pytest.raises(tier_guard.TierViolation, match=r"starts headless Chromium"):
            subprocess.run(["chromium", "--headless"], cwd=tmp_path)
        uses = tier_guard.read_uses(str(record))
    assert [cost for cost, _ in uses] == ["train", "train", "dvc", "browser"]
    assert not (tmp_path / ".dvc").exists()


def test_marked_work_is_recorded_and_allowed(tmp_path):
    with watched(tmp_path / "uses", allowed="dvc,browser") as record:
        tier_guard.use("dvc", "dvc repro")
        tier_guard.use("browser", "chromium")
        with pytest.raises(tier_guard.TierViolation):
            tier_guard.use("install", "venv")
    assert tier_guard.read_uses(str(record)) == [("dvc", "dvc repro"), ("browser", "chromium"), ("install", "venv")]
    assert tier_guard.read_uses(str(tmp_path / "never-written")) == []


CHILD_FIT = """
import keras
import numpy as np
model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
model.compile(loss="mse")
model.fit(np.ones((1, 2)), np.ones((1, 1)), verbose=0)
print("trained")
"""


@pytest.mark.tf_process
def test_a_child_python_that_starts_tensorflow_or_fits_reports_it(tmp_path):
    # conftest.py put the guard's sitecustomize on PYTHONPATH, which every child Python inherits.
    with watched(tmp_path / "uses") as record:
        refused = subprocess.run([sys.executable, "-c", CHILD_FIT], capture_output=True, text=True)
        uses = tier_guard.read_uses(str(record))
    assert refused.returncode != 0 and "TierViolation" in refused.stderr and "trained" not in refused.stdout
    assert uses == [("tf_process", "-c imported tensorflow")]
    with watched(tmp_path / "tensorflow", allowed="tf_process") as record:
        refused = subprocess.run([sys.executable, "-c", CHILD_FIT], capture_output=True, text=True)
        uses = tier_guard.read_uses(str(record))
    assert refused.returncode != 0 and "TierViolation" in refused.stderr and "trained" not in refused.stdout
    assert uses == [("tf_process", "-c imported tensorflow"), ("train", "keras Model.fit")]
    with watched(tmp_path / "allowed", allowed="train"):  # train implies tf_process
        allowed = subprocess.run([sys.executable, "-c", CHILD_FIT], capture_output=True, text=True)
    assert allowed.returncode == 0 and allowed.stdout == "trained\n", allowed.stderr


PROBE = textwrap.dedent('''
    import subprocess
    import sys

    import pytest

    CHILD = [sys.executable, "-c", "import trainwell_tier_guard as guard; guard.use('train', 'a probe')"]

    def test_hides_a_child_that_trains():
        subprocess.run(CHILD, capture_output=True)  # the child's error is swallowed

    @pytest.mark.train
    def test_marked_child_that_trains():
        assert subprocess.run(CHILD).returncode == 0

    def test_cheap():
        assert subprocess.run([sys.executable, "-c", "pass"]).returncode == 0

    @pytest.mark.dvc
    def test_marked_dvc():
        pass
''')


def test_the_suite_fails_an_unmarked_test_even_when_a_child_hid_the_error(tmp_path):
    """A pytest run with this suite's conftest and markers over probe tests: the record decides, not the exit code."""
    (tmp_path / "test_probe.py").write_text(PROBE)
    environment = {name: value for name, value in os.environ.items()
                   if name not in (tier_guard.RECORD_VARIABLE, tier_guard.ALLOWED_VARIABLE)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-c", str(REPO_ROOT / "pyproject.toml"),
         "--rootdir", str(tmp_path), "-p", "no:cacheprovider", "-q", "--durations=0", "-rA", "test_probe.py"],
        cwd=tmp_path, env=environment | {"PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True)
    lines = result.stdout.splitlines()
    assert "FAILED test_probe.py::test_hides_a_child_that_trains" in " ".join(lines), result.stdout
    assert "a probe: this test fits a Keras model" in result.stdout and "@pytest.mark.train" in result.stdout
    for passed in ("test_marked_child_that_trains", "test_cheap", "test_marked_dvc"):
        assert f"PASSED test_probe.py::{passed}" in lines, result.stdout
    assert "1 failed, 3 passed" in result.stdout
    # Cost markers imply slow: the fast tier leaves them out.
    fast = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-c", str(REPO_ROOT / "pyproject.toml"),
         "--rootdir", str(tmp_path), "-p", "no:cacheprovider", "-q", "-m", "not slow", "test_probe.py"],
        cwd=tmp_path, env=environment | {"PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True)
    assert "1 failed, 1 passed, 2 deselected" in fast.stdout, fast.stdout
