"""`trainwell init`: make any git repository a trainwell project (dvc init, dvc.yaml, params.yaml, .gitignore)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import yaml

from trainwell.console import say
from trainwell.errors import UsageError
from trainwell.outputs import write_bytes_atomically
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
    return [f"/{paths.audit_cache}", f"/{paths.audit_cache}.npy", f"/{paths.train_backup_dir}/", "/dvc_plots/"]


def _git_top(directory: Path) -> Path:
    result = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=directory, capture_output=True, text=True)
    if result.returncode != 0:
        raise UsageError(f"'{directory}' is not inside a git repository; run `git init` there first, "
                         "then `trainwell init` again")
    return Path(result.stdout.strip())


def _data_dir_for(project: Path, data: str | None) -> str:
    """data.dir as params.yaml should hold it: relative to the project when inside it, else absolute."""
    if data is None:
        return PathsParams().demo_dir
    folder = Path(data).expanduser()
    folder = (Path.cwd() / folder) if not folder.is_absolute() else folder
    if not folder.is_dir():
        raise UsageError(f"--data '{data}' is not a folder; give a folder with one sub-folder per class")
    resolved, root = folder.resolve(), project.resolve()
    return resolved.relative_to(root).as_posix() if resolved.is_relative_to(root) else str(resolved)


def _ensure_dvc(project: Path, git_top: Path) -> bool:
    """Run `dvc init` (with --subdir below the git root) unless the project already is one."""
    if (project / ".dvc").is_dir():
        return False
    command = [sys.executable, "-m", "dvc", "init", "-q"]
    if project.resolve() != git_top.resolve():
        command.append("--subdir")
    result = subprocess.run(command, cwd=project, capture_output=True, text=True)
    if result.returncode != 0:
        raise UsageError(f"`dvc init` failed in '{project}': {result.stderr.strip()[:500]}")
    subprocess.run([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], cwd=project,
                   capture_output=True, check=False)
    return True


def _add_gitignore(project: Path, entries: list[str]) -> list[str]:
    """Append the entries .gitignore lacks; return those added (the user's lines are kept as they are)."""
    path = project / ".gitignore"
    existing = path.read_text(encoding="utf-8") if path.exists() else ""
    present = {line.strip() for line in existing.splitlines()}
    missing = [entry for entry in entries if entry not in present]
    if missing:
        prefix = existing if not existing or existing.endswith("\n") else existing + "\n"
        block = "\n".join([GITIGNORE_HEADER, *missing]) + "\n"
        write_bytes_atomically(path, (prefix + block).encode("utf-8"))
    return missing


def main(*, directory: str = ".", data: str | None = None) -> int:
    project = Path(directory)
    if not project.is_dir():
        raise UsageError(f"'{directory}' is not a folder; create it (and `git init` it) first")
    git_top = _git_top(project)
    existing = [name for name in ("dvc.yaml", "params.yaml") if (project / name).exists()]
    if existing:
        raise UsageError(f"{' and '.join(existing)} already exist in '{project}'; trainwell init never overwrites "
                         "them. Move them away to start afresh, or edit them by hand")
    params_text = render_params(data_dir=_data_dir_for(project, data))
    paths = parse_params(yaml.safe_load(params_text), source="the params.yaml template").paths
    ran_dvc_init = _ensure_dvc(project, git_top)
    write_bytes_atomically(project / "params.yaml", params_text.encode("utf-8"))
    write_bytes_atomically(project / "dvc.yaml", template("dvc.yaml.in").encode("utf-8"))
    added = _add_gitignore(project, scratch_paths(paths))
    where = os.path.relpath(project)
    say(f"init: {'ran dvc init; ' if ran_dvc_init else ''}wrote {where}/dvc.yaml and {where}/params.yaml"
        f"{f'; added {len(added)} entries to .gitignore' if added else ''}")
    say("next: check data.dir in params.yaml, then `dvc repro` (and commit dvc.lock and metrics/ afterwards)")
    return 0
