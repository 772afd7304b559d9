"""The expression language of specs: sizes (``sqrt(width)``) and group actions (``W_K A^-T``).

Spec strings are never handed to ``eval``, ``sympify`` or ``parse_expr`` of SymPy: they are
tokenized and parsed here (:mod:`~symcomp.lang.parser`) into frozen nodes, one class per
construct (:mod:`~symcomp.lang.nodes`), which printers turn into what a later stage needs, one
:class:`~symcomp.lang.printer.Printer` subclass per target:

- :class:`SpecPrinter` (spec text), :class:`ScalarEvaluator` (size expressions as numbers),
  :class:`ShapePrinter` (shapes), :class:`TorchSourcePrinter` and :class:`SizeCodePrinter`
  (Python source for generated packages);
- :class:`~symcomp.lang.sympy_printer.SympyPrinter` (SymPy matrix expressions),
  :class:`~symcomp.lang.sympy_printer.SympyMatrixEvaluator` (explicit SymPy matrices) and
  :class:`~symcomp.lang.torch_evaluator.TorchEvaluator` (torch tensors), imported from their
  modules so that reading a spec needs neither SymPy nor torch.

Meaning, treating every value as a matrix (a length-n vector is a 1 x n row, a scalar is 1 x 1):
``+ - * /`` are elementwise, a 1 x 1 operand broadcasting against any shape; ``@`` and
juxtaposition are the matrix product (with a 1 x 1 operand: scaling); ``^T`` transposes,
``^-1`` is the matrix inverse (1 / x for a scalar), ``^-T`` the inverse transposed,
``^ number`` an elementwise power.

Functions: ``diag(v)`` (vector -> diagonal matrix), ``ones(n)`` (1 x n row of ones), ``eye(n)``
(n x n identity), ``kron(A, B)`` (Kronecker product), ``sqrt(x)`` (elementwise square root),
``sum(x)`` (the sum of all entries of x, a 1 x 1 scalar), ``unit(n, i)`` (1 x n row, one at
index i counted from 0, zeros elsewhere: one row of a table). ``n`` in ``ones``/``eye``/``unit``
and ``i`` are size expressions: numbers and size names only.
"""

from symcomp.lang.code_printer import SizeCodePrinter, TorchSourcePrinter
from symcomp.lang.matrix import MatrixEvaluator
from symcomp.lang.nodes import (
    NODE_CLASSES,
    BinOp,
    Call,
    Expr,
    Inverse,
    Name,
    Neg,
    Node,
    Number,
    Power,
    Transpose,
    children,
    free_names,
    iter_names,
    walk,
)
from symcomp.lang.parser import FUNCTIONS, ExprError, parse_expr
from symcomp.lang.printer import Printer
from symcomp.lang.scalar import ScalarEvaluator, evaluate_scalar, evaluate_size_int
from symcomp.lang.shape import Shape, ShapePrinter, infer_shape
from symcomp.lang.spec_printer import SpecPrinter, precedence, unparse

__all__ = [
    "FUNCTIONS",
    "NODE_CLASSES",
    "BinOp",
    "Call",
    "Expr",
    "ExprError",
    "Inverse",
    "MatrixEvaluator",
    "Name",
    "Neg",
    "Node",
    "Number",
    "Power",
    "Printer",
    "ScalarEvaluator",
    "Shape",
    "ShapePrinter",
    "SizeCodePrinter",
    "SpecPrinter",
    "TorchSourcePrinter",
    "Transpose",
    "children",
    "evaluate_scalar",
    "evaluate_size_int",
    "free_names",
    "infer_shape",
    "iter_names",
    "parse_expr",
    "precedence",
    "unparse",
    "walk",
]
