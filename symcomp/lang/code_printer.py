"""Python source for generated packages: group actions over torch (:class:`TorchSourcePrinter`)
and size expressions over the sizes object ``s`` (:class:`SizeCodePrinter`)."""

from __future__ import annotations

from typing import Any, ClassVar

from symcomp.lang.nodes import BinOp, Call, Expr, Inverse, Name, Neg, Number, Power, Transpose
from symcomp.lang.printer import Printer


class TorchSourcePrinter(Printer):
    """Torch source for one action, in the helpers of the generated runtime (``mm``, ``inv``,
    ``T``, ``diag``, ``total``, ...).

    Settings: ``names`` maps a spec name to the parameter pattern read as ``v("<pattern>")``;
    ``element`` is the group element's name, printed as itself; a name in ``size_names`` is
    read from the instance's sizes as ``S["<name>"]``. Every binary operation is parenthesized.
    """

    _default_settings: ClassVar[dict[str, Any]] = {
        "names": {},
        "element": "",
        "size_names": frozenset(),
    }

    def _print_Number(self, node: Number) -> str:
        value = node.value
        return repr(int(value)) if float(value).is_integer() else repr(float(value))

    def _print_Name(self, node: Name) -> str:
        if node.name == self._settings["element"]:
            return self._settings["element"]
        if node.name in self._settings["size_names"]:
            return f'S["{node.name}"]'
        return f'v("{self._settings["names"][node.name]}")'

    def _print_Neg(self, node: Neg) -> str:
        return f"-{self.parenthesize(node.operand)}"

    def _print_Transpose(self, node: Transpose) -> str:
        return f"T({self._print(node.operand)})"

    def _print_Inverse(self, node: Inverse) -> str:
        operand = node.operand
        if isinstance(operand, Call) and operand.func == "diag":  # elementwise, no solve
            return f"diag(1.0 / {self.parenthesize(operand.args[0])})"
        return f"inv({self._print(operand)})"

    def _print_Power(self, node: Power) -> str:
        return f"{self.parenthesize(node.operand)} ** {node.exponent!r}"

    def _print_BinOp(self, node: BinOp) -> str:
        a, b = self._print(node.left), self._print(node.right)
        if node.op == "@":
            return f"mm({a}, {b})"
        return f"({a} {node.op} {b})"

    def _print_Call(self, node: Call) -> str:
        if node.func in ("ones", "eye", "unit"):
            size = TorchSourcePrinter({"size_names": self._settings["size_names"]})
            args = ", ".join(f"int({size.doprint(a)})" for a in node.args)
            return f"{node.func}({args})"
        args = ", ".join(self._print(a) for a in node.args)
        return f"{'total' if node.func == 'sum' else node.func}({args})"

    def parenthesize(self, node: Expr) -> str:
        """The source of ``node`` as an operand of ``-`` or ``**``."""
        text = self._print(node)
        simple = isinstance(node, Name | Number | Call | Transpose | Inverse | BinOp)
        return text if simple else f"({text})"


# precedence levels of Python source: + - < * / < unary - < ** < atoms
_BINARY = {"+": 1, "-": 1, "*": 2, "/": 2, "@": 2}
_NEG, _POWER, _ATOM = 3, 4, 5


class SizeCodePrinter(Printer):
    """Python for a size expression over the sizes ``s`` (``s.width``, ``math.sqrt``), products
    written with ``*``. Each ``_print_X`` gives (source, precedence level)."""

    def doprint(self, node: Expr) -> str:
        return self._print(node)[0]

    def parenthesize(self, node: Expr, at_least: int) -> str:
        """The source of ``node``, parenthesized unless it binds at least as tightly as needed."""
        text, level = self._print(node)
        return text if level >= at_least else f"({text})"

    def _print_Number(self, node: Number) -> tuple[str, int]:
        value = node.value
        text = str(int(value)) if float(value).is_integer() else repr(float(value))
        return text, (_NEG if value < 0 else _ATOM)

    def _print_Name(self, node: Name) -> tuple[str, int]:
        return f"s.{node.name}", _ATOM

    def _print_Neg(self, node: Neg) -> tuple[str, int]:
        return "-" + self.parenthesize(node.operand, _NEG), _NEG

    def _print_Transpose(self, node: Transpose) -> tuple[str, int]:
        return self._print(node.operand)

    def _print_Inverse(self, node: Inverse) -> tuple[str, int]:
        return "1 / " + self.parenthesize(node.operand, _NEG), _BINARY["/"]

    def _print_Power(self, node: Power) -> tuple[str, int]:
        base, level = self._print(node.operand)
        exponent, _ = self._print(Number(node.exponent))
        base = base if level >= _ATOM else f"({base})"
        simple = isinstance(node.operand, Name | Number)
        return (f"{base}**{exponent}" if simple else f"{base} ** {exponent}"), _POWER

    def _print_BinOp(self, node: BinOp) -> tuple[str, int]:
        level = _BINARY[node.op]
        op = "*" if node.op == "@" else node.op
        left = self.parenthesize(node.left, level)
        return f"{left} {op} {self.parenthesize(node.right, level + 1)}", level

    def _print_Call(self, node: Call) -> tuple[str, int]:
        if node.func == "sqrt":
            return f"math.sqrt({self.doprint(node.args[0])})", _ATOM
        if node.func == "sum":
            return self._print(node.args[0])
        raise NotImplementedError(f"{node.func} in a size expression")
