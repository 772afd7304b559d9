r"""Which parameters a unit sees: layer references in parameter patterns, and the per-head and
per-neuron cuts (no torch: the spec checker reads them too).

A parameter pattern names a layer three ways: ``layers.3.x`` (that layer), ``layers.*.x`` (the
layer of the parameter being moved: every layer for a group per model), ``layers.{i}.x``,
``layers.{i+1}.x``, ``layers.{i-1}.x`` (relative to the unit's layer ``i``, for a group per
layer or finer). A group's units are the layers where every relative reference exists.
"""

from __future__ import annotations

import re

__all__ = [
    "HEAD_SLICED",
    "NEURON_SLICED",
    "Q_SLICED",
    "RELATIVE",
    "at_layer",
    "offset_of",
    "reach",
    "unit_layers",
]

# local parameter name -> the axis (of its 2-D form) that per-head and per-neuron units cut
HEAD_SLICED: dict[str, int] = {
    "attn.W_Q": 1,
    "attn.b_Q": 1,
    "attn.W_K": 1,
    "attn.b_K": 1,
    "attn.W_V": 1,
    "attn.b_V": 1,
    "attn.W_O": 0,
    "attn.q_norm.gain": 1,  # a query norm's gain over all heads (full-width QK-norm)
    "attn.k_norm.gain": 1,
}
Q_SLICED = ("attn.W_Q", "attn.b_Q", "attn.W_O", "attn.q_norm.gain")
NEURON_SLICED = {"mlp.W_up": 1, "mlp.b_up": 1, "mlp.W_gate": 1, "mlp.b_gate": 1, "mlp.W_down": 0}


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


def unit_layers(layers, span: tuple[int, int], depth: int) -> list[int]:
    """The layers a group per layer (or finer) has units in: those ``layers`` lists (negative:
    from the end; None: all) where every relative reference, offsets ``span``, exists."""
    low, high = span
    listed = range(depth) if layers is None else (i + depth if i < 0 else i for i in layers)
    return [i for i in listed if 0 <= i < depth and i + low >= 0 and i + high < depth]
