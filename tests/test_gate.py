"""`trainwell gate`: absolute thresholds, tolerances against a git revision, a readable table."""

from __future__ import annotations

import json

from tests.helpers import run, tiny_params, write_params
from trainwell.cli import main
from trainwell.params import GateCheck
from trainwell.reports.gate import evaluate_checks, format_table


def metrics(folder, *, accuracy: float, errors: int = 0) -> None:
    (folder / "metrics").mkdir(exist_ok=True)
    (folder / "metrics" / "eval.json").write_text(json.dumps({"accuracy": accuracy, "per_class": {"cat": {"f1": 0.9}}}))
    (folder / "metrics" / "audit.json").write_text(json.dumps({"errors": errors}))


CHECKS = [
    GateCheck(metric="metrics/eval.json:accuracy", min=0.9, max_drop=0.01),
    GateCheck(metric="metrics/eval.json:per_class.cat.f1", min=0.8),
    GateCheck(metric="metrics/audit.json:errors", max=0),
]


def test_thresholds_pass_and_fail_with_reasons():
    current = {"metrics/eval.json": {"accuracy": 0.85, "per_class": {"cat": {"f1": 0.9}}},
               "metrics/audit.json": {"errors": 2}}
    rows = evaluate_checks(checks=CHECKS, current=current, baseline=None)
    assert [row.passed for row in rows] == [False, True, False]
    assert rows[0].failures == ["below 0.9"] and rows[2].failures == ["above 0"]
    table = format_table(rows, revision=None)
    assert "FAIL: below 0.9" in table and "gate: 3 checks, 2 FAILED" in table


def test_missing_metric_fails_and_says_what_to_do():
    rows = evaluate_checks(checks=CHECKS[:1], current={"metrics/eval.json": None}, baseline=None)
    assert rows[0].failures == ["missing from metrics/eval.json; run `dvc repro` first"]


def test_tolerance_against_baseline():
    base = {"metrics/eval.json": {"accuracy": 0.97}}
    ok = evaluate_checks(checks=CHECKS[:1], current={"metrics/eval.json": {"accuracy": 0.962}}, baseline=base)
    assert ok[0].passed
    bad = evaluate_checks(checks=CHECKS[:1], current={"metrics/eval.json": {"accuracy": 0.955}}, baseline=base)
    assert bad[0].failures == ["dropped 0.015 (> 0.01)"]
    assert "-0.0150" in format_table(bad, revision="main")


def test_gate_command_against_a_git_revision(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    params = tiny_params()
    params["gate"]["checks"] = [check.model_dump() for check in CHECKS]
    write_params(tmp_path, params)
    run(["git", "init", "-q", "-b", "main"], tmp_path)
    run(["git", "config", "user.email", "ci@example.invalid"], tmp_path)
    run(["git", "config", "user.name", "trainwell tests"], tmp_path)
    metrics(tmp_path, accuracy=0.97)
    run(["git", "add", "-A"], tmp_path)
    run(["git", "commit", "-q", "-m", "baseline metrics"], tmp_path)

    metrics(tmp_path, accuracy=0.965)  # a small, allowed drop
    assert main(["gate", "--baseline", "main"]) == 0
    assert "gate: 3 checks, all pass" in capsys.readouterr().out

    metrics(tmp_path, accuracy=0.95)  # still above the bar, but 0.02 worse than main
    assert main(["gate", "--baseline", "main"]) == 1
    out = capsys.readouterr().out
    assert "at main" in out and "dropped 0.02" in out
    assert main(["gate"]) == 0  # thresholds alone still hold
    capsys.readouterr()

    assert main(["gate", "--baseline", "no-such-branch"]) == 2  # a usage problem, not a failed check
    assert "not found" in capsys.readouterr().err
    written = tmp_path / "written-by-git"
    assert main(["gate", f"--baseline=--output={written}"]) == 2  # never an option to git
    assert not list(tmp_path.glob("written-by-git*"))
    capsys.readouterr()
    assert main(["-q", "gate", "--baseline", "main"]) == 1
    quiet = capsys.readouterr()
    assert quiet.out == "" and "dropped 0.02" in quiet.err  # -q still says which check failed

    assert main(["gate", "--baseline", "main", "--format", "json"]) == 1
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["baseline"] == 0.97 and rows[0]["passed"] is False
