"""Reading a params file that may be hostile: size, encoding and alias-bomb limits, YAML errors on one short line."""

from __future__ import annotations

import difflib
import os
import reprlib
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel

from trainwell.errors import ParamsError
from trainwell.storage import FileTooLarge, read_regular_file

# Limits on hostile params files: a real one is a few kilobytes and a few hundred values.
MAX_PARAMS_BYTES = 1_000_000
# YAML values after expanding every *alias: a 334-byte file of nested aliases once expanded to
# hundreds of millions of values, a 226 MB error message and ~1 GB of memory.
MAX_YAML_VALUES = 10_000
# An error message echoes at most this many characters of the offending input.
MAX_ECHO = 200


def short_repr(value: Any) -> str:
    """repr(value) for an error message, at most MAX_ECHO characters however big the value is."""
    # reprlib stops at a few items per level, so a huge or recursive structure is never walked whole.
    brief = reprlib.Repr()
    brief.maxlevel, brief.maxlist, brief.maxdict, brief.maxstring, brief.maxother = 3, 10, 10, 100, 100
    try:
        text = brief.repr(value)
    except (ValueError, RecursionError):  # e.g. an int beyond Python's 4300-digit str() limit
        text = f"<{type(value).__name__}>"
    return cut(text)


def file_name(value: str | None) -> str | None:
    """A params value that names a file (a pydantic validator): refused when no file name can hold
    it, a NUL or a lone surrogate (YAML's \\ud800 escape spells one; it stands for no byte), so the
    stage stops at the key, not mid-way with a UnicodeEncodeError."""
    if value is None:
        return value
    try:
        if "\0" not in value:
            os.fsencode(value)
            return value
    except UnicodeEncodeError:
        pass
    raise ValueError(f"{short_repr(value)} holds a NUL or a character no file name can (a lone surrogate)")


def cut(text: str, limit: int = MAX_ECHO) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class _TooManyValues(yaml.YAMLError):
    """The document expands (through aliases) past MAX_YAML_VALUES, or an alias contains itself."""


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_nodes: set[int]) -> int:
    """Values in `node` with every alias expanded, counted on the composed graph (never expanded)."""
    # An alias is the same node object reached twice, so memoising by id keeps this linear in the file.
    if id(node) in sizes:
        return sizes[id(node)]
    if id(node) in open_nodes:
        raise _TooManyValues("an alias refers to a structure that contains it (a recursive structure)")
    open_nodes.add(id(node))
    children: list[yaml.Node] = []
    if isinstance(node, yaml.SequenceNode):
        children = node.value
    elif isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    size = 1
    for child in children:
        size += _expanded_size(child, sizes, open_nodes)
        if size > MAX_YAML_VALUES:
            raise _TooManyValues(f"it expands to more than {MAX_YAML_VALUES:,} values (counting each *alias "
                                 f"use); a params file needs far fewer: write the values out or use fewer aliases")
    open_nodes.discard(id(node))
    sizes[id(node)] = size
    return size


class _ParamsLoader(yaml.SafeLoader):
    """SafeLoader that refuses alias bombs and reports bad tagged values as YAML errors with a line."""

    def construct_document(self, node: yaml.Node) -> Any:
        # Count before building Python objects, so no expansion ever happens.
        _expanded_size(node, {}, set())
        return super().construct_document(node)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            # PyYAML's own constructors leak these, e.g. for `!!bool maybe`, `2001-13-45`, or an
            # integer beyond Python's 4300-digit limit; only a ValueError says something useful.
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            detail = f": {cut(str(exc))}" if type(exc) is ValueError else ""
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {short_repr(node.value)} as {tag}{detail}", node.start_mark
            ) from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A PyYAML error on one short line: where, what, and while doing what."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        text = f"line {mark.line + 1}, column {mark.column + 1}: {exc.problem}"
        if exc.context:
            text += f" ({exc.context})"
    else:
        text = str(exc)
    return cut(" ".join(text.split()), 2 * MAX_ECHO)


def _read_text(path: Path) -> str | None:
    """The file's text; None when it does not exist. Refuses folders, FIFOs, devices, huge files and
    non-UTF-8 bytes (storage.read_regular_file: checked on the open file, so it never blocks)."""
    try:
        data = read_regular_file(path, max_bytes=MAX_PARAMS_BYTES, limit="a params file may have (a few kB of YAML)")
    except FileNotFoundError:
        return None
    except FileTooLarge:
        raise ParamsError(f"{path} is larger than {MAX_PARAMS_BYTES:,} bytes; a params file is a few kB of YAML") from None
    except OSError as exc:
        raise ParamsError(f"{path} cannot be read: {exc.strerror or exc}; params must be a UTF-8 YAML file") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParamsError(f"{path} is not UTF-8 (byte {exc.start} is {data[exc.start]:#04x}); "
                          f"params files must be UTF-8 YAML") from None


def read_params_file(path: Path) -> Any:
    """The YAML document in `path` as plain data (a mapping, or None for a missing or empty file)."""
    text = _read_text(path)
    if text is None:
        return None
    try:
        raw = yaml.load(text, Loader=_ParamsLoader)  # a SafeLoader: builds no Python objects beyond plain data
    except _TooManyValues as exc:
        raise ParamsError(f"{path} is refused: {exc}") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path} is not valid YAML: {_yaml_problem(exc)}") from None
    except RecursionError:
        raise ParamsError(f"{path} nests too deeply to read; params need a few levels at most") from None
    if raw is not None and not isinstance(raw, dict):
        raise ParamsError(f"{path} must be a mapping of sections (demo, data, audit, ...), got {type(raw).__name__}")
    return raw


def _model_at(root: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel]:
    """The model that holds the key at `loc` (list indices and dict keys are stepped over)."""
    model = root
    for part in loc:
        field = model.model_fields.get(str(part))
        nested = _nested_model(field.annotation) if field is not None else None
        if nested is not None:
            model = nested
    return model


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The model inside an annotation such as GuardParams or list[GateCheck], if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((model for arg in get_args(annotation) if (model := _nested_model(arg))), None)


def describe_error(error: Any, root: type[BaseModel]) -> str:
    """One line for one pydantic error: the key, what is wrong or allowed, a capped echo of the input."""
    key = cut(".".join(str(part) for part in error["loc"]))
    if error["type"] == "extra_forbidden":  # the closest key and every allowed one: a typo is a one-look fix
        fields = list(_model_at(root, error["loc"][:-1]).model_fields)
        close = difflib.get_close_matches(str(error["loc"][-1]), fields, n=1)
        return f"unknown key '{key}';{f' did you mean {close[0]!r}?' if close else ''} allowed here: {', '.join(fields)}"
    if error["type"] == "value_error":
        # Our own validators: their message already names the values (capped by _short).
        message = cut(str(error["ctx"]["error"]), 4 * MAX_ECHO)
    else:
        message = f"{error['msg']} (got {short_repr(error['input'])})"
    return f"'{key}': {message}" if key else message
