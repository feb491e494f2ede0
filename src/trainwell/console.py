"""What the commands print, by verbosity: user strings shown as escapes, never obeyed; a closed pipe is not an error."""

from __future__ import annotations

import contextlib
import os
import re
import select
import sys
from collections.abc import Iterator
from typing import BinaryIO, TextIO

QUIET, NORMAL, VERBOSE = 0, 1, 2
_level = NORMAL

# Characters a terminal or a CI log acts on instead of showing, or that hide or reorder text: C0 and
# C1 controls (newline, carriage return, ESC starting a terminal sequence), DEL, the line and
# paragraph separators, every Unicode format character (bidi overrides and isolates, zero-width
# spaces, the byte-order mark, invisible tag characters) except the zero-width joiner and
# non-joiner that scripts need to spell words, and lone surrogates (a file name's undecodable bytes).
_HIDDEN = re.compile(
    "[\x00-\x1f\x7f-\x9f\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b\u200e\u200f"
    "\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\ud800-\udfff"
    "\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0001\U000e0020-\U000e007f]"
)
# GitHub's runner obeys a line that starts with "::" once leading white space is trimmed, and the
# older "##[command]" form anywhere in a line (actions/runner ActionCommand.TryParseV2, TryParse).
_COMMAND_START = re.compile(r"^(\s*):(?=:)")
_OLD_COMMAND = "##["


_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    character = match.group()
    if character in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[character]
    code = ord(character)
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape: the undecodable byte it stands for
        return f"\\x{code - 0xDC00:02x}"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


# A lone surrogate cannot be encoded as UTF-8, so print() of a str holding one raises
# UnicodeEncodeError on a strict UTF-8 stdout. Python gives a file name's undecodable bytes as
# U+DC80..U+DCFF (surrogateescape).
_SURROGATE = re.compile("[\ud800-\udfff]")


def without_surrogates(text: str) -> str:
    """text with each lone surrogate written as shown() writes it (\\xff for an undecodable byte,
    else \\udXXX) and nothing else changed: for output with escapes of its own (workflow commands)."""
    return _SURROGATE.sub(_escape, text)


def shown(text: object) -> str:
    """Any string a user controls (a path, a class or metric name, a value read from a file) as it may
    appear inside a message: one line, with every character a terminal or CI log would act on, hide
    or reorder written as a backslash escape (\\n, \\x1b, \\u202e; an undecodable byte as \\xff), and no
    workflow command it could start.

    The one place such strings are made safe to print; emit() applies the same rules to every line
    it prints, as a second line of defence.
    """
    escaped = _HIDDEN.sub(_escape, str(text))
    return _COMMAND_START.sub(lambda match: match.group(1) + "\\x3a", escaped).replace(_OLD_COMMAND, "##\\x5b")


def json_for_logs(text: str) -> str:
    """JSON text with every "##[" written "##\\u005b": the same data once parsed ("#" occurs only inside
    JSON strings), but no line of it is an old-style workflow command in a CI log. (No line of JSON
    can start with "::": each starts with a bracket, a brace, a quote or a number.)"""
    return text.replace(_OLD_COMMAND, "##\\u005b")


def _safe_lines(message: str) -> str:
    """A message trainwell made, possibly of several lines: each line made safe as shown() makes a string
    (tabs kept), so a user string a caller forgot to pass through shown() still cannot act."""
    return "\n".join("\t".join(shown(part) for part in line.split("\t")) for line in message.split("\n"))


def set_verbosity(level: int) -> None:
    global _level
    _level = level


def verbosity() -> int:
    return _level


def _silence(stream: TextIO | BinaryIO) -> None:
    """The reader of this stream has gone (`| head`, `| true`): from now on its writes go to /dev/null.

    Pointing the descriptor at /dev/null (not closing it) lets whatever is still buffered, and the
    interpreter's own flush at exit, succeed quietly instead of raising BrokenPipeError again.
    """
    try:
        descriptor = stream.fileno()
    except (OSError, ValueError, AttributeError):  # not a real file (a test's capture): nothing to redirect
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, descriptor)
    finally:
        os.close(null)


def _reader_gone(stream: TextIO) -> bool:
    """Whether the stream is a pipe or socket whose reading end has closed (poll says POLLERR)."""
    try:
        poller = select.poll()
        poller.register(stream.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def silence_closed_pipes() -> bool:
    """Silence stdout and stderr where their reader has gone; whether either had (a BrokenPipeError
    from a library's own print is then that, not a bug)."""
    gone = [stream for stream in (sys.stdout, sys.stderr) if _reader_gone(stream)]
    for stream in gone:
        _silence(stream)
    return bool(gone)


class _DropsClosedPipe:
    """A text stream (sys.stdout, sys.stderr) whose writes and flushes, once its reader has gone, are
    dropped instead of raising BrokenPipeError: what libraries print through it too (Keras' epoch
    lines, tqdm's bars, argparse's help) stops quietly, and the command goes on."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            _silence(self._stream)
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            _silence(self._stream)

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)


@contextlib.contextmanager
def closed_pipes_dropped() -> Iterator[None]:
    """Within this block, sys.stdout and sys.stderr drop what they cannot write to a reader that has
    gone (`trainwell gate | true`): the command finishes its work and exits with its own status."""
    saved = sys.stdout, sys.stderr
    wrapped = _DropsClosedPipe(sys.stdout), _DropsClosedPipe(sys.stderr)
    sys.stdout, sys.stderr = wrapped
    try:
        yield
    finally:
        for stream in wrapped:  # what is still buffered (argparse's help is not flushed) meets the pipe here
            stream.flush()
        sys.stdout, sys.stderr = saved


def write_text(text: str, stream: TextIO) -> None:
    """Write text and flush; a closed pipe silences the stream instead of raising. Characters the
    stream cannot encode (a name's undecodable bytes) are shown as backslash escapes."""
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        stream.write(text.encode(encoding, "backslashreplace").decode(encoding))
        stream.flush()
    except BrokenPipeError:
        _silence(stream)


def output(text: str) -> None:
    """Machine-readable output on stdout (JSON, CSV, GitHub annotations): printed whatever the
    verbosity, as it is (it is data, escaped by its own format), and dropped quietly when the reader
    has gone."""
    write_text(text if text.endswith("\n") else text + "\n", sys.stdout)


def output_bytes(data: bytes) -> None:
    """output() for bytes already encoded (file names' odd bytes kept as they were)."""
    try:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    except BrokenPipeError:
        _silence(sys.stdout)


def emit(message: str, stream: TextIO | None = None) -> None:
    """Print a message line by line, each made safe to show (see shown())."""
    write_text(_safe_lines(message) + "\n", stream or sys.stdout)


def say(message: str) -> None:
    """A progress or result line on stdout (hidden by -q)."""
    if _level >= NORMAL:
        emit(message)


def warn(message: str) -> None:
    """A warning on stderr (hidden by -q, which shows errors only)."""
    if _level >= NORMAL:
        emit(message, sys.stderr)


def detail(message: str) -> None:
    """Extra detail on stderr, shown only with -v."""
    if _level >= VERBOSE:
        emit(message, sys.stderr)


def error(message: str) -> None:
    """An error on stderr: always shown."""
    emit(message, sys.stderr)


# TensorFlow's native log lines: TSL's ("2026-01-01 12:00:00.000: W tensorflow/...") and absl's
# ("W0000 00:00:1796... 123 file.cc:390] ..."), which the TFLite converter writes even under
# TF_CPP_MIN_LOG_LEVEL=3, and absl's notice that comes before them.
_NATIVE_LOG_LINE = re.compile(rb"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] |[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] "
                              rb"|WARNING: All log messages before absl::InitializeLog\(\) is called)")


@contextlib.contextmanager
def native_logs_hidden() -> Iterator[None]:
    """Below -v, what native code writes to file descriptor 2 inside this block is held, and only
    the lines that are not TensorFlow's log lines are passed on afterwards. For short calls with no
    progress bar of their own (the TFLite converter): Python's own stderr is held with it."""
    if _level >= VERBOSE:
        yield
        return
    sys.stderr.flush()
    import tempfile

    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [line for line in held.read().splitlines(keepends=True) if not _NATIVE_LOG_LINE.match(line)]
            if kept:
                write_text(b"".join(kept).decode("utf-8", "backslashreplace"), sys.stderr)
