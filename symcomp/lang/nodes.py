"""The nodes of the expression language: one frozen dataclass per construct, and tree helpers.

``pos`` is a node's offset in the source text; it is left out of equality so that two parses of
differently spaced text compare equal. ``str(node)`` is its spec text (:class:`SpecPrinter`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field


class Node:
    """The base of the node classes; printers dispatch on the concrete class's name."""

    __slots__ = ()

    def __str__(self) -> str:
        from symcomp.lang.spec_printer import SpecPrinter

        return SpecPrinter().doprint(self)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Number(Node):
    value: float
    pos: int | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Name(Node):
    name: str
    pos: int | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Call(Node):
    func: str
    args: tuple[Expr, ...]
    pos: int | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class BinOp(Node):
    """``op`` is one of ``+ - * / @`` (``@`` also stands for juxtaposition)."""

    op: str
    left: Expr
    right: Expr
    pos: int | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Neg(Node):
    operand: Expr
    pos: int | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Transpose(Node):
    operand: Expr
    pos: int | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Inverse(Node):
    operand: Expr
    pos: int | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Power(Node):
    """Elementwise power by a constant exponent (never -1: that is :class:`Inverse`)."""

    operand: Expr
    exponent: float
    pos: int | None = field(default=None, compare=False, repr=False)


Expr = Number | Name | Call | BinOp | Neg | Transpose | Inverse | Power
NODE_CLASSES: tuple[type[Node], ...] = (Number, Name, Call, BinOp, Neg, Transpose, Inverse, Power)


def children(expr: Expr) -> tuple[Expr, ...]:
    """The direct subexpressions of ``expr``, left to right."""
    if isinstance(expr, BinOp):
        return (expr.left, expr.right)
    if isinstance(expr, Call):
        return expr.args
    if isinstance(expr, Neg | Transpose | Inverse | Power):
        return (expr.operand,)
    return ()


def walk(expr: Expr) -> Iterator[Expr]:
    """Every node of ``expr`` in reading order (pre-order), without recursion."""
    stack = [expr]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(children(node)))


def depth(expr: Expr) -> int:
    """The number of levels of ``expr``'s tree (a leaf has 1), without recursion."""
    deepest, stack = 0, [(expr, 1)]
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children(node))
    return deepest


def iter_names(expr: Expr) -> list[Name]:
    """The :class:`Name` nodes of ``expr`` in reading order, with their positions."""
    return [node for node in walk(expr) if isinstance(node, Name)]


def free_names(expr: Expr) -> frozenset[str]:
    """Every name the expression reads (function names excluded)."""
    return frozenset(node.name for node in iter_names(expr))
