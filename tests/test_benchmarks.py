"""The benchmark scripts still start: every import resolves and --help explains them (they are run by hand, not by CI)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT, tool_env

# Each script starts in a Python of its own and parses --help before it imports TensorFlow (it starts
# none: the tier guard would fail the test). Seventeen Python starts are ~10 s of CPU: not the fast tier.
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("script", sorted(path.name for path in (REPO_ROOT / "benchmarks").glob("*.py")))
def test_benchmark_starts_and_explains_itself(script):
    result = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / script), "--help"], cwd=REPO_ROOT,
                            env=tool_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout
