"""The matrix language's meaning, shared by the evaluators on explicit matrices (torch, SymPy).

Every value is a 2-D matrix; a 1 x 1 one is a scalar:

- ``+ - * /`` are elementwise, and a scalar operand broadcasts against any shape;
- ``@`` (juxtaposition) is the matrix product, and scaling when either side is a scalar;
- ``^T`` transposes; ``^-1`` is the matrix inverse, the reciprocal of a scalar; ``^ p`` is an
  elementwise power;
- ``ones(n)`` is a 1 x n row, ``eye(n)`` the n x n identity (``n`` a size expression);
  ``diag(v)`` the diagonal matrix of a vector's entries, ``kron`` the Kronecker product,
  ``sqrt`` elementwise, ``sum`` the sum of all entries as a scalar.

A backend subclass says how to build and combine its matrices (the ``_scalar``, ``_matmul``,
``_call_<function>``, ... hooks) and how it looks names up (``_print_Name``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from symcomp.lang.nodes import BinOp, Call, Inverse, Neg, Number, Power, Transpose
from symcomp.lang.parser import ExprError
from symcomp.lang.printer import Printer
from symcomp.lang.scalar import evaluate_size_int


class MatrixEvaluator(Printer):
    """Evaluates an expression on matrices. ``names`` maps names to values; ``sizes`` maps the
    size names (read as scalars, and by ``ones(n)``, ``eye(n)``) to integers."""

    def __init__(
        self,
        names: Mapping[str, Any],
        sizes: Mapping[str, int],
        settings: Mapping[str, Any] | None = None,
    ):
        super().__init__(settings)
        self.names = names
        self.sizes = sizes

    # --- what a backend provides ----------------------------------------------------------

    def _scalar(self, value: float) -> Any:
        """A 1 x 1 matrix holding ``value``."""
        raise NotImplementedError

    def _is_scalar(self, x: Any) -> bool:
        return tuple(x.shape) == (1, 1)

    def _broadcast(self, a: Any, b: Any) -> tuple[Any, Any]:
        """The operands of an elementwise operation with a scalar one spread (if the backend
        does not broadcast by itself)."""
        return a, b

    def _elementwise(self, op: str, a: Any, b: Any) -> Any:
        """``a op b`` entry by entry, ``op`` one of ``+ - * /``."""
        raise NotImplementedError

    def _matmul(self, a: Any, b: Any) -> Any:
        raise NotImplementedError

    def _reciprocal(self, x: Any) -> Any:
        """``1 / x`` for a 1 x 1 ``x``."""
        raise NotImplementedError

    def _inverse(self, x: Any) -> Any:
        raise NotImplementedError

    def _power(self, x: Any, exponent: float) -> Any:
        raise NotImplementedError

    def _ones(self, n: int) -> Any:
        raise NotImplementedError

    def _eye(self, n: int) -> Any:
        raise NotImplementedError

    # --- the constructs -------------------------------------------------------------------

    def _print_Number(self, node: Number) -> Any:
        return self._scalar(node.value)

    def _print_Neg(self, node: Neg) -> Any:
        return -self._print(node.operand)

    def _print_Transpose(self, node: Transpose) -> Any:
        return self._print(node.operand).T

    def _print_Inverse(self, node: Inverse) -> Any:
        x = self._print(node.operand)
        return self._reciprocal(x) if self._is_scalar(x) else self._inverse(x)

    def _print_Power(self, node: Power) -> Any:
        return self._power(self._print(node.operand), node.exponent)

    def _print_BinOp(self, node: BinOp) -> Any:
        a, b = self._print(node.left), self._print(node.right)
        scaling = self._is_scalar(a) or self._is_scalar(b)
        if node.op == "@" and not scaling:
            return self._matmul(a, b)
        a, b = self._broadcast(a, b)
        return self._elementwise("*" if node.op == "@" else node.op, a, b)

    def _print_Call(self, node: Call) -> Any:
        if node.func in ("ones", "eye"):
            n = evaluate_size_int(node.args[0], self.sizes)
            return self._ones(n) if node.func == "ones" else self._eye(n)
        if node.func == "unit":
            n, i = (evaluate_size_int(a, self.sizes, zero=True) for a in node.args)
            if i >= n:
                raise ExprError(f"unit({n}, {i}): index beyond the row", node.pos)
            return self._eye(n)[i : i + 1, :]
        function = getattr(self, f"_call_{node.func}", None)
        if function is None:
            raise ExprError(f"unknown function {node.func!r}", node.pos)
        return function(*(self._print(a) for a in node.args))
