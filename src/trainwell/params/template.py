"""params.yaml written from the models: `python -m trainwell.params.template` (make params) rewrites both copies.

The values are the models' defaults, laid out by DVC's own YAML writer (block lists, empty for
null), so `dvc exp run -S key=value`, which rewrites the file through that writer, changes only the
line of the value it sets; a flow list such as [16, 16, 32] would come back expanded. Each key's
description becomes its trailing comment, a section's description the comment on its line, and
json_schema_extra=above(...) a comment block above the key.
"""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from trainwell.outputs import write_bytes_atomically
from trainwell.params import Params
from trainwell.params.base import COMMENT_ABOVE

HEADER = """\
# trainwell parameters, written by `trainwell init`; yours to edit. Every section is validated
# when a stage starts: an unknown or mistyped key stops it with the key's name and what is allowed.
# Change one for a run with:  dvc exp run -S train.learning_rate=3e-4
"""
# What `trainwell init` replaces with the data folder (stages/init.py render_params).
DATA_DIR_PLACEHOLDER = "{data_dir}"
# Trailing comments start in this column; a longer line and its neighbours that are longer too
# share the column two characters past the longest of them.
COMMENT_COLUMN = 29
TEMPLATE = Path("src", "trainwell", "templates", "params.yaml.in")  # in the repository
COMMAND = "make params"  # or: python -m trainwell.params.template [REPOSITORY]
# A key line in the writer's output: two spaces of indent per level, then `name:`.
_KEY_LINE = re.compile(r"^(?P<indent>(?:  )*)(?P<key>[A-Za-z_][A-Za-z0-9_]*):(?: |$)")
_SENTINEL = "trainwell-data-dir-placeholder"
# A float the writer puts in exponent notation, alone on its key's line.
_EXPONENT_VALUE = re.compile(r"^(?P<key> *[A-Za-z_][A-Za-z0-9_]*: )(?P<number>-?[0-9]+(?:\.[0-9]+)?e[-+]?[0-9]+)$",
                             re.MULTILINE)


def _values(model: BaseModel) -> dict[str, Any]:
    """The model as plain YAML values; inside list items, unset (None) keys are left out as users write them."""
    def tidy(value: Any, in_list: bool) -> Any:
        if isinstance(value, dict):
            return {key: tidy(item, False) for key, item in value.items() if not (in_list and item is None)}
        if isinstance(value, list):
            return [tidy(item, True) for item in value]
        return value

    return tidy(model.model_dump(mode="json"), False)


def _section_model(field: FieldInfo) -> type[BaseModel] | None:
    annotation = field.annotation
    return annotation if inspect.isclass(annotation) and issubclass(annotation, BaseModel) else None


def _lines(written: str) -> Iterator[tuple[str, str | None]]:
    """(code, trailing comment or None) per output line, comment blocks and blank lines included."""
    models: list[type[BaseModel] | None] = [Params]  # the model whose keys sit at each indent level
    lines = written.splitlines()
    for number, line in enumerate(lines):
        match = _KEY_LINE.match(line)
        level = len(match["indent"]) // 2 if match else -1
        model = models[level] if match and level < len(models) else None
        field = model.model_fields.get(match["key"]) if match and model else None
        if match is None or field is None:
            yield line, None
            continue
        del models[level + 1:]
        models.append(_section_model(field))
        if level == 0 and number:
            yield "", None
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        for text in str(extra.get(COMMENT_ABOVE, "")).splitlines():
            yield f"{match['indent']}# {text}", None
        description = field.description
        if description and number + 1 < len(lines) and _continues(line, lines[number + 1]):
            raise ValueError(f"{match['key']}: a value written over several lines cannot carry a trailing comment; "
                             "put its description above it (json_schema_extra=above(...))")
        comments = (description or "").splitlines()
        yield line, comments[0] if comments else None
        for text in comments[1:]:
            yield "", text


def _continues(line: str, following: str) -> bool:
    """True when `following` continues the scalar value that `line` starts (a folded long string)."""
    indent = len(line) - len(line.lstrip())
    has_value = not line.rstrip().endswith(":")
    return has_value and len(following) - len(following.lstrip()) > indent and not following.lstrip().startswith("- ")


def _aligned(lines: list[tuple[str, str | None]]) -> str:
    """The lines with their trailing comments in COMMENT_COLUMN, or aligned past a run of longer lines."""
    columns = [COMMENT_COLUMN] * len(lines)
    run: list[int] = []  # consecutive commented lines too long for COMMENT_COLUMN (and their continuations)
    for index, (code, comment) in enumerate([*lines, ("", None)]):
        if comment is not None and (len(code) >= COMMENT_COLUMN or (not code and run)):
            run.append(index)
            continue
        for member in run:
            columns[member] = max(len(lines[item][0]) for item in run) + 2
        run = []
    text = []
    for (code, comment), column in zip(lines, columns):
        text.append(code if comment is None else f"{code.ljust(column)}# {comment}")
    return "\n".join(text) + "\n"


def _positional(match: re.Match[str]) -> str:
    # 0.00001 as written by hand, not the writer's 1e-05, which YAML 1.1 (PyYAML) reads as a string.
    return match["key"] + format(Decimal(match["number"]), "f")


def render() -> str:
    """The init template: params.yaml as the models give it, with data.dir init's placeholder."""
    from dvc.utils.serialize import dumps_yaml

    values = _values(Params())
    values["data"]["dir"] = _SENTINEL
    written = _EXPONENT_VALUE.sub(_positional, dumps_yaml(values)).replace(_SENTINEL, DATA_DIR_PLACEHOLDER)
    return HEADER + "\n" + _aligned(list(_lines(written)))


def targets(repository: Path) -> dict[Path, str]:
    """Each generated file and the text it should hold: the init template, and the repository's own
    params.yaml, which is what `trainwell init` writes from it for the demo (its data.dir is plain YAML)."""
    template = render()
    return {repository / TEMPLATE: template,
            repository / "params.yaml": template.replace(DATA_DIR_PLACEHOLDER, Params().data.dir)}


def main(argv: list[str] | None = None) -> int:
    """Rewrite the generated files that differ in the repository (argument; default: this checkout); name each."""
    argv = sys.argv[1:] if argv is None else argv
    repository = Path(argv[0]) if argv else Path(__file__).resolve().parents[3]
    for path, text in targets(repository).items():
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            write_bytes_atomically(path, text.encode("utf-8"))
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
