"""Listing a folder-per-class dataset, without following links out of it or touching any file."""

from __future__ import annotations

import csv
import io
import os
from array import array
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from stat import S_ISDIR, S_ISLNK, S_ISREG

from trainwell import storage
from trainwell.errors import DataError, UsageError
from trainwell.kinds import Finding
from trainwell.names import same_after_normalisation


@dataclass
class Listing:
    """Files found under a dataset root, with the problems visible from the layout alone."""

    root: Path | str  # a str for object-store URLs
    classes: list[str]
    files: list[tuple[str, str]] = field(default_factory=list)  # (relative path, class)
    issues: list[Finding] = field(default_factory=list)
    # (size in bytes, mtime in ns) of each local file, flat: file i's at 2i and 2i + 1 (lstat, links
    # not followed; -1, -1 when it could not be stat'ed), taken while listing. None for object
    # stores. Machine integers, 16 bytes a file, where a tuple of two ints per file took 120.
    stats: array | None = None


def list_dataset(root: str | Path, *, classes: list[str] | None, extensions: list[str]) -> Listing:
    """List `root/<class>/**/<file>`; report stray files, unknown and missing classes, escaping links.

    With `classes=None` every sub-folder is a class. Files are returned in sorted order so
    every later stage sees the same sequence on every machine.
    """
    if storage.is_remote(root):
        return list_remote_dataset(str(root), classes=classes, extensions=extensions)
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"dataset folder '{root}' does not exist or is not a folder; "
            "set data.dir in params.yaml to a folder with one sub-folder per class"
        )
    # Hidden entries (.git, .thumbs, .DS_Store) are nobody's class and no stray file: not listed at all.
    visible = sorted((entry for entry in os.scandir(root) if not entry.name.startswith(".")), key=lambda e: e.name)
    subdirs = [entry.name for entry in visible if entry.is_dir(follow_symlinks=False)]
    wanted = refuse_look_alike(subdirs, where=f"dataset folder '{root}'") if classes is None else list(classes)
    stats_of_files = array("q")
    listing = Listing(root=root, classes=wanted, stats=stats_of_files)
    allowed = set(extensions)

    for entry in visible:
        if entry.is_file(follow_symlinks=False):
            listing.issues.append(Finding(entry.name, "stray_file", "file outside any class folder is ignored"))
        elif entry.is_symlink():
            _safe_target(listing, root, entry.name, regular_file=False)  # reported when it escapes or loops
    for name in subdirs:
        if name not in wanted:
            listing.issues.append(
                Finding(name, "unknown_class", f"folder is not in the class list {wanted}; its files are ignored")
            )
    for label in wanted:
        class_dir = root / label
        relatives: list[str] = []
        stats = array("q")
        links: list[int] = []
        if class_dir.is_dir() and not class_dir.is_symlink():
            _scan(str(class_dir), label, relatives=relatives, stats=stats, links=links, listing=listing)
        if links:
            escaping = {position for position in links if not _safe_target(listing, root, relatives[position])}
            relatives = [relative for position, relative in enumerate(relatives) if position not in escaping]
            stats = array("q", (value for position in range(len(stats) // 2) if position not in escaping
                                for value in stats[2 * position:2 * position + 2]))
        accepted = _add_class_files(listing, label, relatives, allowed, visible_names=True)
        if len(accepted) == len(relatives):
            stats_of_files.extend(stats)
        else:
            for position in accepted:
                stats_of_files.extend(stats[2 * position:2 * position + 2])
    return listing


def refuse_look_alike(classes: list[str], *, where: str) -> list[str]:
    """The class list found in the data, unless two of its names are the same after Unicode
    normalisation (`café` composed in one folder name, decomposed in another): they look
    identical but would be two classes. A DataError names them with their code points."""
    alike = same_after_normalisation(classes)
    if alike:
        raise DataError(f"{where} has classes {', '.join(map(ascii, alike))[:300]} whose names are the same after "
                        "Unicode normalisation (NFC) but written in different characters: they look identical and "
                        "would be separate classes. Rename (or merge) them so each class has one spelling")
    return classes


def _add_class_files(listing: Listing, label: str, relatives: list[str], allowed: set[str], *,
                     visible_names: bool = False) -> list[int]:
    """List a class's files with an allowed extension; report the others and an empty class.

    With `visible_names` (_scan's files: no base name starts with a dot) the extension is simply
    from the last dot on, which is what splitext gives for such names (and a dot in a folder's
    name leaves a '/' in it, which no allowed extension holds): one slice per file, not a call.
    Returns the positions in `relatives` of the files listed."""
    if visible_names:
        accepted = [position for position, relative in enumerate(relatives)
                    if relative[relative.rfind("."):].lower() in allowed]
    else:
        accepted = [position for position, relative in enumerate(relatives) if _allowed_extension(relative, allowed)]
    if len(accepted) < len(relatives):
        taken = set(accepted)
        for position, relative in enumerate(relatives):
            if position not in taken:
                listing.issues.append(Finding(relative, "stray_file",
                                            f"extension '{os.path.splitext(relative)[1]}' is not in data.extensions"))
    listing.files.extend((relatives[position], label) for position in accepted)
    if not accepted:
        listing.issues.append(Finding(label, "missing_class", "configured class has no images"))
    return accepted


def _allowed_extension(relative: str, allowed: set[str]) -> bool:
    """os.path.splitext(relative)[1].lower() in allowed, a third as costly (it runs once per file
    on every listing): a match on the end of the name, checked the way splitext would cut it."""
    lowered = relative.lower()
    dot = lowered.rfind(".")
    if dot < 0 or lowered[dot:] not in allowed:
        return False
    # splitext: the last dot of the base name starts the extension unless only dots precede it.
    return lowered[lowered.rfind("/") + 1:dot].strip(".") != ""


def list_remote_dataset(root: str, *, classes: list[str] | None, extensions: list[str]) -> Listing:
    """list_dataset for an object store (s3://bucket/prefix): same checks, no links to follow there."""
    by_class: dict[str, list[str]] = {}
    listing = Listing(root=root, classes=[])
    for relative in storage.walk_files(root):
        if "/" not in relative:
            listing.issues.append(Finding(relative, "stray_file", "file outside any class folder is ignored"))
            continue
        by_class.setdefault(relative.split("/", 1)[0], []).append(relative)
    wanted = refuse_look_alike(sorted(by_class), where=f"'{root}'") if classes is None else list(classes)
    listing.classes = wanted
    allowed = set(extensions)
    for name in sorted(set(by_class) - set(wanted)):
        listing.issues.append(
            Finding(name, "unknown_class", f"folder is not in the class list {wanted}; its files are ignored")
        )
    for label in wanted:
        _add_class_files(listing, label, by_class.get(label, []), allowed)
    return listing


def _scan(folder: str, relative: str, *, relatives: list[str], stats: array, links: list[int],
          listing: Listing) -> None:
    """Append every non-hidden file or link below folder, sorted, to relatives (posix paths) and
    stats (size in bytes, mtime in ns: two values per file, links not followed); positions of
    links go to `links`.

    One lstat per name, relative to the open folder, gives the type, size and mtime at once: a
    re-audit of an unchanged tree is mostly this loop (scandir plus a stat per entry cost 25%
    more). A file that cannot be stat'ed gets (-1, -1) (the audit reports it unreadable); a
    folder that cannot be listed is reported here.
    """
    try:
        handle = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            names = sorted(os.listdir(handle))
        except OSError:
            os.close(handle)
            raise
    except OSError as exc:
        listing.issues.append(Finding(relative, "unreadable", f"folder could not be listed "
                                    f"({exc.strerror or exc}), so its files are not audited; check its permissions"))
        return
    prefix, lstat, append, extend = f"{relative}/", os.stat, relatives.append, stats.extend
    try:
        for name in names:  # the loop a re-audit of an unchanged tree spends most of its time in
            if name[:1] == ".":
                continue
            try:
                stat = lstat(name, dir_fd=handle, follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed while listing
            except OSError:
                relatives.append(f"{relative}/{name}")
                stats.extend((-1, -1))
                continue
            mode = stat.st_mode
            if S_ISDIR(mode):
                _scan(os.path.join(folder, name), f"{relative}/{name}", relatives=relatives, stats=stats, links=links,
                      listing=listing)
                continue
            if S_ISLNK(mode):
                links.append(len(relatives))
            elif not S_ISREG(mode):
                # Reading a FIFO blocks for ever and a device may never end: reported, never opened.
                listing.issues.append(Finding(f"{relative}/{name}", "special_file",
                                              "not a regular file (a FIFO, socket or device); never opened"))
                continue
            append(prefix + name)
            extend((stat.st_size, stat.st_mtime_ns))
    finally:
        os.close(handle)


def _lstat(path: Path) -> tuple[int, int]:
    try:
        stat = path.lstat()
    except OSError:
        return -1, -1  # vanished since the listing: the audit reports it unreadable
    return stat.st_size, stat.st_mtime_ns


def _safe_target(listing: Listing, root: Path, relative: str, *, regular_file: bool = True) -> bool:
    """True when root/relative, every link along it followed, is a regular file inside the root.

    Otherwise the reason is recorded and the file is never opened: a link out of the root
    (`symlink_outside`), a FIFO, socket or device (`special_file`: reading a FIFO would block
    for ever), a link loop or a dangling link (`unreadable`), or nothing there (`missing_file`).
    """
    path = root / relative
    try:
        target = path.resolve(strict=True)
    except FileNotFoundError:
        kind, why = ("unreadable", "symbolic link leads nowhere") if path.is_symlink() else (
            "missing_file", "named in the manifest but not on disk")
        listing.issues.append(Finding(relative, kind, f"{why}; not read"))
        return False
    except (RuntimeError, OSError) as exc:  # a link loop (RuntimeError before Python 3.13) or ELOOP
        listing.issues.append(Finding(relative, "unreadable", f"symbolic links loop or cannot be followed "
                                      f"({type(exc).__name__}); not read"))
        return False
    if not target.is_relative_to(root.resolve()):
        listing.issues.append(Finding(relative, "symlink_outside",
                                      f"leads outside the dataset to '{target}' through a link; not followed"))
        return False
    if regular_file and not S_ISREG(target.stat().st_mode):
        listing.issues.append(Finding(relative, "special_file",
                                      "not a regular file (a FIFO, socket, device or folder); never opened"))
        return False
    return True


# The largest manifest read (bytes): a million rows of 100-byte paths is 100 MB.
MAX_MANIFEST_BYTES = 512 << 20


def manifest_rows(manifest: Path, *, columns: tuple[str, ...] = ("path", "label")) -> list[tuple[str, ...]]:
    """The named columns of each row of a CSV manifest; a malformed file is a usage error naming the line.

    Paths are taken exactly as written (a file name may begin or end with a space); only labels
    and header names are stripped. A byte-order mark (Excel's "CSV UTF-8") is allowed.
    """
    try:
        data = storage.read_regular_file(manifest, max_bytes=MAX_MANIFEST_BYTES, limit="a manifest may have")
    except OSError as exc:
        raise UsageError(f"manifest '{manifest}' cannot be read: {exc.strerror or exc}") from None
    try:
        with io.StringIO(data.decode("utf-8-sig"), newline="") as handle:
            reader = csv.reader(handle, strict=True)  # strict: an unclosed quote is an error, not a field
            header = next(reader, None)
            names = [name.strip() for name in header or []]
            if header is None or not set(columns) <= set(names):
                raise UsageError(f"manifest '{manifest}' needs a header row with columns {','.join(columns)}; "
                                 f"found {str(header)[:200]}")
            repeated = sorted({name for name in names if names.count(name) > 1 and name in columns})
            if repeated:
                raise UsageError(f"manifest '{manifest}' has the column {repeated[0]!r} more than once in its header; "
                                 "keep one")
            positions = {name: position for position, name in enumerate(names)}
            rows = []
            for row in reader:
                if not row:
                    continue  # a blank line
                if len(row) != len(header):
                    raise UsageError(f"manifest '{manifest}' line {reader.line_num}: {len(row)} columns where "
                                     f"the header has {len(header)}; quote fields that hold commas")
                rows.append(tuple(row[positions[name]] if name == "path" else row[positions[name]].strip()
                                  for name in columns))
    except UnicodeDecodeError as exc:
        raise UsageError(f"manifest '{manifest}' is not UTF-8 text (byte {exc.start}); save it as UTF-8 CSV") from None
    except csv.Error as exc:
        raise UsageError(f"manifest '{manifest}' is not valid CSV: {str(exc)[:200]}") from None
    return rows


def list_manifest(
    root: str | Path, *, manifest: str | Path, classes: list[str] | None, extensions: list[str]
) -> Listing:
    """List the files a labels manifest (CSV with `path,label` columns, paths relative to root) names.

    Rows that cannot be trusted are reported and left out: `path_outside_root` (absolute or
    `..` paths; never opened), `missing_file`, `unknown_label` (not in `classes`),
    `conflicting_rows` (one path, two labels), and links leaving the root (`symlink_outside`).
    """
    if storage.is_remote(root):
        raise DataError(f"data.manifest is supported for local folders only, not '{root}'; use class folders there")
    root, manifest = Path(root), Path(manifest)
    if not manifest.is_file():
        raise DataError(f"labels manifest '{manifest}' does not exist; set data.manifest in params.yaml or remove it")
    rows = manifest_rows(manifest)
    labels_seen = sorted({label for _, label in rows if label})
    wanted = refuse_look_alike(labels_seen, where=f"manifest '{manifest}'") if classes is None else list(classes)
    stats_of_files = array("q")
    listing = Listing(root=root, classes=wanted, stats=stats_of_files)
    by_path: dict[str, set[str]] = {}
    for path, label in rows:
        by_path.setdefault(path, set()).add(label)
    allowed = set(extensions)
    counts = dict.fromkeys(wanted, 0)
    for path in sorted(by_path):
        labels = sorted(by_path[path])
        pure = PurePosixPath(path)
        if pure.is_absolute() or ".." in pure.parts or not path:
            listing.issues.append(Finding(path, "path_outside_root",
                                        "manifest path is absolute or climbs out with '..'; never opened"))
            continue
        if len(labels) > 1:
            listing.issues.append(Finding(path, "conflicting_rows",
                                        f"listed with labels {labels}; left out until the manifest agrees"))
            continue
        label = labels[0]
        if label not in counts:
            listing.issues.append(Finding(path, "unknown_label",
                                        f"label '{label}' is not in the class list {wanted}; left out"))
            continue
        full = root / path
        # Every component is resolved, not only the last: `lnk/s/img.png` through `lnk -> /elsewhere`.
        if not _safe_target(listing, root, path):
            continue
        if full.suffix.lower() not in allowed:
            listing.issues.append(Finding(path, "stray_file",
                                        f"extension '{full.suffix}' is not in data.extensions"))
            continue
        listing.files.append((path, label))
        stats_of_files.extend(_lstat(full))
        counts[label] += 1
    for label, count in counts.items():
        if count == 0:
            listing.issues.append(Finding(label, "missing_class", "configured class has no images"))
    return listing


def list_sources(root: str | Path, *, manifest: str | None, classes: list[str] | None, extensions: list[str]) -> Listing:
    """The dataset's labelled files: from the labels manifest when one is configured, else from folders."""
    if manifest:
        return list_manifest(root, manifest=manifest, classes=classes, extensions=extensions)
    return list_dataset(root, classes=classes, extensions=extensions)
