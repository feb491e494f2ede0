"""Writing outputs: whole or not at all, and never over an input of the run, a dataset or through a link out of the project."""

from __future__ import annotations

import contextlib
import csv
import errno
import functools
import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import IO, ParamSpec, TypeVar

import yaml

from trainwell import storage
from trainwell.console import shown
from trainwell.errors import DataError, TrainwellError, UsageError
from trainwell.params import Params

# mkstemp creates files readable by their owner only; outputs get the mode open() would give them.
# Read once at import, while the process is still single-threaded (os.umask has no getter).
_UMASK = os.umask(0)
os.umask(_UMASK)


class OutputGuard:
    """What one run of a command may not write: its inputs (compared by resolved path and by inode,
    so a hard link or a link to one is the same file; an input folder with everything in it), the
    datasets it reads (anything at or under them), a link (a writer replaces the file at a name: it
    would replace the user's link, not write where it points), anything that is not a regular file,
    and anything reached through a link out of the project."""

    def __init__(self, project: str | Path = ".") -> None:
        self.project = os.path.abspath(project)
        self.inputs: list[str] = []
        self.datasets: list[str] = []
        # Regular files a run reads by the thousand (predict's images): compared by inode only, from
        # a set made the first time a target exists (a new file can be none of them).
        self.files: list[str] = []
        self._file_identities: set[tuple[int, int]] | None = None
        # The declared paths resolved through their links, each the first time a check needs it (a
        # build writes a file per shard): protect_inputs clears it. The path being written is
        # resolved afresh on every check.
        self._resolved: dict[str, str] = {}

    def _real(self, declared: str) -> str:
        """os.path.realpath of a declared input, dataset or project folder, resolved once."""
        real = self._resolved.get(declared)
        if real is None:
            real = self._resolved[declared] = os.path.realpath(declared)
        return real

    def forget_resolved(self) -> None:
        """Drop what was resolved or stat'ed from the declared paths (they changed)."""
        self._resolved.clear()
        self._file_identities = None

    def check(self, path: str | Path, *, folder: bool = False, label: str = "") -> None:
        """Raise UsageError naming `path` (after `label`, such as "--output") and the rule when trainwell
        may not write it (or, for a generated `folder`, replace it); object-store URLs pass."""
        if storage.is_remote(path):
            return
        given = os.fspath(path)
        reason = (_unwritable_kind(given, folder=folder) or self._leaves_project(given)
                  or self._in_dataset(given, folder) or self._is_input(given, folder))
        if reason:
            raise UsageError(f"trainwell will not write {label + ' ' if label else ''}'{shown(given)}': {reason}")

    def _leaves_project(self, given: str) -> str | None:
        real = os.path.realpath(given)
        if _inside(os.path.abspath(given), self.project) and not _inside(real, self._real(self.project)):
            return (f"it leads out of the project through a link (to '{shown(real)}'), and trainwell never writes "
                    "through a link out of the project. Name that place itself if you mean to write there")
        return None

    def _in_dataset(self, given: str, folder: bool) -> str | None:
        lexical, real = os.path.abspath(given), os.path.realpath(given)
        for dataset in self.datasets:
            if _inside(real, self._real(dataset)) or _inside(lexical, os.path.abspath(dataset)):
                return f"it is in the dataset '{shown(dataset)}', which this run reads. Name a place outside it"
            if folder and _inside(self._real(dataset), real):
                return f"it holds the dataset '{shown(dataset)}', which this run reads. Name another folder"
        return None

    def _is_input(self, given: str, folder: bool) -> str | None:
        """Why `given` is (or is in, or for a folder holds) something this run reads, or None."""
        real = os.path.realpath(given)
        try:
            status: os.stat_result | None = os.stat(real)
        except OSError:  # nothing there yet: compared by where it is only
            status = None
        for source in self.inputs:
            source_real = self._real(source)
            if _inside(real, source_real) or (status is not None and _same_file(status, source)):
                return (f"it is '{shown(source)}'{'' if real == source_real else ' (or in it)'}, an input of this "
                        "run, and trainwell never writes over what it reads. Name another file")
            if folder and _inside(source_real, real):
                return f"it holds '{shown(source)}', an input of this run. Name another folder"
        if status is not None and self.files and (status.st_dev, status.st_ino) in self._identities():
            return "it is one of the files this run reads, and trainwell never writes over what it reads. Name another file"
        return None

    def _identities(self) -> set[tuple[int, int]]:
        if self._file_identities is None:
            self._file_identities = set()
            for path in self.files:
                with contextlib.suppress(OSError):
                    status = os.stat(path)
                    self._file_identities.add((status.st_dev, status.st_ino))
        return self._file_identities


def _unwritable_kind(given: str, *, folder: bool) -> str | None:
    """Why what is at `given` is not something a writer may replace (a link, a FIFO, a device), or None."""
    if os.path.islink(given):
        return ("it is a link, which trainwell would replace (it never writes through one). Name the file it "
                "points to, or a new file")
    if os.path.exists(given) and not (os.path.isdir(given) if folder else os.path.isfile(given)):
        return (f"it exists and is not a {'folder' if folder else 'regular file'} (a "
                f"{'file' if folder else 'folder'}, FIFO, device or socket), which would be replaced. Name a new place")
    return None


def _same_file(status: os.stat_result, source: str) -> bool:
    try:
        return os.path.samestat(status, os.stat(source))
    except OSError:
        return False


def _inside(path: str, folder: str) -> bool:
    """Whether `path` is `folder` or below it (both absolute and normalised the same way)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


_guard: OutputGuard | None = None  # the running command's; None outside a command (library use)
Parameters = ParamSpec("Parameters")
Result = TypeVar("Result")


def guarded(main: Callable[Parameters, Result]) -> Callable[Parameters, Result]:
    """Decorate a command's main: its writers start with a fresh guard, dropped when it returns, to
    which the command declares what it reads (protect_inputs)."""

    @functools.wraps(main)
    def run(*args: Parameters.args, **kwargs: Parameters.kwargs) -> Result:
        global _guard
        outer, _guard = _guard, OutputGuard()
        try:
            return main(*args, **kwargs)
        finally:
            _guard = outer

    return run


def protect_inputs(*, inputs: Iterable[str | Path | None] = (), datasets: Iterable[str | Path | None] = (),
                   files: Iterable[str] = (), project: str | Path | None = None) -> OutputGuard:
    """Declare what the running command reads: `inputs` (files or folders), `datasets` (folders
    nothing may be written in), `files` (regular files by the thousand, compared by inode), and its
    project folder when that is not the current one; every writer refuses them until it returns."""
    if _guard is None:
        raise RuntimeError("protect_inputs() is for a command's main, decorated with outputs.guarded")
    if project is not None:
        _guard.project = os.path.abspath(project)
    _guard.inputs += [os.fspath(path) for path in inputs if path and not storage.is_remote(path)]
    _guard.datasets += [os.fspath(path) for path in datasets if path and not storage.is_remote(path)]
    _guard.files += [path for path in files if not storage.is_remote(path)]
    _guard.forget_resolved()
    return _guard


def guard_stage(stage: str, *, params: Params, params_file: str | Path) -> OutputGuard:
    """For a pipeline stage, before any work: protect_inputs with its params file, the dependencies
    the dvc.yaml template gives it and data.dir as the dataset (unless the stage makes it: demo_data);
    then check_output on every output the template gives it. What a stage reads and writes is what
    the pipeline says, written down once; a params `paths:` entry naming an input is refused at once."""
    values = params.model_dump(mode="json")

    def resolve(entry: str | dict) -> str:
        # "${paths.cache_dir}" -> params.paths.cache_dir; the template uses no other interpolation.
        name = next(iter(entry)) if isinstance(entry, dict) else entry  # an out with options: {path: {...}}
        return re.sub(r"\$\{([a-z_.]+)\}", lambda match: str(functools.reduce(
            lambda node, key: node[key], match.group(1).split("."), values)), name)

    template = resources.files("trainwell").joinpath("templates", "dvc.yaml.in").read_text(encoding="utf-8")
    declared = yaml.safe_load(template)["stages"][stage]
    dataset = params.data.dir
    made = {resolve(entry): _first_key(entry) for key in ("outs", "metrics", "plots") for entry in declared.get(key, [])}
    read = [path for path in map(resolve, declared.get("deps", [])) if path != dataset]
    guard = protect_inputs(inputs=[params_file, *read], datasets=[] if dataset in made else [dataset])
    for path, key in made.items():
        guard.check(path, folder=os.path.isdir(path), label=f"{key} =")
    return guard


def _first_key(entry: str | dict) -> str:
    """The params key an output of the dvc.yaml template comes from: ${paths.model} -> paths.model."""
    found = re.search(r"\$\{([a-z_.]+)\}", next(iter(entry)) if isinstance(entry, dict) else entry)
    return found.group(1) if found else "dvc.yaml"


def check_output(path: str | Path, *, folder: bool = False, label: str = "") -> None:
    """Refuse (UsageError) a place trainwell may not write: see OutputGuard. Outside a command only
    the rules about links and special files apply, with the current folder as the project. A
    command checks what the user named before any work (`label` says which option named it);
    every writer checks again when it writes."""
    (_guard or OutputGuard()).check(path, folder=folder, label=label)


def write_bytes_atomically(path: str | Path, data: bytes) -> None:
    """Write a whole file or nothing: a temporary file in the same folder, renamed into place.

    A local path gets its parent folders created; an object-store URL is written by one PUT,
    which is whole or absent already.
    """
    if storage.is_remote(path):
        storage.write_bytes(path, data)
        return
    write_atomically(path, lambda stream: stream.write(data))


# mkstemp's temporary beside a target: "." + the target's name + "." + 8 random characters + ".tmp".
TEMPORARY_NAME_EXTRA = len("..") + 8 + len(".tmp")


def write_atomically(path: str | Path, write: Callable[[IO[bytes]], object], *,
                     move: Callable[[str, Path], object] = os.replace) -> None:
    """write_bytes_atomically for a local file whose bytes `write` streams into the temporary file
    (np.save of a large array then needs no second copy in memory); `move` puts it in place.

    A failed write or move removes the temporary file, leaves the target as it was, and is an
    error naming the target (write_error).
    """
    target = Path(path)
    check_output(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise write_error(target, exc) from None
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
        os.chmod(temporary, 0o666 & ~_UMASK)
        move(temporary, target)
    except BaseException as exc:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise write_error(target, exc) from None
        raise


def write_error(path: Path, exc: OSError) -> TrainwellError:
    """A failed write as an error that names the file: a full disk (1), or a path that cannot be a file (2)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DataError(f"no space left on the device writing '{path}'; nothing was left half-written there. "
                         "Free some space and run the stage again")
    return UsageError(f"could not write '{path}': {exc.strerror or exc}; check that the path names a file in a "
                      "folder you can write to")


def write_text_atomically(path: str | Path, text: str) -> None:
    """Text (an HTML page) as UTF-8, whole or not at all; characters a file name's odd bytes left
    unencodable are written as backslash escapes."""
    write_bytes_atomically(path, text.encode("utf-8", "backslashreplace"))


def write_json(path: str | Path, payload: Mapping[str, object] | list) -> None:
    """Write pretty JSON (DVC metrics files are read by people too), whole or not at all;
    object-store URLs work too (the build cache's manifest). ASCII-only: a path's odd bytes
    travel as \\u escapes and come back as the same string."""
    write_bytes_atomically(path, (json.dumps(payload, indent=2) + "\n").encode())


def read_rows(path: str | Path, *, columns: list[str]) -> list[dict[str, str]]:
    """Rows of a CSV written by write_rows; a missing file reads as no rows. A file without the
    expected columns is an error naming it (someone else's file, or an older format)."""
    path = Path(path)
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8", errors="surrogateescape") as handle:
        reader = csv.DictReader(handle)
        missing = [name for name in columns if name not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"'{path}' has no column(s) {missing}; it was not written by this trainwell. "
                            "Re-run the stage that writes it (dvc repro)")
        return [{name: row[name] for name in columns} for row in reader]


# File names are data: Linux allows any bytes but '/' and NUL, which Python hands over as
# surrogate escapes. Files that list paths keep those bytes as they were (never a crash, never
# a different name), and use quoting formats (CSV, JSON), never one name per bare line.
PATH_ENCODING = {"encoding": "utf-8", "errors": "surrogateescape"}


def clear_generated_dir(path: str | Path, *, marker: str) -> None:
    """Empty a folder a stage generates, but only if that stage made it (its marker file is there).

    A folder without the marker may hold the user's own files: refuse instead of deleting them.
    """
    path = Path(path)
    check_output(path, folder=True)
    if not path.exists():
        return
    clear_generated_dir_check(path, marker=marker)
    shutil.rmtree(path)


def clear_generated_dir_check(path: Path, *, marker: str) -> None:
    """Raise unless `path` is a folder an earlier run of ours made (its marker file is there) or empty."""
    if not path.is_dir() or (any(path.iterdir()) and not (path / marker).exists()):
        raise DataError(
            f"'{path}' exists and was not generated by trainwell (no {marker} inside); refusing to overwrite it. "
            "Move it away or point the path in params.yaml `paths:` somewhere else"
        )


def fresh_staging_dir(path: str | Path, *, marker: str) -> Path:
    """An empty staging folder (staging_dir) in which to build the generated folder `path`, after
    checking that trainwell may replace `path` (check_output, and clear_generated_dir_check)."""
    final = Path(path)
    check_output(final, folder=True)
    if final.exists():
        clear_generated_dir_check(final, marker=marker)
    staging = staging_dir(final)
    shutil.rmtree(staging, ignore_errors=True)  # only trainwell writes there (a killed run's leftovers)
    return staging


def staging_dir(path: str | Path) -> Path:
    """Where a generated folder is built before it replaces `path` whole: a hidden sibling that only
    trainwell ever writes, so whatever a killed run left there may be deleted by the next."""
    final = Path(path)
    return final.with_name(f".{final.name}.building")


def replace_generated_dir(staging: Path, final: Path, *, marker: str) -> None:
    """Put a fully built `staging` folder at `final` (which only an earlier run of ours may occupy).

    Two renames in one folder: at every moment `final` is either the old complete folder, absent,
    or the new complete one, never half of either.
    """
    check_output(final, folder=True)
    old = final.with_name(f".{final.name}.old")
    clear_generated_dir(old, marker=marker)  # left by a run killed between the two renames
    if final.exists():
        clear_generated_dir_check(final, marker=marker)
        os.rename(final, old)
    os.rename(staging, final)
    shutil.rmtree(old, ignore_errors=True)


def write_table(path: str | Path, header: list[str], rows: Iterable[Sequence[str]]) -> None:
    """A CSV with a header row from plain tuples, written whole or not at all (write_rows without
    a dict per row: a million split rows as dicts took 250 MB)."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    write_bytes_atomically(path, buffer.getvalue().encode(**PATH_ENCODING))


def read_table(path: str | Path, columns: list[str]) -> list[tuple[str, ...]]:
    """The named columns of a CSV written by write_table or write_rows, as tuples in that order;
    a file without them is an error naming it (someone else's file, or an older format)."""
    with Path(path).open(newline="", encoding="utf-8", errors="surrogateescape") as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        missing = [name for name in columns if name not in header]
        if missing:
            raise DataError(f"'{path}' has no column(s) {missing}; it was not written by this trainwell. "
                            "Re-run the stage that writes it (dvc repro)")
        positions = [header.index(name) for name in columns]
        if positions == list(range(len(header))):
            return [tuple(row) for row in reader]
        return [tuple(row[position] for position in positions) for row in reader]


def write_rows(path: str | Path, rows: Iterable[dict], *, fields: list[str] | None = None) -> None:
    """A CSV with a header row (`fields`, else the first row's keys), creating parent folders."""
    if fields is None:
        rows = list(rows)
        fields = list(rows[0]) if rows else ["empty"]
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    write_bytes_atomically(path, buffer.getvalue().encode(**PATH_ENCODING))
