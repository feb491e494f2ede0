"""`make test`'s pytest-xdist groups hold: tests marked with one xdist_group run on one worker, so a shared fixture is built once."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = '''
import os

import pytest


@pytest.fixture(scope="session")
def built_once():
    with open(os.environ["PROBE_BUILT"], "a") as handle:
        handle.write(f"{os.getpid()}\\n")
    return os.getpid()


@pytest.mark.xdist_group("shared")
@pytest.mark.parametrize("index", range(6))
def test_shared(built_once, index):
    assert built_once == os.getpid()


@pytest.mark.parametrize("index", range(6))
def test_free(index):
    pass
'''


def test_an_xdist_group_runs_on_one_worker_and_builds_its_fixture_once(tmp_path):
    # pytest 9 renamed the node id attribute xdist 3.8 rewrites for --dist loadgroup: the groups were
    # then silently ignored and every worker built the pipeline fixtures again (pyproject pins pytest<9).
    (tmp_path / "probe").mkdir()
    (tmp_path / "probe" / "test_probe.py").write_text(PROBE)
    result = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-p", "no:cacheprovider",
                             "-q", "--basetemp", str(tmp_path / "run"), "test_probe.py"],
                            cwd=tmp_path / "probe", capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PROBE_BUILT": str(tmp_path / "built")})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "12 passed" in result.stdout
    builders = (tmp_path / "built").read_text().split()
    assert len(builders) == 1, builders
