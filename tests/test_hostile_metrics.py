"""`trainwell gate` on hostile metrics: only a finite number passes; an unreadable metrics file is exit 2 naming it."""

from __future__ import annotations

import json
import math
import os
import random

import pytest

from tests.helpers import run, tiny_params, write_params
from trainwell.cli import main
from trainwell.params import GateCheck
from trainwell.reports.gate import evaluate_checks, read_current

METRICS = "metrics/eval.json"


def _non_finite_texts(seed: int = 0) -> list[str]:
    """JSON texts of numbers no float holds or that are not finite, as Python's json reads them:
    the literals, exponents past float's range, integers of 309 to 4300 digits, either sign."""
    rng = random.Random(seed)
    texts = ["Infinity", "-Infinity", "NaN", "1e999", "-1e999", "1E400", "-2.5e+9999", "123456789e999"]
    for _ in range(12):
        digits = rng.randint(309, 4300)
        number = str(rng.randint(1, 9)) + "".join(rng.choice("0123456789") for _ in range(digits - 1))
        texts.append(rng.choice(["", "-"]) + number)
    return texts


NOT_NUMBERS = ['"0.99"', '"Infinity"', "true", "false", "null", "[0.99]", '{"value": 0.99}', '""']


def _write(folder, text: str | bytes) -> None:
    path = folder / METRICS
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())


@pytest.mark.parametrize("rule", [{"min": 0.9}, {"max": 0.1}, {"min": -1e300, "max": 1e300}])
def test_no_value_but_a_finite_number_passes_any_rule(tmp_path, rule):
    """Generated non-finite numbers and values of other JSON types, each read from a real file:
    every check fails, naming why; the same rule passes a finite number inside it."""
    check = GateCheck(metric=f"{METRICS}:accuracy", **rule)
    for text in [*_non_finite_texts(), *NOT_NUMBERS]:
        _write(tmp_path, f'{{"accuracy": {text}}}')
        rows = evaluate_checks(checks=[check], current={METRICS: read_current(str(tmp_path / METRICS))},
                               baseline=None)
        assert not rows[0].passed, text
        assert rows[0].value is None and any("not a finite number" in failure or "not a number" in failure
                                             for failure in rows[0].failures), (text, rows[0].failures)
    finite = 0.5 if "min" not in rule or rule["min"] < 0 else 0.95
    finite = 0.05 if "max" in rule and rule["max"] < 1 else finite
    _write(tmp_path, json.dumps({"accuracy": finite}))
    assert evaluate_checks(checks=[check], current={METRICS: read_current(str(tmp_path / METRICS))},
                           baseline=None)[0].passed


def test_a_baseline_that_is_not_a_finite_number_fails_the_comparison():
    """`-Infinity` as the baseline would pass any max_drop (and NaN any comparison)."""
    check = GateCheck(metric=f"{METRICS}:accuracy", min=0.5, max_drop=0.01, max_rise=0.01)
    for text in [*_non_finite_texts(seed=1), *NOT_NUMBERS]:
        baseline = {METRICS: json.loads(f'{{"accuracy": {text}}}')}
        rows = evaluate_checks(checks=[check], current={METRICS: {"accuracy": 0.9}}, baseline=baseline)
        assert not rows[0].passed and "baseline value" in rows[0].failures[0], (text, rows[0].failures)
    rows = evaluate_checks(checks=[check], current={METRICS: {"accuracy": 0.9}}, baseline={METRICS: {}})
    assert rows[0].passed  # no baseline value: nothing to compare, as before


def _malformed(seed: int = 0) -> list[bytes]:
    """Generated files that are not a JSON document: cut-off documents, bytes that are not UTF-8,
    nesting past Python's recursion limit, integers past its 4300-digit conversion limit."""
    rng = random.Random(seed)
    document = json.dumps({"accuracy": 0.97, "per_class": {"cat": {"f1": 0.9}}, "list": [1, 2, 3]}).encode()
    cases = [document[:cut] for cut in sorted(rng.sample(range(1, len(document)), 8))]
    cases += [bytes(rng.randrange(128, 256) for _ in range(rng.randint(1, 40))) for _ in range(4)]
    cases += [b'{"accuracy": 0.9, "name": "caf\xe9"}', b"\xff\xfe" + '{"accuracy": 1}'.encode("utf-16-le")]
    cases += [b"[" * depth + b"]" * depth for depth in (10_000, 100_000)]
    cases += [b'{"accuracy": {"a": ' * 50_000 + b"1" + b"}" * 50_001]
    cases += [b'{"accuracy": ' + b"9" * digits + b"}" for digits in (4301, 5000, 100_000)]
    cases += [b"", b"   ", b"{} {}", b"{'accuracy': 1}", b'{"accuracy": 0.9,}']
    return cases


def _gate(tmp_path, capsys, checks: list[dict], *extra: str) -> tuple[int, str]:
    params = tiny_params()
    params["gate"]["checks"] = checks
    write_params(tmp_path, params)
    code = main(["gate", *extra])
    captured = capsys.readouterr()
    return code, captured.err + captured.out


def test_a_malformed_metrics_file_is_exit_2_naming_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    checks = [{"metric": f"{METRICS}:accuracy", "min": 0.5}]
    for data in _malformed():
        _write(tmp_path, data)
        code, said = _gate(tmp_path, capsys, checks)
        assert code == 2, (data[:60], said)
        assert METRICS in said and "internal error" not in said and "Traceback" not in said, said


def test_a_metrics_path_that_is_not_a_regular_file_is_exit_2_never_read(tmp_path, monkeypatch, capsys):
    """A folder, a FIFO (reading one blocks for ever), /dev/zero (never ends), a link to either
    and a sparse 5 GB file: each refused from what the open file is, before a byte is read."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "folder.json").mkdir()
    os.mkfifo(tmp_path / "metrics" / "fifo.json")
    (tmp_path / "metrics" / "zero.json").symlink_to("/dev/zero")
    (tmp_path / "metrics" / "to_fifo.json").symlink_to(tmp_path / "metrics" / "fifo.json")
    (tmp_path / "metrics" / "sparse.json").write_bytes(b'{"accuracy": 1}')
    os.truncate(tmp_path / "metrics" / "sparse.json", 5 << 30)
    for name, reason in [("folder.json", "directory"), ("fifo.json", "FIFO"), ("zero.json", "device"),
                         ("to_fifo.json", "FIFO"), ("sparse.json", "bytes, more than"), ("/dev/zero", "device")]:
        metric = name if name.startswith("/") else f"metrics/{name}"
        code, said = _gate(tmp_path, capsys, [{"metric": f"{metric}:accuracy", "min": 0.5}])
        assert code == 2 and metric in said and reason in said, (name, said)
    code, said = _gate(tmp_path, capsys, [{"metric": "metrics/absent.json:accuracy", "min": 0.5}])
    assert code == 1 and "missing from metrics/absent.json" in said  # not there: run the pipeline


def test_the_gate_command_fails_on_non_finite_values_and_passes_finite_ones(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    checks = [{"metric": f"{METRICS}:accuracy", "min": 0.9}, {"metric": f"{METRICS}:loss", "max": 0.5}]
    for accuracy, loss in [("Infinity", "0.1"), ("0.95", "-Infinity"), ("1e999", "0.1"), ("0.95", "-1e999"),
                           ("NaN", "0.1"), ("9" * 400, "0.1"), ("0.95", "-" + "9" * 400)]:
        _write(tmp_path, f'{{"accuracy": {accuracy}, "loss": {loss}}}')
        code, said = _gate(tmp_path, capsys, checks, "--format", "json")
        assert code == 1, (accuracy, loss, said)
        rows = json.loads(said)
        assert [row["passed"] for row in rows].count(False) == 1 and all(
            row["value"] is None or math.isfinite(row["value"]) for row in rows)
    _write(tmp_path, '{"accuracy": 0.95, "loss": 0.1}')
    assert _gate(tmp_path, capsys, checks)[0] == 0


def test_a_malformed_or_huge_baseline_at_a_revision_is_exit_2_naming_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run(["git", "init", "-q", "-b", "main"], tmp_path)
    run(["git", "config", "user.email", "ci@example.invalid"], tmp_path)
    run(["git", "config", "user.name", "trainwell tests"], tmp_path)
    checks = [{"metric": f"{METRICS}:accuracy", "min": 0.5, "max_drop": 0.01}]
    for index, data in enumerate([*_malformed(seed=2)[::3], b" " * (17 << 20)]):
        _write(tmp_path, data)
        run(["git", "add", "-A"], tmp_path)
        run(["git", "commit", "-q", "--allow-empty", "-m", f"baseline {index}"], tmp_path)
        _write(tmp_path, '{"accuracy": 0.95}')
        code, said = _gate(tmp_path, capsys, checks, "--baseline", "main")
        assert code == 2 and METRICS in said and "at git revision 'main'" in said, (data[:60], said)
    _write(tmp_path, '{"accuracy": -Infinity}')
    run(["git", "add", "-A"], tmp_path)
    run(["git", "commit", "-q", "-m", "a baseline of -Infinity"], tmp_path)
    _write(tmp_path, '{"accuracy": 0.95}')
    code, said = _gate(tmp_path, capsys, checks, "--baseline", "main")
    assert code == 1 and "baseline value" in said
