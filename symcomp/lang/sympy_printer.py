"""The expression language in SymPy: matrix expressions (:class:`SympyPrinter`) and explicit
matrices (:class:`SympyMatrixEvaluator`)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import sympy

from symcomp.lang.matrix import MatrixEvaluator
from symcomp.lang.nodes import BinOp, Call, Expr, Inverse, Name, Neg, Number, Power, Transpose
from symcomp.lang.parser import ExprError
from symcomp.lang.printer import Printer


def exact(x: float) -> sympy.Expr:
    """A float as an exact number (0.1 -> 1/10)."""
    if float(x).is_integer():
        return sympy.Integer(int(x))
    return sympy.Rational(repr(float(x)))


@contextmanager
def remembered_assumptions() -> Iterator[None]:
    """SymPy's ``ask`` with its answers remembered while the block runs. Building and printing
    matrix expressions asks the same questions again and again (``DiagMatrix.doit`` asks
    ``Q.diagonal`` of its vector at every product it sits in), and each answer is a SAT solve:
    Nemotron's group actions took 10 s, nearly all of it there. Only questions without local
    assumptions are remembered, and only while no global assumption is in force."""
    import sympy.assumptions as assumptions

    ask = assumptions.ask
    answers: dict[Any, Any] = {}

    def remembered(proposition, assumptions=True, context=assumptions.global_assumptions):
        if assumptions is not True or context:
            return ask(proposition, assumptions, context)
        if proposition not in answers:
            answers[proposition] = ask(proposition)
        return answers[proposition]

    assumptions.ask = remembered
    try:
        yield
    finally:
        assumptions.ask = ask


# --- matrix expressions ---------------------------------------------------------------------


def _is_matrix(x: Any) -> bool:
    return bool(getattr(x, "is_Matrix", False))


def _power(x: Any, p: Any) -> Any:
    return sympy.HadamardPower(x, p) if _is_matrix(x) else x**p


def _entry(x: Any) -> Any:
    """The single entry of a 1 x 1 matrix expression: ``x[0, 0]``, or ``Trace(x)`` where that
    entry would be an explicit sum over the symbolic sizes (a product), which SymPy then tries
    to evaluate in closed form at every later operation (seconds per group action)."""
    entry = x[0, 0]
    return sympy.Trace(x) if entry.has(sympy.Sum) else entry


def _broadcast(a: Any, b: Any) -> tuple[Any, Any]:
    """Read a 1 x 1 matrix as a scalar when the other operand is not 1 x 1."""
    if _is_matrix(a) and a.shape == (1, 1) and not (_is_matrix(b) and b.shape == (1, 1)):
        a = _entry(a)
    if _is_matrix(b) and b.shape == (1, 1) and not (_is_matrix(a) and a.shape == (1, 1)):
        b = _entry(b)
    return a, b


class SympyPrinter(Printer):
    """SymPy objects. ``symbols`` maps every name, sizes included, to a SymPy object.

    Matrices become matrix expressions (MatMul, Transpose, Inverse, HadamardProduct, DiagMatrix,
    OneMatrix, Identity, KroneckerProduct); a 1 x 1 matrix combined with a larger one is read as
    its single entry, so scalars broadcast as in :func:`~symcomp.lang.shape.infer_shape`.
    """

    def __init__(self, symbols: Mapping[str, Any], settings: Mapping[str, Any] | None = None):
        super().__init__(settings)
        self.symbols = symbols

    def doprint(self, node: Expr) -> Any:
        try:
            return self._print(node)
        except sympy.ShapeError as exc:
            raise ExprError(f"shape error: {exc}", node.pos) from None

    def _print_Number(self, node: Number) -> Any:
        v = node.value
        return sympy.Integer(int(v)) if v.is_integer() else sympy.Rational(repr(v))

    def _print_Name(self, node: Name) -> Any:
        if node.name not in self.symbols:
            raise ExprError(
                f"unknown name {node.name!r}", node.pos, ", ".join(sorted(self.symbols))
            )
        return self.symbols[node.name]

    def _print_Neg(self, node: Neg) -> Any:
        return -self._print(node.operand)

    def _print_Transpose(self, node: Transpose) -> Any:
        x = self._print(node.operand)
        return x.T if _is_matrix(x) else x

    def _print_Inverse(self, node: Inverse) -> Any:
        x = self._print(node.operand)
        return x.I if _is_matrix(x) else 1 / x

    def _print_Power(self, node: Power) -> Any:
        return _power(self._print(node.operand), sympy.Rational(repr(node.exponent)))

    def _print_BinOp(self, node: BinOp) -> Any:
        a, b = _broadcast(self._print(node.left), self._print(node.right))
        ma, mb = _is_matrix(a), _is_matrix(b)
        if node.op in "+-":
            if ma != mb:  # scalar + matrix: spread the scalar over a matrix of ones
                shape = (b if mb else a).shape
                if ma:
                    b = b * sympy.OneMatrix(*shape)
                else:
                    a = a * sympy.OneMatrix(*shape)
            return a + b if node.op == "+" else a - b
        if node.op == "@" or not (ma and mb):
            if node.op == "/":
                return a * _power(b, -1)
            return a @ b if ma and mb else a * b
        if node.op == "*":
            return sympy.HadamardProduct(a, b)
        return sympy.HadamardProduct(a, sympy.HadamardPower(b, -1))

    def _print_Call(self, node: Call) -> Any:
        args = [self._print(a) for a in node.args]
        x = args[0]
        if node.func == "diag":
            return sympy.DiagMatrix(x) if _is_matrix(x) else x
        if node.func == "ones":
            return sympy.OneMatrix(1, x)
        if node.func == "eye":
            return sympy.Identity(x)
        if node.func == "unit":  # one row of the identity, named by its index
            return sympy.MatrixSymbol(f"e_{args[1]}", 1, x)
        if node.func == "kron":
            a, b = args
            if _is_matrix(a) and _is_matrix(b):
                return sympy.KroneckerProduct(a, b)
            return a * b
        if node.func == "sqrt":
            return _power(x, sympy.Rational(1, 2))
        # sum: the entries of x, via ones on both sides (a 1 x 1 matrix)
        if not _is_matrix(x):
            return x
        return sympy.OneMatrix(1, x.shape[0]) @ x @ sympy.OneMatrix(x.shape[1], 1)


def to_sympy(expr: Expr, symbols: Mapping[str, Any]) -> Any:
    """``expr`` in SymPy (see :class:`SympyPrinter`)."""
    return SympyPrinter(symbols).doprint(expr)


# --- explicit matrices ----------------------------------------------------------------------


class SympyMatrixEvaluator(MatrixEvaluator):
    """Evaluates an expression on explicit ``sympy.Matrix`` values, exactly (numbers become
    rationals). A name in ``names`` wins over a size of the same name; a scalar operand is
    spread to the other operand's shape."""

    def _print_Name(self, node: Name) -> sympy.Matrix:
        if node.name in self.names:
            return self.names[node.name]
        return sympy.Matrix([[sympy.Integer(self.sizes[node.name])]])

    def _scalar(self, value: float) -> sympy.Matrix:
        return sympy.Matrix([[exact(value)]])

    def _broadcast(self, a: sympy.Matrix, b: sympy.Matrix) -> tuple[sympy.Matrix, sympy.Matrix]:
        sa, sb = self._is_scalar(a), self._is_scalar(b)
        if sa and not sb:
            a = sympy.Matrix(b.rows, b.cols, lambda i, j, v=a[0, 0]: v)
        if sb and not sa:
            b = sympy.Matrix(a.rows, a.cols, lambda i, j, v=b[0, 0]: v)
        return a, b

    def _elementwise(self, op: str, a: sympy.Matrix, b: sympy.Matrix) -> sympy.Matrix:
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a.multiply_elementwise(b)
        return sympy.Matrix(a.rows, a.cols, lambda i, j: a[i, j] / b[i, j])

    def _matmul(self, a: sympy.Matrix, b: sympy.Matrix) -> sympy.Matrix:
        return a * b

    def _reciprocal(self, x: sympy.Matrix) -> sympy.Matrix:
        return sympy.Matrix([[1 / x[0, 0]]])

    def _inverse(self, x: sympy.Matrix) -> sympy.Matrix:
        return x.inv()

    def _power(self, x: sympy.Matrix, exponent: float) -> sympy.Matrix:
        p = exact(exponent)
        return x.applyfunc(lambda e: e**p)

    def _ones(self, n: int) -> sympy.Matrix:
        return sympy.ones(1, n)

    def _eye(self, n: int) -> sympy.Matrix:
        return sympy.eye(n)

    def _call_diag(self, x: sympy.Matrix) -> sympy.Matrix:
        return sympy.diag(*list(x))

    def _call_kron(self, a: sympy.Matrix, b: sympy.Matrix) -> sympy.Matrix:
        return sympy.kronecker_product(a, b)

    def _call_sqrt(self, x: sympy.Matrix) -> sympy.Matrix:
        return x.applyfunc(sympy.sqrt)

    def _call_sum(self, x: sympy.Matrix) -> sympy.Matrix:
        return sympy.Matrix([[sum(x)]])
