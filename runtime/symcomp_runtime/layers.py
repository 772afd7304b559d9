r"""Layer references in parameter patterns (no torch: the spec checker reads them too).

A parameter pattern names a layer three ways: ``layers.3.x`` (that layer), ``layers.*.x`` (the
layer of the parameter being moved: every layer for a group per model), ``layers.{i}.x``,
``layers.{i+1}.x``, ``layers.{i-1}.x`` (relative to the unit's layer ``i``, for a group per
layer or finer). A group's units are the layers where every relative reference exists.
"""

from __future__ import annotations

import re

__all__ = ["RELATIVE", "at_layer", "offset_of", "reach"]

RELATIVE = re.compile(r"layers\.\{i(?:([+-])(\d+))?\}\.")


def offset_of(match: re.Match[str]) -> int:
    sign, digits = match.group(1), match.group(2)
    return 0 if sign is None else (int(digits) if sign == "+" else -int(digits))


def reach(patterns) -> tuple[int, int]:
    """(lowest, highest) offset of the relative layer references in ``patterns``."""
    offsets = [offset_of(m) for p in patterns for m in RELATIVE.finditer(p)] or [0]
    return min(offsets), max(offsets)


def at_layer(pattern: str, layer: int | None) -> str:
    """``pattern`` with its relative references (``{i}``, ``{i+1}``, ...) resolved at ``layer``
    (a unit's layer); unchanged when ``layer`` is None."""
    if layer is None:
        return pattern
    return RELATIVE.sub(lambda m: f"layers.{layer + offset_of(m)}.", pattern)
