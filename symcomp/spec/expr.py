"""A small expression language for sizes and symmetry actions, parsed by hand.

Spec strings are never handed to ``eval``, ``sympify`` or ``parse_expr``: they are tokenized and
parsed here into frozen AST nodes, which the later stages interpret (shapes, numbers, SymPy).

Grammar (``<juxtaposition>`` is two factors side by side, ``A B``)::

    expr    := term (('+' | '-') term)*
    term    := factor (('*' | '/' | '@' | <juxtaposition>) factor)*
    factor  := '-' factor | postfix
    postfix := atom ('^T' | '^-1' | '^-T' | '^' ['-'] number)*
    atom    := number | name | name '(' expr (',' expr)* ')' | '(' expr ')'
    name    := ident ('.' ident | '.' '*' | '.' digits)*     # W_Q, ln.gain, layers.0.attn.W_O

Meaning, treating every value as a matrix (a length-n vector is a 1 x n row, a scalar is 1 x 1):

- ``+ - * /`` are elementwise; a 1 x 1 operand broadcasts against any shape.
- ``@`` and juxtaposition are the matrix product (with a 1 x 1 operand: scaling).
  Juxtaposition binds like ``*`` and is left-associative: ``A B^-1 C`` is ``(A (B^-1)) C``.
- ``^T`` transposes, ``^-1`` is the matrix inverse (1 / x for a scalar), ``^-T`` the inverse
  transposed, ``^ number`` an elementwise power. Postfix operators bind tighter than ``-``.
- ``-a b`` is ``(-a) b``; ``a -b`` is a subtraction, never a product.
- A name directly followed by ``(`` is a call; so is a function name followed by ``(`` after
  spaces. Anything else followed by ``(`` after a space is a product: ``t (W + b)``.

Functions: ``diag(v)`` (vector -> diagonal matrix), ``ones(n)`` (1 x n row of ones), ``eye(n)``
(n x n identity), ``kron(A, B)`` (Kronecker product), ``sqrt(x)`` (elementwise square root),
``sum(x)`` (the sum of all entries of x, a 1 x 1 scalar). ``n`` in ``ones``/``eye`` is a size
expression: numbers and size names only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from symcomp.errors import SymcompError
from symcomp.spec.model import Architecture
from symcomp.spec.params import sizes_of

Shape = tuple[int, int]

# name -> number of arguments
FUNCTIONS: dict[str, int] = {"diag": 1, "ones": 1, "eye": 1, "kron": 2, "sqrt": 1, "sum": 1}


class ExprError(SymcompError):
    """A bad expression: ``message``, the 0-based character ``offset`` (or None), ``accepted``.

    ``str()`` gives the message with the position counted from 1, for people. The spec loader
    turns it into a :class:`~symcomp.errors.SpecError` located in the spec file.
    """

    def __init__(self, message: str, offset: int | None = None, accepted: str | None = None):
        self.message = message
        self.offset = offset
        self.accepted = accepted
        super().__init__(message if offset is None else f"{message} (at character {offset + 1})")


# --- AST ------------------------------------------------------------------------------------
# ``pos`` is the node's offset in the source text; it is left out of equality so that two parses
# of differently spaced text compare equal.


@dataclass(frozen=True)
class Number:
    value: float
    pos: int | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        return str(int(self.value)) if self.value.is_integer() else repr(self.value)


@dataclass(frozen=True)
class Name:
    name: str
    pos: int | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Call:
    func: str
    args: tuple[Expr, ...]
    pos: int | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        return f"{self.func}({', '.join(str(a) for a in self.args)})"


@dataclass(frozen=True)
class BinOp:
    """``op`` is one of ``+ - * / @`` (``@`` also stands for juxtaposition)."""

    op: str
    left: Expr
    right: Expr
    pos: int | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        level = _LEVEL[self.op]
        left = _wrap(self.left, level)
        right = _wrap(self.right, level + 1)  # left-associative: same level on the right needs ()
        if self.op != "@":
            return f"{left} {self.op} {right}"
        # 'a -b' would read as a subtraction, so a negated right factor keeps its parentheses
        return f"{left} ({right})" if right.startswith("-") else f"{left} {right}"


@dataclass(frozen=True)
class Neg:
    operand: Expr
    pos: int | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        return f"-{_wrap(self.operand, _NEG)}"


@dataclass(frozen=True)
class Transpose:
    operand: Expr
    pos: int | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        if isinstance(self.operand, Inverse):
            return f"{_wrap(self.operand.operand, _POSTFIX)}^-T"
        return f"{_wrap(self.operand, _POSTFIX)}^T"


@dataclass(frozen=True)
class Inverse:
    operand: Expr
    pos: int | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        return f"{_wrap(self.operand, _POSTFIX)}^-1"


@dataclass(frozen=True)
class Power:
    """Elementwise power by a constant exponent (never -1: that is :class:`Inverse`)."""

    operand: Expr
    exponent: float
    pos: int | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        return f"{_wrap(self.operand, _POSTFIX)}^{Number(self.exponent)}"


Expr = Number | Name | Call | BinOp | Neg | Transpose | Inverse | Power

_LEVEL = {"+": 1, "-": 1, "*": 2, "/": 2, "@": 2}
_NEG, _POSTFIX, _ATOM = 3, 4, 5


def _level(node: Expr) -> int:
    if isinstance(node, BinOp):
        return _LEVEL[node.op]
    if isinstance(node, Neg):
        return _NEG
    if isinstance(node, Transpose | Inverse | Power):
        return _POSTFIX
    if isinstance(node, Number) and node.value < 0:
        return _NEG
    return _ATOM


def _wrap(node: Expr, at_least: int) -> str:
    """The text of ``node``, parenthesized unless it binds at least as tightly as needed."""
    text = str(node)
    return text if _level(node) >= at_least else f"({text})"


def unparse(expr: Expr) -> str:
    """Text that parses back to ``expr`` (juxtaposition for products)."""
    return str(expr)


# --- tokenizer ------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""(?P<space>\s+)
    |(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    |(?P<name>[A-Za-z_]\w*(?:\.(?:[A-Za-z_]\w*|\*|\d+))*)
    |(?P<op>[-+*/@^(),])""",
    re.X,
)


@dataclass(frozen=True)
class _Token:
    kind: str  # number, name, op, end
    text: str
    pos: int
    spaced: bool  # whitespace right before it


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos, spaced = 0, False
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise ExprError(f"unexpected character {text[pos]!r}", pos, _ACCEPTED_SYNTAX)
        kind = match.lastgroup or ""
        if kind == "space":
            spaced = True
        else:
            tokens.append(_Token(kind, match.group(), pos, spaced))
            spaced = False
        pos = match.end()
    tokens.append(_Token("end", "", len(text), spaced))
    return tokens


_ACCEPTED_SYNTAX = (
    "numbers, names, + - * / @, juxtaposition, ^T ^-1 ^-T ^number, parentheses, "
    f"functions {', '.join(FUNCTIONS)}"
)


# --- parser ---------------------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str):
        self.tokens = _tokenize(text)
        self.i = 0

    @property
    def tok(self) -> _Token:
        return self.tokens[self.i]

    def next(self) -> _Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def expect(self, text: str) -> _Token:
        if self.tok.text != text or self.tok.kind != "op":
            raise self.unexpected(f"'{text}'")
        return self.next()

    def unexpected(self, wanted: str) -> ExprError:
        tok = self.tok
        what = "end of expression" if tok.kind == "end" else repr(tok.text)
        return ExprError(f"expected {wanted}, found {what}", tok.pos, wanted)

    def parse(self) -> Expr:
        if self.tok.kind == "end":
            raise ExprError("empty expression", 0, "an expression")
        node = self.expr()
        if self.tok.kind != "end":
            raise self.unexpected("an operator or the end of the expression")
        return node

    def expr(self) -> Expr:
        node = self.term()
        while self.tok.kind == "op" and self.tok.text in "+-":
            op = self.next()
            node = BinOp(op.text, node, self.term(), op.pos)
        return node

    def starts_atom(self) -> bool:
        tok = self.tok
        return tok.kind in ("number", "name") or (tok.kind == "op" and tok.text == "(")

    def term(self) -> Expr:
        node = self.factor()
        while True:
            tok = self.tok
            if tok.kind == "op" and tok.text in "*/@":
                self.next()
                node = BinOp(tok.text, node, self.factor(), tok.pos)
            elif self.starts_atom():  # juxtaposition
                node = BinOp("@", node, self.factor(), tok.pos)
            else:
                return node

    def factor(self) -> Expr:
        if self.tok.kind == "op" and self.tok.text == "-":
            tok = self.next()
            return Neg(self.factor(), tok.pos)
        return self.postfix()

    def postfix(self) -> Expr:
        node = self.atom()
        while self.tok.kind == "op" and self.tok.text == "^":
            caret = self.next()
            negative = self.tok.kind == "op" and self.tok.text == "-"
            if negative:
                self.next()
            tok = self.tok
            if tok.kind == "name" and tok.text == "T":
                self.next()
                node = Transpose(Inverse(node, caret.pos) if negative else node, caret.pos)
            elif tok.kind == "number":
                self.next()
                value = -float(tok.text) if negative else float(tok.text)
                node = Inverse(node, caret.pos) if value == -1 else Power(node, value, caret.pos)
            else:
                raise self.unexpected("T, -1, -T or a number after '^'")
        return node

    def atom(self) -> Expr:
        tok = self.tok
        if tok.kind == "number":
            self.next()
            return Number(float(tok.text), tok.pos)
        if tok.kind == "name":
            self.next()
            after = self.tok
            is_paren = after.kind == "op" and after.text == "("
            if is_paren and (not after.spaced or tok.text in FUNCTIONS):
                return self.call(tok)
            if tok.text in FUNCTIONS:
                raise ExprError(
                    f"{tok.text} is a function: write {tok.text}(...)", tok.pos, "a call"
                )
            return Name(tok.text, tok.pos)
        if tok.kind == "op" and tok.text == "(":
            self.next()
            node = self.expr()
            self.expect(")")
            return node
        raise self.unexpected("a number, a name or '('")

    def call(self, name: _Token) -> Call:
        if name.text not in FUNCTIONS:
            raise ExprError(
                f"unknown function {name.text!r}", name.pos, ", ".join(sorted(FUNCTIONS))
            )
        self.expect("(")
        args = [self.expr()]
        while self.tok.kind == "op" and self.tok.text == ",":
            self.next()
            args.append(self.expr())
        self.expect(")")
        arity = FUNCTIONS[name.text]
        if len(args) != arity:
            raise ExprError(
                f"{name.text} takes {arity} argument{'s' * (arity > 1)}, found {len(args)}",
                name.pos,
                f"{arity} argument{'s' * (arity > 1)}",
            )
        return Call(name.text, tuple(args), name.pos)


def parse_expr(text: str) -> Expr:
    """Parse ``text``; raises :class:`ExprError` with the offending offset."""
    return _Parser(text).parse()


def free_names(expr: Expr) -> frozenset[str]:
    """Every name the expression reads (function names excluded)."""
    if isinstance(expr, Name):
        return frozenset((expr.name,))
    if isinstance(expr, Number):
        return frozenset()
    return frozenset().union(*(free_names(child) for child in _children(expr)))


def iter_names(expr: Expr) -> list[Name]:
    """The :class:`Name` nodes of ``expr`` in reading order, with their positions."""
    if isinstance(expr, Name):
        return [expr]
    return [name for child in _children(expr) for name in iter_names(child)]


def _children(expr: Expr) -> tuple[Expr, ...]:
    if isinstance(expr, BinOp):
        return (expr.left, expr.right)
    if isinstance(expr, Call):
        return expr.args
    if isinstance(expr, Neg | Transpose | Inverse | Power):
        return (expr.operand,)
    return ()


# --- scalar evaluation (sizes) --------------------------------------------------------------


def evaluate_scalar(expr: Expr, env: Mapping[str, float]) -> float:
    """Evaluate a size expression: numbers, the names in ``env``, arithmetic, sqrt, sum."""
    if isinstance(expr, Number):
        return expr.value
    if isinstance(expr, Name):
        if expr.name not in env:
            raise ExprError(f"unknown name {expr.name!r}", expr.pos, ", ".join(sorted(env)))
        return float(env[expr.name])
    if isinstance(expr, Neg):
        return -evaluate_scalar(expr.operand, env)
    if isinstance(expr, Transpose):
        return evaluate_scalar(expr.operand, env)
    if isinstance(expr, Inverse | Power):
        base = evaluate_scalar(expr.operand, env)
        exponent = -1.0 if isinstance(expr, Inverse) else expr.exponent
        try:
            value = base**exponent
        except (ZeroDivisionError, OverflowError):
            raise ExprError(f"cannot evaluate {expr}", expr.pos) from None
        if isinstance(value, complex):
            raise ExprError(f"{expr} is not a real number", expr.pos)
        return float(value)
    if isinstance(expr, BinOp):
        a, b = evaluate_scalar(expr.left, env), evaluate_scalar(expr.right, env)
        if expr.op == "+":
            return a + b
        if expr.op == "-":
            return a - b
        if expr.op == "/":
            if b == 0:
                raise ExprError("division by zero", expr.pos)
            return a / b
        return a * b
    if expr.func == "sqrt":
        value = evaluate_scalar(expr.args[0], env)
        if value < 0:
            raise ExprError(f"sqrt of a negative number ({value:g})", expr.pos)
        return math.sqrt(value)
    if expr.func == "sum":
        return evaluate_scalar(expr.args[0], env)
    raise ExprError(
        f"{expr.func} is not allowed in a size expression", expr.pos, "sqrt, sum, arithmetic"
    )


def evaluate_size_expression(value: float | int | str, arch: Architecture) -> float:
    """A number, or a string in the architecture's sizes (``sqrt(width)``), as a float."""
    if not isinstance(value, str):
        return float(value)
    return evaluate_scalar(parse_expr(value), sizes_of(arch).as_dict())


def evaluate_size_int(expr: Expr, sizes: Mapping[str, float]) -> int:
    """A size expression that must be a positive integer (group sizes, ones(n), eye(n))."""
    value = evaluate_scalar(expr, sizes)
    if not (math.isfinite(value) and value >= 1 and abs(value - round(value)) < 1e-9):
        raise ExprError(f"{expr} is {value:g}, not a positive integer", None, "a positive integer")
    return round(value)


# --- shapes ---------------------------------------------------------------------------------


def infer_shape(
    expr: Expr, shapes: Mapping[str, Shape], sizes: Mapping[str, float] | None = None
) -> Shape:
    """The (rows, cols) of ``expr``, every value a matrix; scalars are 1 x 1 and broadcast.

    ``shapes`` gives each name's shape; ``sizes`` the size names that ``ones(n)`` and ``eye(n)``
    may use. Raises :class:`ExprError` naming both shapes on a mismatch.
    """
    sizes = sizes or {}
    if isinstance(expr, Number):
        return (1, 1)
    if isinstance(expr, Name):
        if expr.name not in shapes:
            raise ExprError(f"unknown name {expr.name!r}", expr.pos, ", ".join(sorted(shapes)))
        return shapes[expr.name]
    if isinstance(expr, Call):
        return _call_shape(expr, shapes, sizes)
    if isinstance(expr, BinOp):
        a = infer_shape(expr.left, shapes, sizes)
        b = infer_shape(expr.right, shapes, sizes)
        if a == (1, 1) or b == (1, 1):
            return b if a == (1, 1) else a
        if expr.op == "@":
            if a[1] != b[0]:
                raise ExprError(
                    f"matrix product of {_fmt(a)} and {_fmt(b)}: inner sizes differ",
                    expr.pos,
                    f"a left operand with {b[0]} columns",
                )
            return (a[0], b[1])
        if a != b:
            word = {"+": "sum", "-": "difference"}.get(expr.op, "elementwise product")
            raise ExprError(
                f"{word} of {_fmt(a)} and {_fmt(b)}: shapes differ", expr.pos, "equal shapes"
            )
        return a
    shape = infer_shape(expr.operand, shapes, sizes)
    if isinstance(expr, Transpose):
        return (shape[1], shape[0])
    if isinstance(expr, Inverse) and shape[0] != shape[1]:
        raise ExprError(f"inverse of a non-square {_fmt(shape)} matrix", expr.pos, "a square one")
    return shape  # Neg, Inverse, Power


def _call_shape(expr: Call, shapes: Mapping[str, Shape], sizes: Mapping[str, float]) -> Shape:
    if expr.func in ("ones", "eye"):
        try:
            n = evaluate_size_int(expr.args[0], sizes)
        except ExprError as exc:  # point at the call when the size has no position of its own
            pos = expr.pos if exc.offset is None else exc.offset
            raise ExprError(f"{expr.func}: {exc.message}", pos, exc.accepted) from None
        return (1, n) if expr.func == "ones" else (n, n)
    args = [infer_shape(a, shapes, sizes) for a in expr.args]
    if expr.func == "diag":
        rows, cols = args[0]
        if min(rows, cols) != 1:
            raise ExprError(f"diag of a {_fmt(args[0])} matrix", expr.pos, "a vector")
        return (max(rows, cols),) * 2
    if expr.func == "kron":
        (a, b), (c, d) = args
        return (a * c, b * d)
    if expr.func == "sum":
        return (1, 1)
    return args[0]  # sqrt


def _fmt(shape: Shape) -> str:
    return f"{shape[0]} x {shape[1]}"


# --- SymPy ----------------------------------------------------------------------------------


def to_sympy(expr: Expr, symbols: Mapping[str, Any]) -> Any:
    """Convert to SymPy. ``symbols`` maps every name, sizes included, to a SymPy object.

    Matrices become matrix expressions (MatMul, Transpose, Inverse, HadamardProduct, DiagMatrix,
    OneMatrix, Identity, KroneckerProduct); a 1 x 1 matrix combined with a larger one is read as
    its single entry, so scalars broadcast as in :func:`infer_shape`.
    """
    import sympy

    def conv(node: Expr) -> Any:
        if isinstance(node, Number):
            v = node.value
            return sympy.Integer(int(v)) if v.is_integer() else sympy.Rational(repr(v))
        if isinstance(node, Name):
            if node.name not in symbols:
                raise ExprError(f"unknown name {node.name!r}", node.pos, ", ".join(sorted(symbols)))
            return symbols[node.name]
        if isinstance(node, Neg):
            return -conv(node.operand)
        if isinstance(node, Transpose):
            x = conv(node.operand)
            return x.T if _is_matrix(x) else x
        if isinstance(node, Inverse):
            x = conv(node.operand)
            return x.I if _is_matrix(x) else 1 / x
        if isinstance(node, Power):
            return _power(conv(node.operand), sympy.Rational(repr(node.exponent)))
        if isinstance(node, BinOp):
            return _binop(node, conv(node.left), conv(node.right))
        return _call(node, [conv(a) for a in node.args])

    try:
        return conv(expr)
    except sympy.ShapeError as exc:
        raise ExprError(f"shape error: {exc}", expr.pos) from None


def _is_matrix(x: Any) -> bool:
    return bool(getattr(x, "is_Matrix", False))


def _power(x: Any, p: Any) -> Any:
    import sympy

    return sympy.HadamardPower(x, p) if _is_matrix(x) else x**p


def _broadcast(a: Any, b: Any) -> tuple[Any, Any]:
    """Read a 1 x 1 matrix as a scalar when the other operand is not 1 x 1."""
    if _is_matrix(a) and a.shape == (1, 1) and not (_is_matrix(b) and b.shape == (1, 1)):
        a = a[0, 0]
    if _is_matrix(b) and b.shape == (1, 1) and not (_is_matrix(a) and a.shape == (1, 1)):
        b = b[0, 0]
    return a, b


def _binop(node: BinOp, a: Any, b: Any) -> Any:
    import sympy

    a, b = _broadcast(a, b)
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


def _call(node: Call, args: list[Any]) -> Any:
    import sympy

    x = args[0]
    if node.func == "diag":
        return sympy.DiagMatrix(x) if _is_matrix(x) else x
    if node.func == "ones":
        return sympy.OneMatrix(1, x)
    if node.func == "eye":
        return sympy.Identity(x)
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
