"""The expression language: parsing, names, scalar evaluation, shapes and SymPy."""

from __future__ import annotations

import math

import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st

from symcomp.lang import (
    BinOp,
    Call,
    ExprError,
    Inverse,
    Name,
    Neg,
    Number,
    Power,
    Transpose,
    evaluate_scalar,
    free_names,
    infer_shape,
    parse_expr,
)
from symcomp.lang.sympy_printer import to_sympy
from symcomp.spec import parse_spec
from symcomp.spec.params import evaluate_size_expression

a, b, c = Name("a"), Name("b"), Name("c")


def mat(x, y):
    return BinOp("@", x, y)


# --- parsing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tree"),
    [
        ("a + b c", BinOp("+", a, mat(b, c))),
        ("a * b + c", BinOp("+", BinOp("*", a, b), c)),
        ("a - b - c", BinOp("-", BinOp("-", a, b), c)),
        ("a / b * c", BinOp("*", BinOp("/", a, b), c)),
        ("a b c", mat(mat(a, b), c)),
        ("a @ b c", mat(mat(a, b), c)),
        ("a -b", BinOp("-", a, b)),  # a subtraction, never a product
        ("a (-b)", mat(a, Neg(b))),
        ("a * -b", BinOp("*", a, Neg(b))),
        ("-a b", mat(Neg(a), b)),
        ("-a^T", Neg(Transpose(a))),
        ("a b^-1 c", mat(mat(a, Inverse(b)), c)),
        ("W_K A^-T", mat(Name("W_K"), Transpose(Inverse(Name("A"))))),
        ("a^T^-1", Inverse(Transpose(a))),
        ("a^2", Power(a, 2.0)),
        ("a^-2.5", Power(a, -2.5)),
        ("(a + b)^T", Transpose(BinOp("+", a, b))),
        ("2 a", mat(Number(2.0), a)),
        ("2a", mat(Number(2.0), a)),
        ("1e-3 + .5", BinOp("+", Number(0.001), Number(0.5))),
        ("t (a + b)", mat(Name("t"), BinOp("+", a, b))),
        ("sqrt (width)", Call("sqrt", (Name("width"),))),
        ("kron(P, eye(k))", Call("kron", (Name("P"), Call("eye", (Name("k"),))))),
        ("layers.0.attn.W_O", Name("layers.0.attn.W_O")),
        ("layers.*.ln.gain x", mat(Name("layers.*.ln.gain"), Name("x"))),
        ("diag(g)^-1 Q^T", mat(Inverse(Call("diag", (Name("g"),))), Transpose(Name("Q")))),
    ],
)
def test_parse(text, tree):
    assert parse_expr(text) == tree


@pytest.mark.parametrize(
    ("text", "offset", "fragment"),
    [
        ("W_Q A)", 5, "expected an operator"),
        ("(a + b", 6, "expected ')'"),
        ("a +", 3, "expected a number"),
        ("a $ b", 2, "unexpected character '$'"),
        ("foo(x)", 0, "unknown function 'foo'"),
        ("a + dig(x)", 4, "unknown function 'dig'"),
        ("diag x", 0, "diag is a function"),
        ("kron(a)", 0, "kron takes 2 arguments"),
        ("a^x", 2, "after '^'"),
        ("a ^", 3, "after '^'"),
        ("", 0, "empty expression"),
        ("a,b", 1, "expected an operator"),
    ],
)
def test_syntax_errors_carry_offsets(text, offset, fragment):
    with pytest.raises(ExprError) as info:
        parse_expr(text)
    assert info.value.offset == offset
    assert fragment in info.value.message
    assert f"at character {offset + 1}" in str(info.value)


def test_unknown_function_lists_the_functions():
    with pytest.raises(ExprError) as info:
        parse_expr("dig(x)")
    assert "diag" in info.value.accepted and "kron" in info.value.accepted


def test_positions_are_recorded_but_not_compared():
    tree = parse_expr("a  +  b")
    assert tree == parse_expr("a+b")
    assert tree.pos == 3 and tree.right.pos == 6


def test_free_names():
    expr = parse_expr("diag(attn_norm.gain)^-1 Q^T W + 2 ones(width)")
    assert free_names(expr) == {"attn_norm.gain", "Q", "W", "width"}


def test_repr_and_str_are_readable():
    expr = parse_expr("W_K A^-T")
    assert str(expr) == "W_K A^-T"
    assert "Name(name='W_K')" in repr(expr) and "pos=" not in repr(expr)


# --- round trip ---------------------------------------------------------------------------

_names = st.sampled_from(["a", "b", "W_Q", "ln.gain", "layers.0.attn.W_O", "layers.*.x"])
_leaves = st.one_of(
    _names.map(Name),
    st.integers(0, 1000).map(lambda n: Number(float(n))),
    st.floats(0, 1e6, allow_nan=False, allow_infinity=False).map(Number),
)
_exponents = st.floats(-10, 10, allow_nan=False).filter(lambda x: x != -1)


def _extend(children):
    return st.one_of(
        st.builds(BinOp, st.sampled_from(["+", "-", "*", "/", "@"]), children, children),
        st.builds(Neg, children),
        st.builds(Transpose, children),
        st.builds(Inverse, children),
        st.builds(Power, children, _exponents),
        st.builds(lambda x: Call("sqrt", (x,)), children),
        st.builds(lambda x, y: Call("kron", (x, y)), children, children),
    )


@settings(max_examples=300, deadline=None)
@given(st.recursive(_leaves, _extend, max_leaves=12))
def test_unparse_round_trip(tree):
    text = str(tree)
    assert parse_expr(text) == tree, text


# --- scalars and sizes --------------------------------------------------------------------


def test_evaluate_scalar():
    env = {"width": 8.0, "heads": 2.0}
    assert evaluate_scalar(parse_expr("sqrt(width)"), env) == math.sqrt(8)
    assert evaluate_scalar(parse_expr("width / heads - 1"), env) == 3
    assert evaluate_scalar(parse_expr("2^3 + -width"), env) == 0
    assert evaluate_scalar(parse_expr("heads^-1"), env) == 0.5


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("widht", "unknown name 'widht'"),
        ("width / (heads - 2)", "division by zero"),
        ("sqrt(0 - width)", "sqrt of a negative number"),
        ("eye(width)", "not allowed in a size expression"),
    ],
)
def test_evaluate_scalar_errors(text, fragment):
    with pytest.raises(ExprError) as info:
        evaluate_scalar(parse_expr(text), {"width": 8.0, "heads": 2.0})
    assert fragment in info.value.message


def test_unknown_size_lists_the_sizes():
    with pytest.raises(ExprError) as info:
        evaluate_scalar(parse_expr("widht"), {"width": 8.0, "heads": 2.0})
    assert info.value.offset == 0
    assert info.value.accepted == "heads, width"


def test_evaluate_size_expression_uses_the_architecture_sizes():
    arch = parse_spec(_TINY_GEMMA).architecture
    assert evaluate_size_expression("sqrt(width)", arch) == math.sqrt(8)
    assert evaluate_size_expression("head_width * heads + rotary_width", arch) == 12
    assert evaluate_size_expression(2, arch) == 2.0
    assert evaluate_size_expression(0.5, arch) == 0.5


_TINY_GEMMA = """
name: g
architecture:
  kind: causal_lm
  vocab_size: 11
  max_positions: 6
  width: 8
  layers: 1
  block: pre_norm
  norm: {type: rmsnorm, eps: 0.1}
  attention: {heads: 2, kv_heads: 1, head_width: 4, bias: false}
  positions: {type: rope, base: 10.0}
  mlp: {hidden: 12, activation: geglu, bias: false}
  embeddings: {tied: true, scale: sqrt(width)}
"""


def test_bad_embedding_scale_is_a_spec_error():
    from symcomp.errors import SpecError

    with pytest.raises(SpecError) as info:
        parse_spec(_TINY_GEMMA.replace("sqrt(width)", "sqrt(widht)"))
    assert info.value.first.key_path == ("architecture", "embeddings", "scale")
    assert "widht" in info.value.first.message


# --- shapes -------------------------------------------------------------------------------

SHAPES = {"W": (8, 4), "A": (4, 4), "b": (1, 4), "g": (1, 8), "s": (1, 1), "P": (2, 2)}
SIZES = {"width": 8, "head_width": 4}


@pytest.mark.parametrize(
    ("text", "shape"),
    [
        ("W A^-T", (8, 4)),
        ("b A + b", (1, 4)),
        ("diag(g)^-1 W", (8, 4)),
        ("diag(b^T)", (4, 4)),
        ("s W", (8, 4)),
        ("W s^-1", (8, 4)),
        ("W * 2 - 1", (8, 4)),
        ("ones(width)^T b", (8, 4)),
        ("eye(head_width) + A", (4, 4)),
        ("kron(P, eye(head_width))", (8, 8)),
        ("W^T W", (4, 4)),
        ("sum(W)", (1, 1)),
        ("sqrt(g)", (1, 8)),
        ("-W^T", (4, 8)),
    ],
)
def test_infer_shape(text, shape):
    assert infer_shape(parse_expr(text), SHAPES, SIZES) == shape


@pytest.mark.parametrize(
    ("text", "fragment", "offset"),
    [
        ("A W", "matrix product of 4 x 4 and 8 x 4", 2),
        ("W + A", "sum of 8 x 4 and 4 x 4", 2),
        ("W * W^T", "elementwise product of 8 x 4 and 4 x 8", 2),
        ("W^-1", "inverse of a non-square 8 x 4 matrix", 1),
        ("diag(W)", "diag of a 8 x 4 matrix", 0),
        ("ones(width / 3)", "not a positive integer", 0),
        ("eye(depth)", "unknown name 'depth'", 4),
        ("X + W", "unknown name 'X'", 0),
    ],
)
def test_infer_shape_errors(text, fragment, offset):
    with pytest.raises(ExprError) as info:
        infer_shape(parse_expr(text), SHAPES, SIZES)
    assert fragment in info.value.message
    assert info.value.offset == offset


# --- SymPy --------------------------------------------------------------------------------


def test_to_sympy_matrix_expressions():
    W, A = sympy.MatrixSymbol("W_K", 8, 4), sympy.MatrixSymbol("A", 4, 4)
    g, s = sympy.MatrixSymbol("g", 1, 8), sympy.MatrixSymbol("s", 1, 1)
    symbols = {"W_K": W, "A": A, "g": g, "s": s, "width": sympy.Integer(8)}
    assert to_sympy(parse_expr("W_K A^-T"), symbols) == W * A.I.T
    assert to_sympy(parse_expr("diag(g)^-1 W_K"), symbols) == sympy.DiagMatrix(g).I * W
    assert to_sympy(parse_expr("s W_K"), symbols) == s[0, 0] * W
    assert to_sympy(parse_expr("ones(width)^T g"), symbols).shape == (8, 8)
    assert to_sympy(parse_expr("W_K * W_K"), symbols) == sympy.HadamardProduct(W, W)
    assert to_sympy(parse_expr("g + 1"), symbols) == g + sympy.OneMatrix(1, 8)
    assert to_sympy(parse_expr("kron(A, eye(2))"), symbols).shape == (8, 8)


def test_to_sympy_scalars_and_numbers():
    x = sympy.Symbol("x")
    expected = sympy.sqrt(x) / 2 + sympy.Rational(1, 4)
    assert to_sympy(parse_expr("sqrt(x) / 2 + 0.25"), {"x": x}) == expected
    assert to_sympy(parse_expr("x^-1 + x^T"), {"x": x}) == 1 / x + x


def test_to_sympy_unknown_name():
    with pytest.raises(ExprError) as info:
        to_sympy(parse_expr("x + y"), {"x": sympy.Symbol("x")})
    assert info.value.message == "unknown name 'y'" and info.value.offset == 4
