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


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-5`` as a float (YAML 1.1 wants ``1.0e-5``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


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


def _build(node: yaml.Node, path: KeyPath, source: Source) -> Any:
    source.value_positions[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if not isinstance(node, yaml.ScalarNode) and node.tag not in _COLLECTION_TAGS:
        raise source.error(
            "unsupported YAML tag", path, found=node.tag, accepted="plain scalars, lists, mappings"
        )
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise source.error("YAML merge keys (<<) are not supported in a spec", path)
            key = (
                _Loader.construct_scalar(_Loader(""), key_node)
                if isinstance(key_node, yaml.ScalarNode)
                else None
            )
            if not isinstance(key, str):
                raise SpecError.at(
                    "mapping keys must be plain strings",
                    file=source.file,
                    line=key_node.start_mark.line + 1,
                    column=key_node.start_mark.column + 1,
                    key_path=path,
                )
            child = (*path, key)
            if key in out:
                raise SpecError.at(
                    "duplicate key",
                    file=source.file,
                    line=key_node.start_mark.line + 1,
                    column=key_node.start_mark.column + 1,
                    key_path=child,
                    found=f"{key!r} a second time",
                )
            source.key_positions[child] = (
                key_node.start_mark.line + 1,
                key_node.start_mark.column + 1,
            )
            out[key] = _build(value_node, child, source)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*path, i), source) for i, item in enumerate(node.value)]
    assert isinstance(node, yaml.ScalarNode), f"unexpected YAML node {node!r}"
    loader = _Loader("")
    constructor = loader.yaml_constructors.get(node.tag)
    if constructor is None:
        raise source.error(
            "unsupported YAML tag", path, found=node.tag, accepted="plain scalars, lists, mappings"
        )
    return constructor(loader, node)


def _read_text(path: Path) -> str:
    try:
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
    data = _build(node, (), source)
    return Source(data, file, source.key_positions, source.value_positions)


def parse_json(text: str, file: str = "<input>") -> Source:
    """Parse JSON text; positions come from the same node walk (JSON is YAML's flow subset)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError.at(
            f"malformed JSON: {exc.msg}", file=file, line=exc.lineno, column=exc.colno
        ) from None
    try:
        positioned = parse_yaml(text.replace("\t", " "), file)
    except SpecError:
        return Source(data, file, {}, {})
    return Source(data, file, positioned.key_positions, positioned.value_positions)


def read_yaml(path: str | Path) -> Source:
    path = Path(path)
    return parse_yaml(_read_text(path), str(path))


def read_json(path: str | Path) -> Source:
    path = Path(path)
    return parse_json(_read_text(path), str(path))
