"""Per-layer groups declared once: concrete-layer copies folded into relative layer references.

In a post-norm stack the norm of layer ``l`` is read by layer ``l + 1``, so one action per unit
cannot be written with ``layers.*.`` (the layer of the parameter being moved): the catalogue
writes one copy per layer, each naming its parameters in full (``layers.3.mlp_norm.bias``,
``layers.4.attn.b_Q``). This pass rewrites every copy relative to its lowest layer ``i``
(``layers.{i}.mlp_norm.bias``, ``layers.{i+1}.attn.b_Q``) and merges the copies whose relative
form agrees into one group per layer. Its units are the layers where every reference exists
(``0 <= i + offset < L``); when the copies cover only some of them (the first layer, read by the
embedding norm; the last, read by the head), the group lists those layers, counted from the end
when they sit in the second half (``-1``: the last layer), so that a package compiled at one depth
runs at any other.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from symcomp_runtime.layers import reach, unit_layers

from symcomp.spec.model import CustomGroup

_INDEX = re.compile(r"layers\.(\d+)\.")
_NAMED_LAYER = re.compile(r"_layers_(?:\d+|i)_")  # a copy's name tags the layer it is of


def _relative(text: str, base: int) -> str:
    def ref(m: re.Match[str]) -> str:
        d = int(m.group(1)) - base
        return "layers.{i}." if d == 0 else f"layers.{{i{d:+d}}}."

    return _INDEX.sub(ref, text)


def _base(group: CustomGroup) -> int | None:
    """The lowest layer a concrete copy names, or None when it is not one (``*`` targets)."""
    texts = [t + " " + x for t, x in group.acts.items()]
    if group.per != "model" or any("*" in t or "{i" in t for t in texts):
        return None
    found = [int(m.group(1)) for t in texts for m in _INDEX.finditer(t)]
    return min(found) if found else None


def _tag(layers: tuple[int, ...] | None) -> str:
    if layers is None:
        return "i"
    return "_".join("last" if i == -1 else (f"m{-i}" if i < 0 else str(i)) for i in layers)


def fold_layers(
    copies: Sequence[tuple[CustomGroup, str]], depth: int
) -> tuple[tuple[CustomGroup, str], ...]:
    """``copies`` (group, catalogue id) with the concrete-layer copies of each group folded into
    per-layer groups with relative references; ``depth`` is the spec's number of layers."""
    out: list[tuple[CustomGroup, str]] = []
    folded: dict[tuple, tuple[int, list[int]]] = {}
    for group, cid in copies:
        base = _base(group)
        if base is None:
            out.append((group, cid))
            continue
        acts = {_relative(t, base): _relative(text, base) for t, text in group.acts.items()}
        name = _NAMED_LAYER.sub("_layers_i_", group.name)
        rest = group.model_dump_json(exclude={"acts", "name"})
        key = (name, cid, tuple(acts.items()), rest)
        if key not in folded:
            folded[key] = (len(out), [])
            out.append((group, cid))  # a placeholder, replaced below
        folded[key][1].append(base)
    for (name, cid, acts, _), (slot, bases) in folded.items():
        group = out[slot][0]
        every = unit_layers(None, reach([t for t, _ in acts] + [text for _, text in acts]), depth)
        listed = tuple(b if 2 * b < depth else b - depth for b in sorted(bases))
        layers = None if sorted(bases) == every else listed
        update = {
            "name": name.replace("_layers_i_", f"_layers_{_tag(layers)}_"),
            "per": "layer",
            "acts": dict(acts),
            "layers": None if layers is None else list(layers),
        }
        out[slot] = (group.model_copy(update=update), cid)
    names = [group.name for group, _ in out]
    clashes = sorted({name for name in names if names.count(name) > 1})
    assert not clashes, f"groups with the same name: {', '.join(clashes)}"
    return tuple(out)
