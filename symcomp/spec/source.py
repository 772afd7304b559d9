"""Reading YAML and JSON safely while remembering where every key and value came from.

The data is built from PyYAML's node tree (``yaml.compose`` with a ``SafeLoader``), so no tag can
construct an arbitrary object, and every key path maps to the line and column of its key and of
its value. Error messages use those positions; nothing here evaluates a string.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from symcomp.errors import KeyPath, SpecError

# Bounds on what a file may make the loader do. A real spec or config.json is far inside them;
# each one turns a hostile file (deep nesting, an alias bomb, a huge file) into a SpecError.
MAX_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 64  # nested mappings and lists
MAX_NODES = 100_000  # values after alias expansion ("billion laughs" stops here)


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core-schema scalars and a bound on nesting.

    PyYAML implements YAML 1.1, whose implicit types surprise: ``1:30`` is the base-60 integer
    90, ``012`` is octal 10, ``yes``/``off`` are booleans, ``1e-5`` is a string. The core schema
    of YAML 1.2 (the one JSON agrees with) reads ``1:30`` and ``yes`` as strings, ``012`` as 12
    and ``1e-5`` as a float; the spec's strict types then reject a string where a number or a
    boolean belongs, naming the key.
    """

    yaml_implicit_resolvers: dict = {}  # noqa: RUF012 (PyYAML's class-level table)

    def compose_node(self, parent, index):
        self._depth = getattr(self, "_depth", 0) + 1
        if self._depth > MAX_DEPTH:
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(
                None, None, f"nested more than {MAX_DEPTH} levels deep", mark
            )
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _core_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = loader.construct_scalar(node)
    if len(text) > 40:
        raise ValueError(f"an integer of {len(text)} digits")
    sign, digits = (-1, text[1:]) if text[0] == "-" else (1, text.lstrip("+"))
    if digits.startswith("0o"):
        return sign * int(digits[2:], 8)
    if digits.startswith("0x"):
        return sign * int(digits[2:], 16)
    return sign * int(digits)


def _core_float(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> float:
    text = loader.construct_scalar(node).lower()
    return float(text.replace(".inf", "inf").replace(".nan", "nan"))


_CORE_SCHEMA = (  # (tag, pattern, first characters): YAML 1.2.2, section 10.3.2
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", list("tTfF")),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", list("-+0123456789")),
    (
        "tag:yaml.org,2002:float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        list("-+0123456789."),
    ),
)
for _tag, _pattern, _first in _CORE_SCHEMA:
    _Loader.add_implicit_resolver(_tag, re.compile(_pattern), _first)
_Loader.add_constructor("tag:yaml.org,2002:int", _core_int)
_Loader.add_constructor("tag:yaml.org,2002:float", _core_float)


@dataclass(frozen=True)
class Source:
    """Parsed data plus the position of each key path (1-based line and column)."""

    data: Any
    file: str
    key_positions: dict[KeyPath, tuple[int, int]]
    value_positions: dict[KeyPath, tuple[int, int]]

    def position(self, path: KeyPath, *, key: bool = False) -> tuple[int | None, int | None]:
        """The position of ``path``'s value (or key), else of its nearest ancestor."""
        table = self.key_positions if key else self.value_positions
        path = tuple(path)
        while path:
            if path in table:
                return table[path]
            if not key and path in self.key_positions:
                return self.key_positions[path]
            path = path[:-1]
        return self.value_positions.get((), (None, None))

    def error(
        self,
        message: str,
        path: KeyPath,
        *,
        found: str | None = None,
        accepted: str | None = None,
        at_key: bool = False,
    ) -> SpecError:
        line, column = self.position(path, key=at_key)
        return SpecError.at(
            message,
            file=self.file,
            line=line,
            column=column,
            key_path=path,
            found=found,
            accepted=accepted,
        )


_COLLECTION_TAGS = {"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"}


class _Builder:
    """Plain data from a node tree, recording positions. An alias is expanded where it is used,
    so the walk bounds what expansion can do: an alias that contains itself, nesting deeper
    than :data:`MAX_DEPTH` through aliases, and more than :data:`MAX_NODES` values in all are
    each a SpecError."""

    def __init__(self, source: Source):
        self.source = source
        self.built = 0
        self.open: set[int] = set()  # the nodes being built (the path from the root)
        self.loader = _Loader("")  # constructs scalars (one for the walk, not one per value)

    def build(self, node: yaml.Node, path: KeyPath) -> Any:
        source = self.source
        source.value_positions[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        self.built += 1
        if self.built > MAX_NODES:
            raise source.error(
                f"more than {MAX_NODES:,} values (after expanding aliases)",
                path,
                accepted="a spec or config of ordinary size; aliases expand where they are used",
            )
        if len(path) > MAX_DEPTH:
            raise source.error(
                f"nested more than {MAX_DEPTH} levels deep (after expanding aliases)", path
            )
        if id(node) in self.open:
            raise source.error(
                "a YAML alias refers to a value that contains it (a cycle)",
                path,
                accepted="aliases of values defined before and outside them",
            )
        if not isinstance(node, yaml.ScalarNode) and node.tag not in _COLLECTION_TAGS:
            raise source.error(
                "unsupported YAML tag",
                path,
                found=node.tag,
                accepted="plain scalars, lists, mappings",
            )
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, path)
        self.open.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self.mapping(node, path)
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        finally:
            self.open.discard(id(node))

    def mapping(self, node: yaml.MappingNode, path: KeyPath) -> dict[str, Any]:
        source = self.source
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = (
                self.loader.construct_scalar(key_node)
                if isinstance(key_node, yaml.ScalarNode)
                else None
            )
            line, column = key_node.start_mark.line + 1, key_node.start_mark.column + 1
            if key == "<<" and key_node.style is None:
                raise SpecError.at(
                    "YAML merge keys (<<) are not supported in a spec",
                    file=source.file,
                    line=line,
                    column=column,
                    key_path=path,
                )
            if not isinstance(key, str):
                raise SpecError.at(
                    "mapping keys must be plain strings",
                    file=source.file,
                    line=line,
                    column=column,
                    key_path=path,
                )
            child = (*path, key)
            if key in out:
                raise SpecError.at(
                    "duplicate key",
                    file=source.file,
                    line=line,
                    column=column,
                    key_path=child,
                    found=f"{key!r} a second time",
                )
            source.key_positions[child] = (line, column)
            out[key] = self.build(value_node, child)
        return out

    def scalar(self, node: yaml.ScalarNode, path: KeyPath) -> Any:
        loader = self.loader
        constructor = loader.yaml_constructors.get(node.tag)
        if constructor is None:
            raise self.source.error(
                "unsupported YAML tag",
                path,
                found=node.tag,
                accepted="plain scalars, lists, mappings",
            )
        try:
            return constructor(loader, node)
        except ValueError as exc:  # an integer too long to read
            raise self.source.error(
                f"cannot read this value ({exc})",
                path,
                found=f"{node.value[:40]}...",
                accepted="numbers of at most 40 digits",
            ) from None


def _too_large(size: int, file: str) -> SpecError:
    return SpecError.at(
        f"file too large ({size:,} bytes)", file=file, accepted=f"at most {MAX_BYTES:,} bytes"
    )


def _read_text(path: Path) -> str:
    try:
        if path.is_file() and path.stat().st_size > MAX_BYTES:
            raise _too_large(path.stat().st_size, str(path))
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError.at("file not found", file=str(path)) from None
    except IsADirectoryError:
        raise SpecError.at("is a directory, expected a file", file=str(path)) from None
    except UnicodeDecodeError as exc:
        raise SpecError.at(f"not UTF-8 text ({exc.reason})", file=str(path)) from None
    except OSError as exc:
        raise SpecError.at(f"cannot read file ({exc.strerror})", file=str(path)) from None


def parse_yaml(text: str, file: str = "<input>") -> Source:
    """Parse YAML text with a safe loader, keeping positions. Raises SpecError when malformed."""
    if len(text) > MAX_BYTES:
        raise _too_large(len(text), file)
    source = Source(data=None, file=file, key_positions={}, value_positions={})
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise SpecError.at(
            f"malformed YAML: {exc.problem or exc.context}",
            file=file,
            line=mark.line + 1 if mark else None,
            column=mark.column + 1 if mark else None,
        ) from None
    except yaml.YAMLError as exc:
        raise SpecError.at(f"malformed YAML: {exc}", file=file) from None
    if node is None:
        raise SpecError.at("the file is empty", file=file, accepted="a YAML mapping")
    data = _Builder(source).build(node, ())
    return Source(data, file, source.key_positions, source.value_positions)


def parse_json(text: str, file: str = "<input>") -> Source:
    """Parse JSON text; positions come from the same node walk (JSON is YAML's flow subset).
    Nesting deeper than :data:`MAX_DEPTH` and the non-standard constants ``NaN`` and
    ``Infinity`` (which Python's json accepts) are SpecErrors."""
    if len(text) > MAX_BYTES:
        raise _too_large(len(text), file)
    _check_json_nesting(text, file)
    try:
        data = json.loads(text, parse_constant=lambda name: _non_finite(text, name, file))
    except json.JSONDecodeError as exc:
        raise SpecError.at(
            f"malformed JSON: {exc.msg}", file=file, line=exc.lineno, column=exc.colno
        ) from None
    except ValueError as exc:  # an integer longer than Python reads from text
        raise SpecError.at(
            "malformed JSON: a number too long to read",
            file=file,
            found=str(exc).split(";")[0],
            accepted="numbers of at most 4300 digits",
        ) from None
    try:
        positioned = parse_yaml(text.replace("\t", " "), file)
    except SpecError:
        return Source(data, file, {}, {})
    return Source(data, file, positioned.key_positions, positioned.value_positions)


_JSON_STRUCTURE = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _check_json_nesting(text: str, file: str) -> None:
    """A SpecError at the first bracket nested more than MAX_DEPTH deep (json.loads would
    recurse into it), found in one pass over the text that skips strings."""
    level = 0
    for match in _JSON_STRUCTURE.finditer(text):
        token = match.group()
        if token in "[{":
            level += 1
            if level > MAX_DEPTH:
                line = text.count("\n", 0, match.start()) + 1
                column = match.start() - text.rfind("\n", 0, match.start())
                raise SpecError.at(
                    f"nested more than {MAX_DEPTH} levels deep", file=file, line=line, column=column
                )
        elif token in "]}":
            level -= 1


def _non_finite(text: str, name: str, file: str) -> float:
    at = re.search(rf"(?<![\w\"]){re.escape(name)}(?![\w\"])", text)
    line = text.count("\n", 0, at.start()) + 1 if at else None
    raise SpecError.at(
        f"{name} is not a JSON number", file=file, line=line, accepted="finite numbers"
    )


def read_yaml(path: str | Path) -> Source:
    path = Path(path)
    return parse_yaml(_read_text(path), str(path))


def read_json(path: str | Path) -> Source:
    path = Path(path)
    return parse_json(_read_text(path), str(path))
