"""Pydantic's validation errors as problems an operator reads: the path in the file, what was expected and
what was found."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from drwatch.core.errors import ConfigProblem
from drwatch.storage.config import LOCATION_KINDS
from drwatch.validators.config import VALIDATOR_KINDS

# Steps pydantic inserts into error locations that are not part of the file.
_INTERNAL_LOC = frozenset({"function-after", "function-before", "function-wrap", "function-plain", "[key]"})


def _format_loc(loc: tuple[int | str, ...], data: Any) -> str:
    """The path as an operator reads it, walking the raw data: ``assets.x.copies[0].bogus``.

    Mapping keys render as ``.key`` (even numeric ones), list indices as ``[i]``; pydantic's own steps
    (validator functions, discriminator tags, ``[key]``) are dropped.
    """
    out = ""
    node: Any = data
    for item in loc:
        if isinstance(node, dict) and item in node:
            out += f".{item}" if out else str(item)
            node = node[item]
            continue
        if isinstance(node, list) and isinstance(item, int) and 0 <= item < len(node):
            out += f"[{item}]"
            node = node[item]
            continue
        if isinstance(item, str) and (
            item in _INTERNAL_LOC
            or (isinstance(node, dict) and node.get("kind") == item)  # discriminator tag
        ):
            continue
        if isinstance(item, int):
            out += f"[{item}]"
        else:
            out += f".{item}" if out else item
        node = None
    return out


def _kind_of(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


_EXPECTED = {
    "dict_type": "a mapping (key: value)",
    "model_type": "a mapping (key: value)",
    "model_attributes_type": "a mapping (key: value)",
    "list_type": "a list",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "text",
}


def _problem_message(err: Any, loc: tuple[int | str, ...]) -> str:
    kind = err["type"]
    value = err.get("input")
    if "[key]" in loc:
        return "keys must be text"
    if kind == "extra_forbidden":
        return "unknown key (not allowed here)"
    if kind == "missing":
        return "required field is missing"
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {_kind_of(value)}"
    if kind == "union_tag_invalid" or (kind == "literal_error" and loc[-1:] == ("kind",)):
        what, known = ("location", LOCATION_KINDS) if loc[:1] == ("locations",) else ("validator", VALIDATOR_KINDS)
        tag = (err.get("ctx") or {}).get("tag", value)
        return f"unknown {what} kind {tag!r} (known: {', '.join(sorted(known))})"
    if kind == "union_tag_not_found":
        return "required field is missing"
    msg = str(err["msg"]).removeprefix("Value error, ")
    if kind == "literal_error" and isinstance(value, str | int | float):
        msg += f", got {value!r}"
    return msg


# Validation errors turned into problems (each walks the raw data for its path); the rest are only counted.
KEPT_PROBLEMS = 1000


def problems_from_validation(exc: ValidationError, data: Any) -> list[ConfigProblem]:
    problems = []
    for err in exc.errors(include_url=False)[:KEPT_PROBLEMS]:
        loc = tuple(err["loc"])
        path = _format_loc(loc, data)
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            path += ".kind"
        problems.append(ConfigProblem(path, _problem_message(err, loc)))
    return problems
