"""Read the form of a group's action on one parameter off its expression in the spec language.

``X f(E)``, ``f(E) X`` and ``(c + X) f(E) - c``, with ``f(E)`` one of ``E``, ``E^-1``, ``E^T``,
``E^-T`` (``diag(s)``, ``diag(s)^-1`` for scalings): the chart fixes a gauge on such an anchor,
and the quotient's preconditioner knows the Gram matrix of such a move in closed form.
"""

from __future__ import annotations

from symcomp.lang import BinOp, Call, Expr, Inverse, Name, Number, Transpose, parse_expr


def element_form(node: Expr, element: str, scaling: bool) -> str | None:
    """``E``, ``E^-1``, ``E^T`` or ``E^-T`` when ``node`` is that function of the element."""
    if scaling:  # diag(s); or s itself, a unit of one neuron's scalar (per: neuron, size 1)
        if node == Name(element) or (
            isinstance(node, Call) and node.func == "diag" and node.args == (Name(element),)
        ):
            return "E"
        if isinstance(node, Inverse) and element_form(node.operand, element, True) == "E":
            return "E^-1"
        return None
    if node == Name(element):
        return "E"
    if isinstance(node, Inverse) and node.operand == Name(element):
        return "E^-1"
    if isinstance(node, Transpose):
        if node.operand == Name(element):
            return "E^T"
        if isinstance(node.operand, Inverse) and node.operand.operand == Name(element):
            return "E^-T"
    return None


def is_self(node: Expr, target: str) -> tuple[bool, float]:
    """Whether ``node`` is the target itself, or ``c + target`` (then c)."""
    short = target.rsplit(".", 1)[-1]
    if isinstance(node, Name) and node.name in (short, target):
        return True, 0.0
    if isinstance(node, BinOp) and node.op == "+" and isinstance(node.left, Number):
        ok, _ = is_self(node.right, target)
        return ok, node.left.value if ok else 0.0
    return False, 0.0


Form = tuple[str, str, float]  # (side, f(E), offset)


def multiplicative_form(kind: str, element: str, target: str, text: str) -> Form | None:
    """(side, form, offset) of an action ``X f(E)``, ``f(E) X`` or ``(c + X) f(E) - c``."""
    expr = parse_expr(text)
    offset = 0.0
    if isinstance(expr, BinOp) and expr.op == "-" and isinstance(expr.right, Number):
        offset, expr = expr.right.value, expr.left
    if not (isinstance(expr, BinOp) and expr.op == "@"):
        return None
    scaling = kind == "scaling"
    for side, x, e in (("right", expr.left, expr.right), ("left", expr.right, expr.left)):
        found, c = is_self(x, target)
        form = element_form(e, element, scaling)
        if found and form is not None and c == offset:
            return side, form, offset
    return None
