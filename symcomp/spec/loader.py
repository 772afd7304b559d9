"""``load_spec(path) -> Spec``: read, validate, check consistency, fill in defaults.

The passes run in order, each a small function:

1. :func:`symcomp.spec.source.read_yaml` parses safely and keeps positions;
2. :func:`validate` checks keys and types with pydantic, errors mapped back to lines;
3. the architecture rules of :mod:`symcomp.spec.checks` check what relates several keys;
4. :func:`normalize` fills in derived defaults (the head width), so later stages see one form;
5. the expression rules check the embedding scale and the custom symmetry groups.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from symcomp.errors import KeyPath, Location, Problem, SpecError
from symcomp.spec.checks import ARCHITECTURE_RULES, EXPRESSION_RULES, run_rules
from symcomp.spec.model import Spec
from symcomp.spec.source import Source, parse_yaml, read_yaml


def load_spec(path: str | Path) -> Spec:
    """Load and validate a YAML spec. Raises :class:`SpecError` on any bad input."""
    return spec_from_source(read_yaml(path))


def parse_spec(text: str, file: str = "<input>") -> Spec:
    """Like :func:`load_spec`, from YAML text."""
    return spec_from_source(parse_yaml(text, file))


def spec_from_source(source: Source) -> Spec:
    if not isinstance(source.data, dict):
        raise source.error(
            "a spec must be a mapping", (), found=type(source.data).__name__, accepted="a mapping"
        )
    spec = validate(source)
    run_rules(ARCHITECTURE_RULES, spec, source)
    spec = normalize(spec)
    run_rules(EXPRESSION_RULES, spec, source)
    return spec


def spec_from_data(data: dict[str, Any], file: str = "<data>") -> Spec:
    """Validate a spec given as plain data (no positions), e.g. from the config importer."""
    return spec_from_source(Source(data, file, {}, {}))


def normalize(spec: Spec) -> Spec:
    att = spec.architecture.attention
    if att.head_width is None:
        att = att.model_copy(update={"head_width": spec.architecture.width // att.heads})
    arch = spec.architecture.model_copy(update={"attention": att})
    return spec.model_copy(update={"architecture": arch})


# --- pydantic errors -> problems with positions ----------------------------------------------


def validate(source: Source) -> Spec:
    try:
        return Spec.model_validate(source.data)
    except ValidationError as exc:
        problems = [_problem(err, source) for err in exc.errors(include_url=False)]
        found = _without_misspelt_missing([p for p in problems if p is not None])
        if not found:  # only derived values failed: report pydantic's first error as it is
            raise SpecError.at(str(exc.errors()[0]["msg"]), file=source.file) from None
        raise SpecError(_dedupe(found)) from None


def _data_path(loc: tuple[Any, ...], data: Any) -> tuple[KeyPath, bool]:
    """Keep the parts of pydantic's ``loc`` that index the data (drop union tags).

    Returns the path and whether it ends at a key that is absent from the data.
    """
    path: list[str | int] = []
    for part in loc:
        indexes_dict = isinstance(data, dict) and part in data
        indexes_list = isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data)
        if indexes_dict or indexes_list:
            data = data[part]
            path.append(part)
        elif isinstance(data, dict) and isinstance(part, str) and not _is_tag(part):
            path.append(part)
            return tuple(path), True
    return tuple(path), False


def _is_tag(part: str) -> bool:
    return part in {"auto", "list", "catalogue", "custom", "learned", "rope", "alibi", "none"} or (
        "[" in part
    )


def _model_fields_at(path: KeyPath, data: Any) -> list[str]:
    """The keys accepted by the model that validates ``path`` (for unknown-key errors)."""
    candidates: list[type[BaseModel]] = [Spec]
    for part in path:
        if isinstance(data, list) and isinstance(part, int):
            data = data[part]
            continue
        model = _pick(candidates, data)
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return []
        candidates = _models_in(model.model_fields[part].annotation)
        data = data.get(part) if isinstance(data, dict) else None
    model = _pick(candidates, data)
    return list(model.model_fields) if model else []


def _pick(candidates: list[type[BaseModel]], data: Any) -> type[BaseModel] | None:
    if len(candidates) == 1:
        return candidates[0]
    tag = data.get("type") if isinstance(data, dict) else None
    for model in candidates:
        field = model.model_fields.get("type")
        if field is not None and tag in typing.get_args(field.annotation):
            return model
    return None


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _models_in(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType, list):
        for arg in typing.get_args(annotation):
            found.extend(m for m in _models_in(arg) if m not in found)
    return found


def _found(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _problem(err: dict[str, Any], source: Source) -> Problem | None:
    """The problem in symcomp's words, at its key; None for an error in a value the spec does
    not hold (a default derived from another key, whose own problem is reported)."""
    path, missing = _data_path(err["loc"], source.data)
    kind = err["type"]
    if missing and kind not in ("missing", "extra_forbidden"):
        return None
    if kind == "missing":
        line, column = source.position(path[:-1])
        return Problem("required key is missing", _loc(source, line, column), path)
    if kind == "extra_forbidden":
        fields = _model_fields_at(path[:-1], source.data)
        message = "unknown key" + _did_you_mean(str(path[-1]), fields)
        line, column = source.position(path, key=True)
        accepted = ", ".join(fields) if fields else None
        return Problem(message, _loc(source, line, column), path, repr(path[-1]), accepted)
    ctx = err.get("ctx") or {}
    found = _found(err.get("input"))
    if kind == "union_tag_invalid":  # positions: {type: learnd}
        path = (*path, str(ctx.get("discriminator", "type")).strip("'"))
        found, options = repr(ctx.get("tag")), re.findall(r"'([^']*)'", ctx["expected_tags"])
        message = "value not accepted" + _did_you_mean(str(ctx.get("tag")), options)
        accepted = ", ".join(options)
    elif kind in ("literal_error", "enum"):
        options = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        value = err.get("input")
        message = "value not accepted" + (
            _did_you_mean(value, options) if isinstance(value, str) else ""
        )
        accepted = ", ".join(options) or None
    else:
        message, accepted = _in_our_words(kind, ctx, err["msg"])
    line, column = source.position(path)
    return Problem(message, _loc(source, line, column), path, found, accepted)


# pydantic's error types, said as symcomp says them: (message, accepted) from the context
_WORDS: dict[str, tuple[str, str | None]] = {
    "int_type": ("expected an integer", "a whole number such as 8"),
    "int_parsing": ("expected an integer", "a whole number such as 8"),
    "int_from_float": ("expected an integer", "a whole number such as 8"),
    "float_type": ("expected a number", "a number such as 1e-5"),
    "float_parsing": ("expected a number", "a number such as 1e-5"),
    "bool_type": ("expected true or false", "true, false"),
    "bool_parsing": ("expected true or false", "true, false"),
    "string_type": ("expected a string", None),
    "dict_type": ("expected a mapping", "key: value pairs"),
    "model_type": ("expected a mapping", "key: value pairs"),
    "model_attributes_type": ("expected a mapping", "key: value pairs"),
    "list_type": ("expected a list", "[a, b, ...]"),
    "finite_number": ("expected a finite number", "no inf or nan"),
    "greater_than": ("too small", "greater than {gt}"),
    "greater_than_equal": ("too small", "at least {ge}"),
    "less_than": ("too large", "less than {lt}"),
    "less_than_equal": ("too large", "at most {le}"),
    "too_short": ("too few items", "at least {min_length}"),
    "too_long": ("too many items", "at most {max_length}"),
}


def _in_our_words(kind: str, ctx: dict[str, Any], message: str) -> tuple[str, str | None]:
    if kind in _WORDS:
        words, accepted = _WORDS[kind]
        return words, accepted.format(**ctx) if accepted else None
    if kind == "value_error":  # our own validators' messages
        return message.removeprefix("Value error, "), None
    return message[:1].lower() + message[1:], str(ctx["expected"]) if "expected" in ctx else None


def _without_misspelt_missing(problems: list[Problem]) -> list[Problem]:
    """Drop "required key is missing" for a key that an unknown sibling key is a misspelling
    of: the unknown key's "did you mean" already says it."""
    suggested = {
        (*p.key_path[:-1], match.group(1))
        for p in problems
        if (match := re.search(r"did you mean '([^']*)'", p.message)) and p.key_path
    }
    return [
        p
        for p in problems
        if not (p.message == "required key is missing" and tuple(p.key_path) in suggested)
    ]


def _did_you_mean(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _loc(source: Source, line: int | None, column: int | None) -> Location:
    return Location(source.file, line, column)


def _dedupe(problems: list[Problem]) -> list[Problem]:
    seen: set[str] = set()
    out = []
    for p in problems:
        if p.render() not in seen:
            seen.add(p.render())
            out.append(p)
    return out
