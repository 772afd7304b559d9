"""Spec text: the printer whose output parses back to the same tree (``parse(print(e)) == e``)."""

from __future__ import annotations

from symcomp.lang.nodes import BinOp, Call, Expr, Inverse, Name, Neg, Number, Power, Transpose
from symcomp.lang.printer import Printer

# How tightly each construct binds; a child that binds less tightly than its place needs gets ().
BINARY = {"+": 1, "-": 1, "*": 2, "/": 2, "@": 2}
NEG, POSTFIX, ATOM = 3, 4, 5
_PRECEDENCE: dict[type, int] = {
    Neg: NEG,
    Transpose: POSTFIX,
    Inverse: POSTFIX,
    Power: POSTFIX,
    Number: ATOM,
    Name: ATOM,
    Call: ATOM,
}


def precedence(node: Expr) -> int:
    """The binding strength of ``node``'s text (a negative number reads like a negation)."""
    if isinstance(node, BinOp):
        return BINARY[node.op]
    if isinstance(node, Number) and node.value < 0:
        return NEG
    return next(_PRECEDENCE[cls] for cls in type(node).__mro__ if cls in _PRECEDENCE)


class SpecPrinter(Printer):
    """The spec language's own text, products written by juxtaposition."""

    def parenthesize(self, node: Expr, at_least: int) -> str:
        """The text of ``node``, parenthesized unless it binds at least as tightly as needed."""
        text = self._print(node)
        return text if precedence(node) >= at_least else f"({text})"

    def _print_Number(self, node: Number) -> str:
        value = node.value
        return str(int(value)) if value.is_integer() else repr(value)

    def _print_Name(self, node: Name) -> str:
        return node.name

    def _print_Call(self, node: Call) -> str:
        return f"{node.func}({', '.join(self._print(a) for a in node.args)})"

    def _print_BinOp(self, node: BinOp) -> str:
        level = BINARY[node.op]
        left = self.parenthesize(node.left, level)
        # left-associative: the same level on the right needs ()
        right = self.parenthesize(node.right, level + 1)
        if node.op != "@":
            return f"{left} {node.op} {right}"
        # 'a -b' would read as a subtraction, so a negated right factor keeps its parentheses
        return f"{left} ({right})" if right.startswith("-") else f"{left} {right}"

    def _print_Neg(self, node: Neg) -> str:
        return f"-{self.parenthesize(node.operand, NEG)}"

    def _print_Transpose(self, node: Transpose) -> str:
        if isinstance(node.operand, Inverse):
            return f"{self.parenthesize(node.operand.operand, POSTFIX)}^-T"
        return f"{self.parenthesize(node.operand, POSTFIX)}^T"

    def _print_Inverse(self, node: Inverse) -> str:
        return f"{self.parenthesize(node.operand, POSTFIX)}^-1"

    def _print_Power(self, node: Power) -> str:
        exponent = self._print(Number(node.exponent))
        return f"{self.parenthesize(node.operand, POSTFIX)}^{exponent}"


def unparse(expr: Expr) -> str:
    """Text that parses back to ``expr`` (juxtaposition for products)."""
    return SpecPrinter().doprint(expr)
