"""Pass: render each symmetry group's action, written in the spec language, as torch source.

An action ``{target pattern: expression}`` becomes one Python expression per target, over
``v("<parameter pattern>")`` (the unit's 2-D view of a parameter, resolved at run time
relative to the target's layer), the group element and the sizes ``S``. The expression
language is small (see :mod:`symcomp.lang`), so rendering is its torch source printer;
``symcomp_runtime.actions`` defines the few helpers (``mm``, ``inv``, ...) the
rendered code calls. Names are resolved here, once, on a concrete instance of the target.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from symcomp_runtime.actions import RELATIVE, at_layer, reach

from symcomp.codegen.forms import Form, is_self, multiplicative_form
from symcomp.errors import CodegenError
from symcomp.lang import BinOp, Expr, TorchSourcePrinter, iter_names, parse_expr, unparse
from symcomp.spec.groups import resolve_name
from symcomp.spec.model import DEFAULT_ELEMENT, Architecture, CustomGroup
from symcomp.spec.params import Sizes, parameter_shapes

_LAYER_PREFIX = re.compile(r"^layers\.(\d+)\.")
SIZE_NAMES = frozenset(Sizes.__dataclass_fields__)


@dataclass(frozen=True)
class ActCode:
    """One target of an action: its pattern, the rendered source and the spec text."""

    target: str
    source: str
    text: str
    form: Form | None = None  # (side, f(E), offset) of a multiplicative action X f(E), f(E) X
    shift: bool = False  # X + g(E), g reading no parameter: the move is the same from every X


@dataclass(frozen=True)
class GroupCode:
    """A group as the generated package sees it."""

    name: str
    catalogue_id: str
    kind: str
    per: str
    size: str  # python source over S
    element: str
    positive: bool
    fixes_ones: bool
    commutes_with_rope: bool
    layers: tuple[int, ...] | None
    acts: tuple[ActCode, ...]
    reach: tuple[int, int] = (0, 0)  # offsets of its relative layer references


class RenderError(CodegenError):
    """An action the generator cannot render (a name that resolves to no parameter)."""


def size_source(expr: Expr | str | int) -> str:
    """A size expression as python over the instance's sizes ``S``."""
    if isinstance(expr, int):
        return str(expr)
    if isinstance(expr, str):
        expr = parse_expr(expr)
    return _torch_source(expr, names={}, element="")


def _concrete(pattern: str, params: dict[str, tuple[int, ...]]) -> str | None:
    """A parameter that ``pattern`` (``*`` for a layer) matches: layer 0's, or the pattern."""
    regex = re.compile(re.escape(pattern).replace(r"\*", r"\d+"))
    return next((name for name in params if regex.fullmatch(name)), None)


def _as_pattern(path: str, target: str, layer: int | None) -> str:
    """``layers.<l>.x`` -> ``layers.*.x`` when ``l`` is the target's own layer, and relative to
    the unit's ``layer`` (``layers.{i+1}.x``) for a group with relative references."""
    m, t = _LAYER_PREFIX.match(path), _LAYER_PREFIX.match(target)
    if m and t and m.group(1) == t.group(1):
        return "layers.*." + path[m.end() :]
    if m and layer is not None:
        d = int(m.group(1)) - layer
        return ("layers.{i}." if d == 0 else f"layers.{{i{d:+d}}}.") + path[m.end() :]
    return path


def first_unit_layer(group: CustomGroup, arch: Architecture) -> int | None:
    """The layer of the group's first unit when it has relative references (the instance its
    actions are resolved on), else None."""
    if group.per == "model" or not any(RELATIVE.search(t + x) for t, x in group.acts.items()):
        return None
    low, high = reach([t + " " + x for t, x in group.acts.items()])
    L = arch.layers
    listed = range(L) if group.layers is None else [i % L for i in group.layers]
    return next((i for i in listed if i + low >= 0 and i + high < L), None)


def _torch_source(expr: Expr, names: dict[str, str], element: str) -> str:
    """``expr`` as torch source; ``names`` maps spec names to parameter patterns."""
    settings = {"names": names, "element": element, "size_names": SIZE_NAMES}
    return TorchSourcePrinter(settings).doprint(expr)


def render_act(group: CustomGroup, target: str, text: str, arch: Architecture) -> ActCode | None:
    """One action target rendered; None when the pattern matches no parameter here."""
    params = parameter_shapes(arch)
    layer = first_unit_layer(group, arch)
    concrete = _concrete(at_layer(target, layer), params)
    if concrete is None:
        return None
    element = group.element or DEFAULT_ELEMENT[group.group]
    expr = parse_expr(text)
    names: dict[str, str] = {}
    for name in dict.fromkeys(n.name for n in iter_names(expr)):
        if name == element or name in SIZE_NAMES:
            continue
        path = resolve_name(at_layer(name, layer), concrete, params)
        if path is None:
            raise RenderError(f"{group.name}: {name!r} in the action on {target} names nothing")
        names[name] = _as_pattern(path, concrete, layer)
    source = _torch_source(expr, names, element)
    form = multiplicative_form(group.group, element, target, text)
    shift = moves_by_constant(expr, element, target)
    return ActCode(target=target, source=source, text=unparse(expr), form=form, shift=shift)


def moves_by_constant(expr: Expr, element: str, target: str) -> bool:
    """Whether an action is ``X + g``, ``g + X`` or ``X - g`` (X the target) with ``g`` a
    function of the element and the sizes alone: a translation whose move does not depend on
    the point it starts from, so the chart can solve its slice once (``gauge.Slice``)."""
    if not (isinstance(expr, BinOp) and expr.op in ("+", "-")):
        return False
    sides = [(expr.left, expr.right)]
    if expr.op == "+":
        sides.append((expr.right, expr.left))
    return any(
        is_self(x, target)[0]
        and all(n.name == element or n.name in SIZE_NAMES for n in iter_names(g))
        for x, g in sides
    )


def render_group(group: CustomGroup, catalogue_id: str, arch: Architecture) -> GroupCode:
    """A group's table entry and rendered actions."""
    acts = tuple(
        act
        for target, text in group.acts.items()
        if (act := render_act(group, target, text, arch)) is not None
    )
    return GroupCode(
        name=group.name,
        catalogue_id=catalogue_id,
        kind=group.group,
        per=group.per,
        size=size_source(group.size),
        element=group.element or DEFAULT_ELEMENT[group.group],
        positive=group.positive,
        fixes_ones="ones" in group.fixes,
        commutes_with_rope="rope" in group.commutes_with,
        layers=tuple(group.layers) if group.layers is not None else None,
        acts=acts,
        reach=reach([t + " " + x for t, x in group.acts.items()]),
    )
