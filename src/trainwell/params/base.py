"""What every params section shares: strict validation, seeds, class lists, locations, and the comment helpers."""

from __future__ import annotations

from typing import Annotated, Any, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from trainwell.names import class_list_problem
from trainwell.params_file import short_repr as _short
from trainwell.storage import url_problem

# Every seed: numpy's generators refuse a negative one and np.random.seed (which Keras' seeding
# calls) one of 2**32 or more, each with a traceback mid-stage; here it is an error naming the key.
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]

# The json_schema_extra key of a comment block that params.yaml shows above a key (params/template.py).
COMMENT_ABOVE = "comment_above"


def above(text: str) -> dict[str, Any]:
    """Field(json_schema_extra=above(...)): a comment block written above the key in params.yaml."""
    return {COMMENT_ABOVE: text}


def _takes_numbers(annotation: Any) -> bool:
    """True for int/float fields (also optional or in a list) that have no use for a boolean."""
    leaves: set[Any] = set()
    pending = [annotation]
    while pending:
        item = pending.pop()
        args = get_args(item)
        if args:
            pending.extend(args)
        else:
            leaves.add(item)
    return bool(leaves & {int, float}) and not leaves & {bool, Any}


class _Section(BaseModel):
    # extra="forbid" turns a typo such as `learning_rat` into an error naming the key;
    # allow_inf_nan=False rejects .inf / .nan in every float field, present and future.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic's lax mode reads `epochs: true` as 1 epoch. Strict mode would also refuse it,
        # but it refuses "1e-4" too, which is how YAML 1.1 (PyYAML) reads `learning_rate: 1e-4`.
        items = value if isinstance(value, list) else [value]
        field = cls.model_fields[info.field_name or ""]
        if any(isinstance(item, bool) for item in items) and _takes_numbers(field.annotation):
            raise ValueError(f"must be a number, not {_short(value)} (YAML reads true/false/yes/no/on/off as booleans)")
        return value


def _unique(values: list[str] | None) -> list[str] | None:
    """A class list of folder names (names.class_list_problem): each one visible path component,
    named once, in one spelling (a repeated class would get two label indices)."""
    problem = class_list_problem(values or [])
    if problem:
        raise ValueError(problem)
    return values


def _location(value: str) -> str:
    """A local path or an s3:// URL: a file:// (or any other) URL is refused, never read as remote."""
    problem = url_problem(value)
    if problem:
        raise ValueError(problem)
    return value
