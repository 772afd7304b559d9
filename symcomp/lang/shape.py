"""Shape inference: every value a matrix, a length-n vector a 1 x n row, a scalar 1 x 1.

``+ - * /`` are elementwise and ``@`` (juxtaposition) the matrix product; a 1 x 1 operand
broadcasts against any shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from symcomp.lang.nodes import BinOp, Call, Expr, Inverse, Name, Neg, Number, Power, Transpose
from symcomp.lang.parser import ExprError
from symcomp.lang.printer import Printer
from symcomp.lang.scalar import evaluate_size_int

Shape = tuple[int, int]


class ShapePrinter(Printer):
    """The (rows, cols) of an expression. ``shapes`` gives each name's shape; ``sizes`` the size
    names that ``ones(n)`` and ``eye(n)`` may use. Raises :class:`ExprError` naming both shapes
    on a mismatch."""

    def __init__(
        self,
        shapes: Mapping[str, Shape],
        sizes: Mapping[str, float] | None = None,
        settings: Mapping[str, Any] | None = None,
    ):
        super().__init__(settings)
        self.shapes = shapes
        self.sizes = sizes or {}

    def _print_Number(self, node: Number) -> Shape:
        return (1, 1)

    def _print_Name(self, node: Name) -> Shape:
        if node.name not in self.shapes:
            raise ExprError(f"unknown name {node.name!r}", node.pos, ", ".join(sorted(self.shapes)))
        return self.shapes[node.name]

    def _print_BinOp(self, node: BinOp) -> Shape:
        a, b = self._print(node.left), self._print(node.right)
        if a == (1, 1) or b == (1, 1):
            return b if a == (1, 1) else a
        if node.op == "@":
            if a[1] != b[0]:
                raise ExprError(
                    f"matrix product of {_fmt(a)} and {_fmt(b)}: inner sizes differ",
                    node.pos,
                    f"a left operand with {b[0]} columns",
                )
            return (a[0], b[1])
        if a != b:
            word = {"+": "sum", "-": "difference"}.get(node.op, "elementwise product")
            raise ExprError(
                f"{word} of {_fmt(a)} and {_fmt(b)}: shapes differ", node.pos, "equal shapes"
            )
        return a

    def _print_Neg(self, node: Neg) -> Shape:
        return self._print(node.operand)

    def _print_Power(self, node: Power) -> Shape:
        return self._print(node.operand)

    def _print_Transpose(self, node: Transpose) -> Shape:
        shape = self._print(node.operand)
        return (shape[1], shape[0])

    def _print_Inverse(self, node: Inverse) -> Shape:
        shape = self._print(node.operand)
        if shape[0] != shape[1]:
            raise ExprError(
                f"inverse of a non-square {_fmt(shape)} matrix", node.pos, "a square one"
            )
        return shape

    def _print_Call(self, node: Call) -> Shape:
        if node.func in ("ones", "eye"):
            try:
                n = evaluate_size_int(node.args[0], self.sizes)
            except ExprError as exc:  # point at the call when the size has no position of its own
                pos = node.pos if exc.offset is None else exc.offset
                raise ExprError(f"{node.func}: {exc.message}", pos, exc.accepted) from None
            return (1, n) if node.func == "ones" else (n, n)
        if node.func == "unit":
            return (1, evaluate_size_int(node.args[0], self.sizes))
        args = [self._print(a) for a in node.args]
        if node.func == "diag":
            rows, cols = args[0]
            if min(rows, cols) != 1:
                raise ExprError(f"diag of a {_fmt(args[0])} matrix", node.pos, "a vector")
            return (max(rows, cols),) * 2
        if node.func == "kron":
            (a, b), (c, d) = args
            return (a * c, b * d)
        if node.func == "sum":
            return (1, 1)
        return args[0]  # sqrt


def infer_shape(
    expr: Expr, shapes: Mapping[str, Shape], sizes: Mapping[str, float] | None = None
) -> Shape:
    """The (rows, cols) of ``expr`` (see :class:`ShapePrinter`)."""
    return ShapePrinter(shapes, sizes).doprint(expr)


def _fmt(shape: Shape) -> str:
    return f"{shape[0]} x {shape[1]}"
