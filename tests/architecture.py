"""Reading the package's import graph from source (AST, nothing imported): layers, stages and their closures."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

from tests.helpers import REPO_ROOT

PACKAGE_ROOT = REPO_ROOT / "src" / "trainwell"

# Lowest first. A module may import its own layer and the layers below it, never one above.
# Within the middle layers, audit and training are peers that must not import each other.
LAYERS: list[tuple[str, set[str]]] = [
    # `trainwell` itself is its __init__: the version and lazy re-exports, importing nothing eagerly.
    ("foundation", {"trainwell", "trainwell.errors", "trainwell.kinds", "trainwell.console", "trainwell.stopping"}),
    ("plumbing", {"trainwell.params", "trainwell.params_file", "trainwell.params_limits", "trainwell.names", "trainwell.storage",
                  "trainwell.outputs", "trainwell.progress"}),
    ("data", {"trainwell.data"}),
    ("reports", {"trainwell.reports"}),
    ("domain", {"trainwell.audit", "trainwell.training"}),
    ("stages", {"trainwell.stages"}),
    ("entry", {"trainwell.cli", "trainwell.__main__"}),
]
PEERS = [("trainwell.audit", "trainwell.training")]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def module_path(name: str) -> Path | None:
    base = PACKAGE_ROOT.parent / Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def all_modules() -> list[str]:
    return sorted(module_name(path) for path in PACKAGE_ROOT.rglob("*.py"))


@cache
def imports_of(name: str) -> frozenset[str]:
    """trainwell modules `name` imports anywhere in its source (function-level imports included)."""
    path = module_path(name)
    if path is None:
        return frozenset()
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # `from trainwell.training import fit` imports the module trainwell.training.fit.
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return frozenset(item for item in found if item.startswith("trainwell") and module_path(item) is not None)


def closure(name: str) -> set[str]:
    """Every trainwell module `name` needs, itself included, with the packages whose __init__ runs on import."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        parts = current.split(".")
        todo.extend(".".join(parts[:end]) for end in range(1, len(parts)))  # parent packages run first
        todo.extend(imports_of(current))
    return seen


def layer_of(name: str) -> tuple[int, str]:
    """(rank, layer prefix) of a module: the longest matching prefix among the layers."""
    best: tuple[int, str, int] | None = None
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and (best is None or len(prefix) > best[2]):
                best = (rank, prefix, len(prefix))
    if best is None:
        raise AssertionError(f"module {name} is in no layer; add it to LAYERS in tests/architecture.py")
    return best[0], best[1]


def stage_module(command: str) -> str:
    """The stage module a dvc.yaml `cmd: trainwell WORD` runs."""
    from trainwell.cli import STAGES

    word = command.split()[1]
    return "trainwell.stages." + (STAGES[word][0] if word in STAGES else word.replace("-", "_"))


def source_deps(command: str) -> list[str]:
    """The source paths a stage's dvc.yaml entry lists: whole sub-packages where it runs all of one, else files."""
    files = {path for module in closure(stage_module(command)) if (path := module_path(module)) is not None}
    deps = []
    for folder in sorted({path.parent for path in files} - {PACKAGE_ROOT, PACKAGE_ROOT / "stages"}):
        if set(folder.glob("*.py")) <= files:
            deps.append(folder.relative_to(REPO_ROOT).as_posix())
            files -= set(folder.glob("*.py"))
    return sorted(deps + [path.relative_to(REPO_ROOT).as_posix() for path in files])


def write_dev_dvc_yaml() -> None:
    """Rewrite the repository's dvc.yaml: the init template plus each stage's source deps."""
    import re

    template = (PACKAGE_ROOT / "templates" / "dvc.yaml.in").read_text(encoding="utf-8")
    blocks = []
    for block in re.split(r"(?m)^(?=  [a-z_]+:\n    cmd: )", template):
        match = re.match(r"  [a-z_]+:\n    cmd: (.*)\n", block)
        if match:
            extra = "".join(f"      - {dep}\n" for dep in source_deps(match.group(1)))
            listed = re.search(r"    deps:\n((?:      - .*\n)+)", block)
            if listed:
                block = block[: listed.end()] + extra + block[listed.end():]
            else:
                block = block.replace(match.group(0), f"{match.group(0)}    deps:\n{extra}", 1)
        blocks.append(block)
    text = "".join(blocks).replace(
        "# The trainwell pipeline, written by `trainwell init`; yours to edit. `dvc repro` runs it.\n",
        "# The trainwell pipeline: the `trainwell init` template (src/trainwell/templates/dvc.yaml.in) plus,\n"
        "# for development here, the package source each stage runs. Regenerate the source lists with\n"
        "# `python -m tests.architecture`; tests/test_architecture.py checks both halves.\n",
    )
    (REPO_ROOT / "dvc.yaml").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    write_dev_dvc_yaml()
