"""`--format github`: hostile file names (a pull request picks them) cannot forge or bend workflow commands.

Each line is read back the way the Actions runner reads it (ActionCommand.TryParseV2 in
actions/runner): a command is a stdout line (the runner splits on LF, CR and CRLF) that starts
with `::`; the first `::` after that ends the property list; properties are split on `,` and
then on the first `=`; values are unescaped with UnescapeProperty, the message with UnescapeData.
"""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

import pytest

from tests import faults
from trainwell.audit.report import AuditReport, format_github, format_text
from trainwell.cli import main
from trainwell.kinds import Issue

FRAGMENTS = ["\n", "\r", "::error ", "%", "%0A", ",", ":", "title=", "line=99", "::", "\u2028", "#",
             "%25", "%2C", "%3A", "%0D", "=", " ", "é", "a"]
BRIEF_NAMES = ["y\n::error title=INJECTED::pwned", "p,title=FAKE,line=99"]
LEVELS = {"error": "error", "warning": "warning", "info": "notice"}

# The runner's escape tables, in the order its Unescape* methods apply them.
_PROPERTY_ESCAPES = [("\r", "%0D"), ("\n", "%0A"), (":", "%3A"), (",", "%2C"), ("%", "%25")]
_DATA_ESCAPES = [("\r", "%0D"), ("\n", "%0A"), ("%", "%25")]


def hostile_names(count: int, seed: int) -> list[str]:
    """The brief's two names plus `count` random joins of FRAGMENTS, fixed by `seed`, all distinct."""
    rng = random.Random(seed)
    names = list(BRIEF_NAMES)
    while len(names) < count + len(BRIEF_NAMES):
        name = "".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(1, 8)))
        if name not in names:
            names.append(name)
    return names


def _unescape(text: str, table: list[tuple[str, str]]) -> str:
    for token, replacement in table:
        text = text.replace(replacement, token)
    return text


def parse_command(line: str) -> tuple[str, str, dict[str, str], str]:
    """(command, raw property list, properties, message) of one line, read as the runner reads it."""
    message = line.lstrip()
    assert message.startswith("::"), line
    end = message.find("::", 2)
    assert end >= 0, line
    info = message[2:end]
    command, _, properties_text = info.partition(" ")
    properties: dict[str, str] = {}
    for pair in properties_text.strip().split(","):
        key, _, value = pair.partition("=")
        if key and value:  # the runner drops a pair with an empty key or value
            properties[key] = _unescape(value, _PROPERTY_ESCAPES)
    return command, info, properties, _unescape(message[end + 2:], _DATA_ESCAPES)


def output_lines(out: str) -> list[str]:
    """print()'s text as the runner's lines; a CR would start a new line for it too."""
    assert "\r" not in out
    assert out.endswith("\n")
    return out[:-1].split("\n")


def check_line(line: str) -> tuple[str, dict[str, str], str]:
    """Assert the line is one well-formed annotation; return its command, properties and message."""
    assert line.startswith(("::error ", "::warning ", "::notice ")), line
    command, info, properties, message = parse_command(line)
    assert ":" not in info, line  # so the first `::` the runner finds is the one we wrote
    assert set(properties) == {"file", "title"}, line
    return command, properties, message


def expected_file(root: str, path: str) -> str:
    joined = f"{root.rstrip('/')}/{path}" if "://" in root else (Path(root) / path).as_posix()
    # Undecodable bytes are shown as \xNN (what os.fsencode + backslashreplace gives on UTF-8 systems).
    return os.fsencode(joined).decode("utf-8", "backslashreplace") if "://" not in root else joined


def report_for(root: str, issues: list[Issue]) -> AuditReport:
    return AuditReport(root=root, classes=["cls"], files_scanned=len(issues), issues=issues,
                       quarantined=[], class_counts={"cls": 0}, violations=[])


@pytest.mark.parametrize("root", ["/work/pr", "/work/pr,title=X\n::error ::y%0A", "s3://bucket/pr,title=X:y%"])
def test_hostile_paths_kinds_and_details_round_trip(root):
    rng = random.Random(1)
    names = hostile_names(300, seed=0)
    issues = []
    for index, name in enumerate(names):
        severity = ("error", "warning", "info")[index % 3]
        # Kinds are ours, but every property is escaped: give them hostile middles too. (The
        # runner trims the property list and ignores a value starting with `=`, so keep the ends plain.)
        kind = f"k{rng.choice(names)}k"
        detail = rng.choice(names) + " " + rng.choice(names)
        issues.append(Issue(path=f"{rng.choice(names).replace('/', '')}/{name}.png", kind=kind,
                            severity=severity, detail=detail))

    lines = output_lines(format_github(report_for(root, issues)) + "\n")

    assert len(lines) == len(issues)
    for line, issue in zip(lines, issues, strict=True):
        command, properties, message = check_line(line)
        assert command == LEVELS[issue.severity]
        assert properties == {"file": expected_file(root, issue.path), "title": issue.kind}
        assert message == issue.detail


def test_the_briefs_two_names_are_escaped_exactly():
    issues = [Issue(path=f"cls/{name}.png", kind="truncated", severity="error", detail="d") for name in BRIEF_NAMES]
    assert format_github(report_for("/r", issues)).split("\n") == [
        "::error file=/r/cls/y%0A%3A%3Aerror title=INJECTED%3A%3Apwned.png,title=truncated::d",
        "::error file=/r/cls/p%2Ctitle=FAKE%2Cline=99.png,title=truncated::d",
    ]


def test_undecodable_names_print_as_utf8():
    undecodable = os.fsdecode(b"bad\xff\xfe\n::error x::")  # surrogate escapes, as os.listdir gives them
    issues = [
        Issue(path=f"cls/{undecodable}.jpg", kind="truncated", severity="error", detail=f"see {undecodable}"),
        Issue(path="cls/pair\ud83d\ude00.jpg", kind="truncated", severity="error", detail="lone surrogates"),
        Issue(path="cls/fine é \u2028 😀.jpg", kind="truncated", severity="error", detail="valid text"),
    ]
    report = report_for("/r", issues)
    text = format_github(report)
    text.encode("utf-8")  # strict: what print() does on a UTF-8 stdout
    format_text(report).encode("utf-8")

    files = [check_line(line)[1]["file"] for line in output_lines(text + "\n")]
    assert files == ["/r/cls/bad\\xff\\xfe\n::error x::.jpg", "/r/cls/pair\\ud83d\\ude00.jpg",
                     "/r/cls/fine é \u2028 😀.jpg"]
    assert check_line(text.split("\n")[0])[2] == "see bad\\xff\\xfe\n::error x::"


def audit(folder: Path, capsys, *extra: str) -> str:
    assert main(["audit", str(folder), *extra]) == 1  # truncated files violate the policy; 3 would be a crash
    return capsys.readouterr().out


def make_dataset(folder: Path, names: list[str]) -> dict[str, Path]:
    """A truncated JPEG under each hostile name, plus a valid class; {expected file property: path}."""
    written = {}
    for index, name in enumerate(names):
        path = faults.write(folder / "cls" / f"{name}-{index}.jpg", faults.truncated_jpeg(seed=index))
        written[expected_file(str(folder), path.relative_to(folder).as_posix())] = path
    for index in range(3):
        faults.write(folder / "good" / f"{index}.jpg", faults.jpeg_bytes(seed=100 + index))
    return written


def check_real_audit(folder: Path, written: dict[str, Path], capsys) -> None:
    lines = output_lines(audit(folder, capsys, "--format", "github"))
    findings = json.loads(audit(folder, capsys, "--format", "json"))["issues"]
    assert len(lines) == len(findings)  # exactly one line per finding
    truncated = [check_line(line)[1]["file"] for line in lines if check_line(line)[1]["title"] == "truncated"]
    assert sorted(truncated) == sorted(written)


def test_real_audit_of_hostile_names_on_disk(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "pr,title=X:y%0A"
    check_real_audit(folder, make_dataset(folder, hostile_names(60, seed=2)), capsys)


def test_real_audit_of_undecodable_names_on_disk(tmp_path, capsys, monkeypatch):
    if sys.getfilesystemencoding().lower().replace("-", "") != "utf8":
        pytest.skip("the \\xNN form assumes a UTF-8 file system encoding")
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "data"
    names = [os.fsdecode(b"bad\xff" + os.fsencode(name) + b"\xfe") for name in hostile_names(10, seed=3)]
    try:
        written = make_dataset(folder, names)
    except OSError:  # e.g. macOS file systems refuse names that are not UTF-8
        pytest.skip("this file system refuses names that are not valid UTF-8")
    # capsys's stdout is strict UTF-8, so an unprintable str here would crash the command.
    check_real_audit(folder, written, capsys)
    assert "bad\\xff" in audit(folder, capsys)  # the text report prints too
