"""Size expressions as numbers: numbers, size names, arithmetic, ``sqrt`` and ``sum``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from symcomp.lang.nodes import BinOp, Call, Expr, Inverse, Name, Neg, Number, Power, Transpose
from symcomp.lang.parser import ExprError
from symcomp.lang.printer import Printer


class ScalarEvaluator(Printer):
    """Evaluates a size expression to a float; ``env`` maps each size name to its value."""

    def __init__(self, env: Mapping[str, float], settings: Mapping[str, Any] | None = None):
        super().__init__(settings)
        self.env = env

    def _print_Number(self, node: Number) -> float:
        return node.value

    def _print_Name(self, node: Name) -> float:
        if node.name not in self.env:
            raise ExprError(f"unknown name {node.name!r}", node.pos, ", ".join(sorted(self.env)))
        return float(self.env[node.name])

    def _print_Neg(self, node: Neg) -> float:
        return -self._print(node.operand)

    def _print_Transpose(self, node: Transpose) -> float:
        return self._print(node.operand)

    def _print_Inverse(self, node: Inverse) -> float:
        return self._power(node, -1.0)

    def _print_Power(self, node: Power) -> float:
        return self._power(node, node.exponent)

    def _power(self, node: Inverse | Power, exponent: float) -> float:
        base = self._print(node.operand)
        try:
            value = base**exponent
        except (ZeroDivisionError, OverflowError):
            raise ExprError(f"cannot evaluate {node}", node.pos) from None
        if isinstance(value, complex):
            raise ExprError(f"{node} is not a real number", node.pos)
        return float(value)

    def _print_BinOp(self, node: BinOp) -> float:
        a, b = self._print(node.left), self._print(node.right)
        if node.op == "+":
            return a + b
        if node.op == "-":
            return a - b
        if node.op == "/":
            if b == 0:
                raise ExprError("division by zero", node.pos)
            return a / b
        return a * b

    def _print_Call(self, node: Call) -> float:
        if node.func == "sqrt":
            value = self._print(node.args[0])
            if value < 0:
                raise ExprError(f"sqrt of a negative number ({value:g})", node.pos)
            return math.sqrt(value)
        if node.func == "sum":
            return self._print(node.args[0])
        raise ExprError(
            f"{node.func} is not allowed in a size expression", node.pos, "sqrt, sum, arithmetic"
        )


def evaluate_scalar(expr: Expr, env: Mapping[str, float]) -> float:
    """Evaluate a size expression: numbers, the names in ``env``, arithmetic, sqrt, sum. The
    value is finite (an overflow or ``0 * inf`` is an :class:`ExprError`)."""
    value = ScalarEvaluator(env).doprint(expr)
    if not math.isfinite(value):
        raise ExprError(f"{expr} is not a finite number ({value})", None, "a finite value")
    return value


def evaluate_size_int(expr: Expr, sizes: Mapping[str, float], *, zero: bool = False) -> int:
    """A size expression that must be a positive integer (group sizes, ones(n), eye(n)), or
    with ``zero`` a non-negative one (an index)."""
    value = evaluate_scalar(expr, sizes)
    low = 0 if zero else 1
    if not (math.isfinite(value) and value >= low and abs(value - round(value)) < 1e-9):
        what = "a non-negative integer" if zero else "a positive integer"
        raise ExprError(f"{expr} is {value:g}, not {what}", None, what)
    return round(value)
