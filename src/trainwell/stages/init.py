"""`trainwell init`: make any git repository a trainwell project (dvc init, dvc.yaml, params.yaml, .gitignore)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path, PurePosixPath

import yaml

from trainwell.console import say
from trainwell.errors import UsageError
from trainwell.outputs import staging_dir, write_bytes_atomically
from trainwell.params import PathsParams, parse_params

# Generated files no stage declares as a DVC output (DVC ignores its outputs in git itself).
GITIGNORE_HEADER = "# trainwell: generated scratch files (DVC lists its own outputs in .gitignore files)"


def template(name: str) -> str:
    """A project template shipped inside the package (trainwell/templates/NAME).

    The files end in .in: a file named dvc.yaml anywhere in a DVC workspace (a .venv inside a
    project, say) would be read by DVC as a pipeline of its own.
    """
    return resources.files("trainwell").joinpath("templates", name).read_text(encoding="utf-8")


def render_params(*, data_dir: str) -> str:
    """The commented params.yaml with data.dir set; the path is written as a quoted YAML scalar."""
    # A JSON string is a valid YAML double-quoted scalar: any character a path may hold survives.
    return template("params.yaml.in").replace("{data_dir}", json.dumps(data_dir))


def scratch_paths(paths: PathsParams) -> list[str]:
    """Paths trainwell writes that are neither DVC outputs nor meant for git."""
    cache = PurePosixPath(paths.audit_cache)
    # The cache's temporary files (outputs.write_atomically's names) outlive a killed audit.
    return [f"/{cache}", f"/{cache}.npy", f"/{cache.parent / ('.' + cache.name)}.*.tmp",
            f"/{paths.train_backup_dir}/", "/dvc_plots/",
            f"/{staging_dir(paths.cache_dir).as_posix()}/"]


def _git_top(directory: Path) -> Path:
    result = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=directory, capture_output=True)
    if result.returncode != 0 or not result.stdout.strip():
        raise UsageError(f"'{directory}' is not inside a git repository's work tree; run `git init` there first, "
                         "then `trainwell init` again")
    return Path(os.fsdecode(result.stdout.strip()))  # any bytes a folder name may hold


def _project(directory: str) -> Path:
    """The project folder, refused when it cannot hold a project: missing, a file, or inside .git/.dvc."""
    if not directory:
        raise UsageError("the project folder is an empty string; give a folder, or leave it out for the current one")
    project = Path(directory)
    if not project.is_dir():
        raise UsageError(f"'{directory}' is not a folder; create it (and `git init` it) first")
    inside = {".git", ".dvc"} & set(project.resolve().parts)
    if inside:
        raise UsageError(f"'{directory}' is inside a {inside.pop()} folder, which belongs to git or DVC; "
                         "run trainwell init in your project's own folder")
    return project


def _data_dir_for(project: Path, data: str | None) -> str:
    """data.dir as params.yaml should hold it: relative to the project when inside it, else absolute."""
    if data is None:
        return PathsParams().demo_dir
    try:
        folder = Path(data).expanduser() if data else None
    except RuntimeError:  # ~user that does not exist
        folder = None
    if folder is None or not folder.is_dir():
        raise UsageError(f"--data '{data}' is not a folder; give a folder with one sub-folder per class")
    resolved, root = folder.resolve(), project.resolve()
    return resolved.relative_to(root).as_posix() if resolved.is_relative_to(root) else str(resolved)


def _gitignore_addition(project: Path, entries: list[str]) -> bytes:
    """The bytes to append to .gitignore (nothing when every entry is there), in the file's own line ending.

    Read as bytes: the user's file may be in any encoding, use CRLF, or be a link to a shared file,
    and it is only ever appended to, never rewritten. A FIFO or folder there is refused (dvc init
    would block reading a FIFO).
    """
    path = project / ".gitignore"
    if os.path.lexists(path) and not path.is_file():
        raise UsageError(f"'{path}' is not a regular file (a folder, FIFO or dangling link); fix it, then run "
                         "trainwell init again")
    existing = path.read_bytes() if path.exists() else b""
    newline = b"\r\n" if b"\r\n" in existing else b"\n"
    present = {line.strip() for line in existing.splitlines()}
    missing = [entry.encode() for entry in entries if entry.encode() not in present]
    if not missing:
        return b""
    lead = newline if existing and not existing.endswith(b"\n") else b""
    return lead + newline.join([GITIGNORE_HEADER.encode(), *missing]) + newline


def _ensure_dvc(project: Path, git_top: Path) -> bool:
    """Run `dvc init` (with --subdir below the git root) unless the project already is one."""
    if os.path.lexists(project / ".dvc"):
        if not (project / ".dvc").is_dir():
            raise UsageError(f"'{project / '.dvc'}' exists but is not a folder; move it away and run trainwell init again")
        return False
    had_dvcignore = os.path.lexists(project / ".dvcignore")
    command = [sys.executable, "-m", "dvc", "init"]
    if project.resolve() != git_top.resolve():
        command.append("--subdir")
    result = subprocess.run(command, cwd=project, capture_output=True, text=True, errors="backslashreplace")
    if result.returncode != 0:
        # What a failed dvc init leaves is its own: a half-made .dvc folder (there was none before)
        # and a fresh .dvcignore; the folder is left as the user had it.
        shutil.rmtree(project / ".dvc", ignore_errors=True)
        if not had_dvcignore:
            (project / ".dvcignore").unlink(missing_ok=True)
        said = [line for line in (result.stderr + result.stdout).splitlines() if "ERROR" in line]
        raise UsageError(f"`dvc init` failed in '{project}': {' '.join(said or result.stderr.split())[:500]}")
    subprocess.run([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], cwd=project,
                   capture_output=True, check=False)
    return True


def main(*, directory: str = ".", data: str | None = None) -> int:
    project = _project(directory)
    git_top = _git_top(project)
    existing = [name for name in ("dvc.yaml", "params.yaml") if os.path.lexists(project / name)]
    if existing:
        raise UsageError(f"{' and '.join(existing)} already exist in '{project}'; trainwell init never overwrites "
                         "them. Move them away to start afresh, or edit them by hand")
    # Everything is worked out before anything is written, so a refusal leaves the folder as it was.
    params_text = render_params(data_dir=_data_dir_for(project, data))
    paths = parse_params(yaml.safe_load(params_text), source="the params.yaml template").paths
    ignore = _gitignore_addition(project, scratch_paths(paths))
    ran_dvc_init = _ensure_dvc(project, git_top)
    write_bytes_atomically(project / "params.yaml", params_text.encode("utf-8"))
    write_bytes_atomically(project / "dvc.yaml", template("dvc.yaml.in").encode("utf-8"))
    if ignore:
        with (project / ".gitignore").open("ab") as handle:  # appended: the file, its link and mode stay the user's
            handle.write(ignore)
    where = os.path.relpath(project)
    say(f"init: {'ran dvc init; ' if ran_dvc_init else ''}wrote {where}/dvc.yaml and {where}/params.yaml"
        f"{'; added trainwell scratch paths to .gitignore' if ignore else ''}")
    say("next: check data.dir in params.yaml, then `dvc repro` (and commit dvc.lock and metrics/ afterwards)")
    return 0
