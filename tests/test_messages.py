"""A user string in a message is shown, never obeyed: no newline, control, bidi or workflow command gets through."""

from __future__ import annotations

import random
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
import yaml

from tests.helpers import tiny_params, write_params
from trainwell.cli import main
from trainwell.console import _HIDDEN, json_for_logs, shown

# What a name from a pull request may hold to forge a line of a CI log or hide what it says.
PIECES = ["\n", "\r", "\r\n", "\x1b[31m", "\x1b]0;title\x07", "\x00", "\x7f", "\x85", "\u2028", "\u2029", "\u202e",
          "\u2066", "\u200b", "\ufeff", "\U000e0041", "\udcff", "\ud800", "::", "::error file=x::injected",
          "::add-mask::secret", "##[error]forged", "%0A", "%25", "%", "\t", " ", "  ::warning::x", "::",
          "é", "\u200d", "👩\u200d👩\u200d👧", "name", "-", ",", ":"]


def hostile_strings(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    made = {"\n::error file=x::injected", "nope\n::error file=x::injected", "::error::start", "##[group]x"}
    while len(made) < count:
        made.add("".join(rng.choices(PIECES, k=rng.randint(1, 6))))
    return sorted(made)


def obeyed(line: str) -> bool:
    """Whether GitHub's runner would read this line as a workflow command (actions/runner ActionCommand)."""
    return line.lstrip().startswith("::") or "##[" in line


def test_shown_is_one_inert_line_whatever_the_string():
    for text in hostile_strings(400):
        result = shown(text)
        assert "\n" not in result and "\r" not in result and not obeyed(result), repr(result)
        assert all(unicodedata.category(character) not in ("Cc", "Cs", "Zl", "Zp") for character in result)
        assert all(unicodedata.category(character) != "Cf" or character in "\u200c\u200d" for character in result)
        result.encode("utf-8")  # printable on any UTF-8 stream: no lone surrogate left
        assert shown(result) == result  # escapes are plain ASCII: showing twice changes nothing


def test_every_hidden_character_class_is_escaped():
    """The escaped set, written out by hand in console.py, covers every control, format (but the
    joiners), separator and surrogate code point of this Python's Unicode database."""
    wanted = [chr(code) for code in range(0x110000)
              if unicodedata.category(chr(code)) in ("Cc", "Cf", "Zl", "Zp", "Cs") and code not in (0x200C, 0x200D)]
    assert [character for character in wanted if not _HIDDEN.fullmatch(character)] == []


def test_json_on_stdout_cannot_hold_an_old_style_command():
    import json

    for text in hostile_strings(100, seed=1):
        document = json.dumps({"path": text, text: [text]}, indent=2)
        escaped = json_for_logs(document)
        assert json.loads(escaped) == json.loads(document) and "##[" not in escaped
        assert not any(line.lstrip().startswith("::") for line in escaped.splitlines())


def output_lines(capsys: pytest.CaptureFixture) -> list[str]:
    captured = capsys.readouterr()
    return captured.out.splitlines() + captured.err.splitlines()


def test_a_path_on_the_command_line_or_in_params_never_starts_a_line(workdir, capsys):
    """`trainwell audit $'nope\\n::error file=x::injected'` printed a line GitHub Actions runs; the same
    through --params, an unknown argument, a data.dir, and a key named in a params error."""
    for name in hostile_strings(8, seed=2):
        write_params(workdir, tiny_params())
        cases = [["audit", name], ["audit", "--params", name], ["audit", ".", name], ["predict", name],
                 ["init", name], ["gate", "--baseline", f"-{name}"]]
        for arguments in cases:
            try:
                status = main(arguments)
            except SystemExit as done:  # argparse's usage errors
                status = done.code
            lines = output_lines(capsys)
            assert status == 2, (arguments, lines)
            assert not any(obeyed(line) for line in lines), (arguments, lines)
            assert len([line for line in lines if line.startswith("trainwell")]) == 1, lines  # one line of error
        for section, key, value in (("data", "dir", name), ("train", name, 1), ("train", "epochs", name)):
            params = tiny_params()
            params[section][key] = value
            write_params(workdir, params)
            for command in (["audit"], ["split"]):
                assert main(command) in (1, 2)  # a params error, or a data.dir that is no folder
                lines = output_lines(capsys)
                assert not any(obeyed(line) for line in lines), lines
                # The error, then one indented line per problem in params: every line is trainwell's own.
                assert lines[0].startswith("trainwell") and all(line.startswith("  ") for line in lines[1:]), lines


def test_the_gate_prints_metric_names_as_escapes(workdir, capsys):
    """A metric name the gate prints on stdout once forged a workflow command there."""
    names = hostile_strings(20, seed=3)
    params = tiny_params()
    params["gate"]["checks"] = [{"metric": f"metrics/eval.json:{name}", "min": 0.5} for name in names] + [
        # A metrics file name no file can have (a NUL) is a usage error of its own, tested below.
        {"metric": f"{name}.json:accuracy", "max": 1} for name in [name for name in names if "\x00" not in name][:5]]
    write_params(workdir, params)
    Path(workdir / "metrics").mkdir()
    (workdir / "metrics" / "eval.json").write_text('{"accuracy": 0.9}')
    for output_format in ("text", "json"):
        assert main(["gate", "--format", output_format]) == 1
        lines = output_lines(capsys)
        assert not any(obeyed(line) for line in lines), lines
        if output_format == "text":  # a header, a rule, one row per check, the verdict
            assert len(lines) == 2 + len(params["gate"]["checks"]) + 1, lines
    params["gate"]["checks"] = [{"metric": "x\x00\n::error::forged.json:accuracy", "max": 1}]
    write_params(workdir, params)
    assert main(["gate"]) == 2
    lines = output_lines(capsys)
    assert len(lines) == 1 and not obeyed(lines[0]) and "cannot be read as JSON" in lines[0], lines


def test_init_in_a_folder_named_to_forge_a_command(tmp_path):
    """init prints the folder it set up: a name with a newline and '::' stays inside its line."""
    project = tmp_path / "x\n::error title=INJECTED::pwned"
    project.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    done = subprocess.run([sys.executable, "-m", "trainwell", "init", str(project)], cwd=tmp_path,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines() + done.stderr.splitlines()
    assert not any(obeyed(line) for line in lines) and "x\\n::error title=INJECTED::pwned/dvc.yaml" in done.stdout
    assert yaml.safe_load((project / "params.yaml").read_text())["data"]["dir"] == "data/demo"
