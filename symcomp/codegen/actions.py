"""Pass: render each symmetry group's action, written in the spec language, as torch source.

An action ``{target pattern: expression}`` becomes one Python expression per target, over
``v("<parameter pattern>")`` (the unit's 2-D view of a parameter, resolved at run time
relative to the target's layer), the group element and the sizes ``S``. The expression
language is small (see :mod:`symcomp.lang`), so rendering is its torch source printer;
``symcomp_runtime.actions`` defines the few helpers (``mm``, ``inv``, ...) the
rendered code calls. Names are resolved here, once, on a concrete instance of the target.
"""

from __future__ import annotations

from dataclasses import dataclass

from symcomp.codegen.forms import Form, is_self, multiplicative_form
from symcomp.errors import CodegenError
from symcomp.lang import BinOp, Expr, TorchSourcePrinter, iter_names, parse_expr, unparse
from symcomp.spec.model import DEFAULT_ELEMENT, Architecture, CustomGroup
from symcomp.spec.params import Sizes
from symcomp.symmetry.engine import ActionError, group_reach, resolved_names

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


def _torch_source(expr: Expr, names: dict[str, str], element: str) -> str:
    """``expr`` as torch source; ``names`` maps spec names to parameter patterns."""
    settings = {"names": names, "element": element, "size_names": SIZE_NAMES}
    return TorchSourcePrinter(settings).doprint(expr)


def render_act(group: CustomGroup, target: str, text: str, arch: Architecture) -> ActCode | None:
    """One action target rendered; None when the pattern matches no parameter here."""
    element = group.element or DEFAULT_ELEMENT[group.group]
    expr = parse_expr(text)
    try:
        found = resolved_names(group, target, expr, arch)  # as the engine resolves them
    except ActionError as exc:
        raise RenderError(str(exc)) from None
    if found is None:
        return None
    names = found[1]
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
        reach=group_reach(group),
    )
