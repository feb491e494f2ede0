"""`trainwell init`: make any git repository a trainwell project (dvc init, dvc.yaml, params.yaml, .gitignore, CI)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path, PurePosixPath

import jinja2
import yaml

from trainwell import __version__, storage
from trainwell.console import say, shown
from trainwell.errors import UsageError
from trainwell.outputs import (
    check_output,
    guarded,
    protect_inputs,
    staging_dir,
    write_atomically,
    write_bytes_atomically,
    write_error,
)
from trainwell.params import AuditParams, DataParams, Params, PathsParams, load_params, parse_params

# Generated files no stage declares as a DVC output (DVC ignores its outputs in git itself).
GITIGNORE_HEADER = "# trainwell: generated scratch files (DVC lists its own outputs in .gitignore files)"
MAX_GITIGNORE_BYTES = 16 << 20  # a .gitignore is a few kB; past this it is not one
# --ci NAME -> (the workflow file it writes, relative to the project; its template)
CI_WORKFLOWS = {"github": (".github/workflows/trainwell.yml", "github-workflow.yml.in")}


def template(name: str) -> str:
    """A project template shipped inside the package (trainwell/templates/NAME).

    The files end in .in: a file named dvc.yaml anywhere in a DVC workspace (a .venv inside a
    project, say) would be read by DVC as a pipeline of its own.
    """
    return resources.files("trainwell").joinpath("templates", name).read_text(encoding="utf-8")


def render_params(*, data_dir: str) -> str:
    """The commented params.yaml with data.dir set, in the form DVC's own YAML writer gives it.

    The template, generated from the params models (params/template.py), is already in that form
    (block lists, empty for null, no list at a section's end), so `dvc exp run -S key=value`, which
    rewrites the whole file through ruamel.yaml, changes only the line of the value it sets
    (tests/test_params_round_trip.py runs DVC on it).
    """
    from dvc.utils.serialize import dumps_yaml

    written = dumps_yaml({"dir": data_dir})
    # DVC's scalar, quoted only where YAML 1.2 needs it, unless PyYAML (YAML 1.1, which reads `yes`
    # as true) would read another value, or DVC folds it over lines: then a JSON string, which is a
    # valid YAML double-quoted scalar for any path.
    if written.count("\n") == 1 and yaml.safe_load(written) == {"dir": data_dir}:
        return template("params.yaml.in").replace("{data_dir}", written.removeprefix("dir: ").rstrip("\n"))
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


# data.image_size's line in the generated template: key, value, the spaces before its comment, the comment.
_IMAGE_SIZE_LINE = re.compile(r"^(  image_size: )(\d+)( *)(#.*)?$", re.MULTILINE)


def _fit_image_size(params_text: str, data: str) -> str:
    """params.yaml with data.image_size fitted to the data at `data`; what was found and chosen is said."""
    from trainwell.data.survey import choose_image_size, describe, survey_folder

    defaults = DataParams()
    found = survey_folder(Path(data).expanduser(), extensions=defaults.extensions, max_pixels=AuditParams().max_pixels)
    size, reason = choose_image_size(found)
    for line in describe(found):
        say(f"init: {line}")
    say(f"init: data.image_size = {size}: {reason}")
    if found.grey:
        say("init: grayscale images are given to the model as three equal channels (it takes RGB)")
    return with_data_image_size(params_text, size=size)


def with_data_image_size(params_text: str, *, size: int) -> str:
    """The generated params text with data.image_size's value replaced, its comment kept in its column."""
    match = _IMAGE_SIZE_LINE.search(params_text, params_text.index("\ndata:"))
    if match is None:
        raise RuntimeError("the params template has no data.image_size line")  # a packaging bug, never user input
    key, value, spaces, comment = match.groups(default="")
    if comment:
        spaces = " " * max(1, len(value) + len(spaces) - len(str(size)))
    return params_text[:match.start()] + f"{key}{size}{spaces}{comment}" + params_text[match.end():]


def _without_demo_stage(dvc_yaml: str) -> str:
    """The pipeline without the demo_data stage: with --data it would write 3,000 unused images."""
    start, end = dvc_yaml.index("  demo_data:\n"), dvc_yaml.index("  audit:\n")
    return dvc_yaml[:start] + dvc_yaml[end:]


def _gitignore_addition(project: Path, entries: list[str]) -> bytes:
    """The bytes to append to .gitignore (nothing when every entry is there), in the file's own line ending.

    Read as bytes: the user's file may be in any encoding or use CRLF, and it is only ever appended
    to, never rewritten. A link there is refused (git itself never reads a linked .gitignore, and
    trainwell never writes through a link), as is a FIFO or folder (dvc init would block reading a
    FIFO) and a file that cannot be opened for appending.
    """
    path = project / ".gitignore"
    if path.is_symlink():
        raise UsageError(f"'{shown(path)}' is a link; git ignores a .gitignore that is a link (it never follows "
                         "one), and trainwell never writes through one. Make it a regular file, then run trainwell "
                         "init again")
    if os.path.lexists(path) and not path.is_file():
        raise UsageError(f"'{shown(path)}' is not a regular file (a folder, FIFO or dangling link); fix it, then run "
                         "trainwell init again")
    try:
        existing = storage.read_regular_file(path, max_bytes=MAX_GITIGNORE_BYTES) if path.exists() else b""
    except OSError as exc:
        raise UsageError(f"'{shown(path)}' cannot be read ({exc.strerror or exc}); a .gitignore is a small text "
                         "file. Fix it, then run trainwell init again") from None
    newline = b"\r\n" if b"\r\n" in existing else b"\n"
    present = {line.strip() for line in existing.splitlines()}
    missing = [entry.encode() for entry in entries if entry.encode() not in present]
    if not missing:
        return b""
    if path.exists():
        _check_appendable(path)
    lead = newline if existing and not existing.endswith(b"\n") else b""
    return lead + newline.join([GITIGNORE_HEADER.encode(), *missing]) + newline


def _check_appendable(path: Path) -> None:
    """Open the file for appending and close it, writing nothing: a read-only file, file system or
    immutable file is found before init writes anything else (opening changes neither bytes nor times)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK | os.O_NOFOLLOW))
    except OSError as exc:
        raise UsageError(f"'{shown(path)}' cannot be written ({exc.strerror or exc}); trainwell init appends its "
                         "scratch paths to it. Make it writable, then run trainwell init again") from None


def _check_writable_folder(project: Path) -> None:
    if not os.access(project, os.W_OK | os.X_OK):
        raise UsageError(f"'{shown(project)}' is not a folder you can write in (its permissions, or a read-only "
                         "file system); trainwell init writes dvc.yaml and params.yaml there")


def _check_dvc_folder(project: Path) -> None:
    dvc_folder = project / ".dvc"
    if os.path.lexists(dvc_folder) and (dvc_folder.is_symlink() or not dvc_folder.is_dir()):
        raise UsageError(f"'{shown(dvc_folder)}' exists but is not a folder (or is a link); move it away and run "
                         "trainwell init again")
    if not os.path.lexists(dvc_folder) and os.path.islink(project / ".dvcignore"):
        raise UsageError(f"'{shown(project / '.dvcignore')}' is a link, which `dvc init` would write through; make "
                         "it a regular file (or remove it), then run trainwell init again")


def _ensure_dvc(project: Path, git_top: Path, undo: _Undo) -> bool:
    """Run `dvc init` (with --subdir below the git root) unless the project already is one; what it
    made and staged in git is noted in `undo`."""
    if os.path.lexists(project / ".dvc"):
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
        raise UsageError(f"`dvc init` failed in '{shown(project)}': {' '.join(said or result.stderr.split())[:500]}")
    undo.dvc_files = [".dvc", *([] if had_dvcignore else [".dvcignore"])]
    subprocess.run([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], cwd=project,
                   capture_output=True, check=False)
    return True


def _plan(project: Path, data: str | None) -> tuple[str, bytes]:
    """params.yaml's text and the bytes to append to .gitignore, after checking everything init will
    write, so a refusal leaves the folder as it was."""
    existing = [name for name in ("dvc.yaml", "params.yaml") if os.path.lexists(project / name)]
    if existing:
        raise UsageError(f"{' and '.join(existing)} already exist in '{shown(project)}'; trainwell init never "
                         "overwrites them. Move them away to start afresh, or edit them by hand")
    params_text = render_params(data_dir=_data_dir_for(project, data))
    if data is not None:
        params_text = _fit_image_size(params_text, data)
    paths = parse_params(yaml.safe_load(params_text), source="the params.yaml template").paths
    ignore = _gitignore_addition(project, scratch_paths(paths))
    _check_writable_folder(project)
    for name in ("params.yaml", "dvc.yaml"):
        check_output(project / name)
    _check_dvc_folder(project)
    return params_text, ignore


def yaml_string(value: str) -> str:
    """`value` as one YAML double-quoted scalar that reads back as exactly `value` (any character escaped)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"'{shown(value)}' is not valid UTF-8 (a file name's raw bytes), which a workflow file "
                         "cannot hold; rename it, or write the workflow by hand") from None
    return yaml.safe_dump(value, default_style='"', allow_unicode=False, width=float("inf")).removesuffix("\n")


def render_workflow(ci: str, *, params: Params, remote: bool, requirements: bool) -> str:
    """The CI workflow for `ci`: the pipeline, the audit's annotations, the gate and the report site."""
    environment = jinja2.Environment(
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False,
        # GitHub's own expressions are ${{ ... }}: the template's are [[ ... ]] and [% ... %].
        variable_start_string="[[", variable_end_string="]]", block_start_string="[%", block_end_string="%]",
        comment_start_string="[#", comment_end_string="#]")
    install = "pip install -r requirements.txt" if requirements else f"pip install trainwell=={__version__}"
    return environment.from_string(template(CI_WORKFLOWS[ci][1])).render(
        version=__version__, remote=remote, python_version=f"{sys.version_info.major}.{sys.version_info.minor}",
        install_command=yaml_string(install),
        audit_command=yaml_string(f"trainwell audit {shlex.quote(params.data.dir)} --format github"),
        report_dir=yaml_string(PurePosixPath(params.paths.report_index).parent.as_posix()))


def _plan_workflow(project: Path, ci: str, params: Params) -> tuple[Path, str]:
    """Where the workflow goes and its text, refused (before anything is written) when a file is there."""
    target = project / CI_WORKFLOWS[ci][0]
    if os.path.lexists(target):
        raise UsageError(f"'{shown(target)}' already exists; trainwell init never overwrites it. Move it away to "
                         "have it written afresh, or run `trainwell init --ci github` in an empty git repository to "
                         "see what it would write")
    check_output(target)
    remote = os.path.isdir(project / ".dvc") and bool(subprocess.run(
        [sys.executable, "-m", "dvc", "remote", "list"], cwd=project, capture_output=True).stdout.strip())
    text = render_workflow(ci, params=params, remote=remote, requirements=(project / "requirements.txt").is_file())
    if Path(params.data.dir).is_absolute():
        say(f"init: data.dir '{shown(params.data.dir)}' is outside the project, so a CI machine will not have it; "
            "move the data into the project and `dvc add` it (with a DVC remote, the workflow pulls it)")
    return target, text


def _write_new(path: Path, text: str) -> None:
    """Write a file that must not exist: one made since the check is kept, and this write fails instead."""
    def link_new(temporary: str, target: Path) -> None:
        os.link(temporary, target)  # EEXIST rather than replacing, unlike a rename
        os.unlink(temporary)

    write_atomically(path, lambda stream: stream.write(text.encode("utf-8")), move=link_new)


def _workflow_only(project: Path, ci: str, data: str | None) -> int:
    """--ci in a project init already set up: only the workflow is written, from its params.yaml."""
    if data is not None:
        raise UsageError("dvc.yaml and params.yaml already exist, so --data would change nothing; set data.dir in "
                         "params.yaml, and run `trainwell init --ci ...` without --data")
    protect_inputs(project=project, inputs=[project / "params.yaml"])
    target, text = _plan_workflow(project, ci, load_params(project / "params.yaml"))
    _write_new(target, text)
    say(f"init: dvc.yaml and params.yaml were there already; wrote {shown(os.path.relpath(target))} only")
    return 0


@guarded
def main(*, directory: str = ".", data: str | None = None, ci: str | None = None) -> int:
    project = _project(directory)
    protect_inputs(project=project, datasets=[data] if data else [])
    git_top = _git_top(project)
    if ci is not None and all(os.path.lexists(project / name) for name in ("dvc.yaml", "params.yaml")):
        return _workflow_only(project, ci, data)
    params_text, ignore = _plan(project, data)
    workflow = None if ci is None else _plan_workflow(
        project, ci, parse_params(yaml.safe_load(params_text), source="the params.yaml template"))
    undo = _Undo(project)
    try:
        ran_dvc_init = _ensure_dvc(project, git_top, undo)
        pipeline = template("dvc.yaml.in") if data is None else _without_demo_stage(template("dvc.yaml.in"))
        for name, text in (("params.yaml", params_text), ("dvc.yaml", pipeline)):
            write_bytes_atomically(project / name, text.encode("utf-8"))
            undo.created.append(project / name)
        if workflow is not None:
            _write_new(*workflow)
            undo.created.append(workflow[0])
        if ignore:
            _append(project / ".gitignore", ignore, undo)
    except BaseException:
        undo.run()  # all or nothing: a failure part-way leaves the folder (and git's index) as they were
        raise
    where = shown(os.path.relpath(project))
    say(f"init: {'ran dvc init; ' if ran_dvc_init else ''}wrote {where}/dvc.yaml and {where}/params.yaml"
        f"{f' and {shown(os.path.relpath(workflow[0]))}' if workflow else ''}"
        f"{'; added trainwell scratch paths to .gitignore' if ignore else ''}")
    if data is not None and not _tracked(project, data):
        say(f"init: {shown(data)} is not tracked by DVC or git yet; to version it: `dvc add {shown(data)}`, then "
            f"`git add {shown(data.rstrip('/'))}.dvc .gitignore`")
    say("next: check data.dir in params.yaml, then `dvc repro` (and commit dvc.lock and metrics/ afterwards)")
    return 0


def _tracked(project: Path, data: str) -> bool:
    """Whether the data folder is already versioned: a .dvc file beside it, or files of it in git."""
    folder = Path(data).expanduser()
    if folder.with_name(folder.name + ".dvc").exists():
        return True
    listed = subprocess.run(["git", "ls-files", "--", str(folder.resolve())], cwd=project, capture_output=True)
    return listed.returncode == 0 and bool(listed.stdout.strip())


def _append(path: Path, data: bytes, undo: _Undo) -> None:
    """Append to .gitignore (the file and its mode stay the user's; never through a link); a failure
    is undone with the rest."""
    try:
        undo.appended = (path, path.stat().st_size if os.path.lexists(path) else None)
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        with os.fdopen(descriptor, "ab") as handle:
            handle.write(data)
    except OSError as exc:
        raise write_error(path, exc) from None


class _Undo:
    """What init has done so far, to take back when a later step fails."""

    def __init__(self, project: Path) -> None:
        self.project = project
        self.created: list[Path] = []
        self.dvc_files: list[str] = []  # what `dvc init` made and staged in git, relative to the project
        self.appended: tuple[Path, int | None] | None = None

    def run(self) -> None:
        for path in self.created:
            path.unlink(missing_ok=True)
        if self.appended is not None:
            path, size = self.appended
            if size is None:
                path.unlink(missing_ok=True)
            else:
                with contextlib.suppress(OSError), path.open("r+b") as handle:
                    handle.truncate(size)
        if self.dvc_files:
            subprocess.run(["git", "rm", "-r", "-q", "-f", "--cached", "--ignore-unmatch", "--", *self.dvc_files],
                           cwd=self.project, capture_output=True, check=False)
            shutil.rmtree(self.project / ".dvc", ignore_errors=True)
            if ".dvcignore" in self.dvc_files:
                (self.project / ".dvcignore").unlink(missing_ok=True)
