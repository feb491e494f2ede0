"""What `trainwell predict` is asked to classify: files, folders, a `path` manifest or s3:// URLs, listed without opening anything."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from stat import S_ISDIR, S_ISREG

from trainwell import storage
from trainwell.data.listing import manifest_rows
from trainwell.errors import DataError, UsageError
from trainwell.kinds import Finding


@dataclass
class Targets:
    """Files to classify, each as the location to read and the name to report, plus what was refused unread."""

    locations: list[str] = field(default_factory=list)  # a local path or an s3:// URL, readable by storage
    names: list[str] = field(default_factory=list)  # as the user wrote it (or below the folder they gave)
    refused: list[Finding] = field(default_factory=list)
    ignored: int = 0  # files in a given folder whose extension is not an image extension, or hidden
    # The order things were met in: (True, index into locations) or (False, index into refused).
    order: list[tuple[bool, int]] = field(default_factory=list)

    def add(self, location: str, name: str) -> None:
        self.order.append((True, len(self.locations)))
        self.locations.append(location)
        self.names.append(name)

    def refuse(self, finding: Finding) -> None:
        self.order.append((False, len(self.refused)))
        self.refused.append(finding)


def _regular_file_or_refusal(path: str) -> Finding | None:
    """None when path (links followed) is a regular file; otherwise why it must never be opened.

    Reading a FIFO blocks for ever and a device may never end, so only regular files are read.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            return Finding(path, "unreadable", "symbolic link leads nowhere; not read")
        return Finding(path, "missing_file", "no such file or folder")
    except (OSError, ValueError) as exc:  # a link loop (ELOOP), a name with a NUL byte, no permission
        return Finding(path, "unreadable", f"cannot be looked at: {getattr(exc, 'strerror', None) or exc}")
    if not S_ISREG(mode):
        return Finding(path, "special_file", "not a regular file (a FIFO, socket, device or folder); never opened")
    return None


def _add_local_file(targets: Targets, path: str) -> None:
    refusal = _regular_file_or_refusal(path)
    if refusal is not None:
        targets.refuse(refusal)
    else:
        targets.add(path, path)


def _add_local_folder(targets: Targets, folder: str, *, extensions: set[str]) -> None:
    """Every non-hidden file below folder with an image extension, sorted; links to folders are not followed."""
    for parent, folders, files in os.walk(folder, followlinks=False, onerror=lambda exc: targets.refuse(
            Finding(str(exc.filename), "unreadable", f"folder could not be listed ({exc.strerror or exc})"))):
        targets.ignored += sum(name.startswith(".") for name in folders)
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        for name in list(folders):
            if os.path.islink(os.path.join(parent, name)):
                folders.remove(name)
                targets.refuse(Finding(os.path.join(parent, name), "special_file",
                                               "link to a folder: not followed (give its target instead)"))
        for name in sorted(files):
            path = os.path.join(parent, name)
            if name.startswith("."):
                targets.ignored += 1
                continue
            if os.path.splitext(name)[1].lower() not in extensions:
                targets.ignored += 1
                continue
            _add_local_file(targets, path)


def _add_remote(targets: Targets, url: str, *, extensions: set[str]) -> None:
    """One object (a URL ending in an image extension) or every image object below a prefix."""
    if os.path.splitext(url.rstrip("/"))[1].lower() in extensions:
        targets.add(url, url)
        return
    try:
        relatives = storage.walk_files(url)
    except DataError as exc:
        targets.refuse(Finding(url, "unreadable", str(exc)))
        return
    for relative in relatives:
        if os.path.splitext(relative)[1].lower() in extensions:
            targets.add(storage.join(url, relative), storage.join(url, relative))
        else:
            targets.ignored += 1


def _add_manifest(targets: Targets, manifest: str) -> None:
    """The `path` column of a CSV, paths relative to the manifest's folder and never leaving it."""
    if _regular_file_or_refusal(manifest) is not None:
        raise UsageError(f"manifest '{manifest}' is not a readable file; give a CSV with a `path` column")
    root = Path(manifest).parent.resolve()
    for (path,) in manifest_rows(Path(manifest), columns=("path",)):
        pure = PurePosixPath(path)
        if "\x00" in path:
            targets.refuse(Finding(path, "unreadable", "manifest path holds a NUL byte, which no file name can; never opened"))
            continue
        if not path or pure.is_absolute() or ".." in pure.parts:
            targets.refuse(Finding(path, "path_outside_root",
                                   "manifest path is empty, absolute or climbs out with '..'; never opened"))
            continue
        full = root / path
        try:
            inside = full.resolve(strict=False).is_relative_to(root)
        except (OSError, RuntimeError):  # a link loop
            inside = True  # left to the regular-file check, which names the loop
        if not inside:
            targets.refuse(Finding(path, "symlink_outside",
                                           "leads outside the manifest's folder through a link; not followed"))
            continue
        refusal = _regular_file_or_refusal(str(full))
        if refusal is not None:
            targets.refuse(Finding(path, refusal.kind, refusal.detail))
        else:
            targets.add(str(full), path)


def collect_targets(paths: list[str], *, manifest: str | None, extensions: list[str]) -> Targets:
    """Files, folders (recursively, image extensions only), s3:// URLs and a manifest's rows, in the order given.

    A path that is missing, special or unreadable becomes a refusal naming it, never an exception.
    """
    targets = Targets()
    allowed = {extension.lower() for extension in extensions}
    for path in paths:
        if storage.is_remote(path):
            _add_remote(targets, path, extensions=allowed)
            continue
        try:
            is_folder = S_ISDIR(os.stat(path).st_mode)
        except (OSError, ValueError):
            is_folder = False
        if is_folder:
            _add_local_folder(targets, path, extensions=allowed)
            continue
        _add_local_file(targets, path)
    if manifest:
        _add_manifest(targets, manifest)
    return targets
