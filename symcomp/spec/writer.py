"""Writing a spec back to YAML, and writing any output file atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import yaml

from symcomp.spec.model import Spec


class _Dumper(yaml.SafeDumper):
    """Block style for mappings, flow style for short lists, no aliases."""

    def ignore_aliases(self, data: object) -> bool:
        return True


def dump_spec(spec: Spec, *, header: str = "") -> str:
    """The spec as YAML, keys in schema order; ``load`` of the text gives the spec back."""
    data = spec.model_dump(mode="json")
    body = yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100)
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    return "\n".join([*lines, body]) if lines else body


def write_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename,
    so that a reader never sees half a file and a failure leaves the old file untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
