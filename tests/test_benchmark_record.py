"""benchmarks/record.py keeps a benchmark's own output for docs/benchmarks.md, and only a successful run's."""

from __future__ import annotations

import importlib.util
import re

import pytest

from tests.helpers import REPO_ROOT


def _load_record():
    spec = importlib.util.spec_from_file_location("benchmark_record", REPO_ROOT / "benchmarks" / "record.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def record(tmp_path, monkeypatch):
    """record.py with its benchmarks folder in tmp_path (two scripts: one prints, one fails)."""
    module = _load_record()
    (tmp_path / "fine.py").write_text("import sys\nprint('ratio 2.5x', sys.argv[1:])\nprint('second line')\n")
    (tmp_path / "broken.py").write_text("print('half a result')\nraise SystemExit(3)\n")
    monkeypatch.setattr(module, "BENCHMARKS", tmp_path)
    monkeypatch.setattr(module, "RESULTS", tmp_path / "results")
    return module


def test_a_successful_run_is_saved_under_a_header_naming_command_commit_and_load(record, tmp_path, capsys):
    assert record.main(["fine", "--images", "10"]) == 0
    saved = (tmp_path / "results" / "fine.txt").read_text()
    lines = saved.splitlines()
    assert lines[0] == "$ python benchmarks/fine.py --images 10"
    assert re.match(r"# trainwell [0-9a-f]{4,}(\+changes)?, \d{4}-\d\d-\d\d \d\d:\d\d UTC, \d+ cores, 1-min load "
                    r"average [\d.]+ at the start, [\d.]+ at the end, \d+ s$", lines[1]), lines[1]
    assert lines[2:] == ["ratio 2.5x ['--images', '10']", "second line"]
    assert "ratio 2.5x" in capsys.readouterr().out  # shown as it runs, too


def test_a_failed_run_saves_nothing_and_keeps_the_earlier_result(record, tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "broken.txt").write_text("an earlier, whole result\n")
    assert record.main(["broken"]) == 3
    assert (tmp_path / "results" / "broken.txt").read_text() == "an earlier, whole result\n"
    assert sorted(path.name for path in (tmp_path / "results").iterdir()) == ["broken.txt"]  # no temporary left


@pytest.mark.parametrize("name", ["", "../fine", "fine.py", "record", "/etc/passwd", "no_such", "fine\n"])
def test_only_a_benchmark_in_the_folder_is_run(record, tmp_path, name, capsys):
    assert record.main([name]) == 2
    assert "no benchmark named" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def test_every_benchmark_has_a_saved_result_on_the_benchmarks_page():
    record = _load_record()
    page = (REPO_ROOT / "docs" / "benchmarks.md").read_text()
    included = set(re.findall(r'^--8<-- "benchmarks/results/(\w+)\.txt"$', page, flags=re.MULTILINE))
    assert included == set(record.benchmark_names())
    for name in included:
        text = (REPO_ROOT / "benchmarks" / "results" / f"{name}.txt").read_text()
        assert text.startswith(f"$ python benchmarks/{name}.py") and "\n# trainwell " in text, name


