"""The printers of the expression language (symcomp.lang): dispatch, spec text, and agreement of
the evaluators (torch tensors, SymPy matrices, torch source, Python size code) on the same trees."""

from __future__ import annotations

import math

import pytest
import sympy
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from symcomp.lang import (
    FUNCTIONS,
    NODE_CLASSES,
    BinOp,
    Call,
    Inverse,
    Name,
    Neg,
    Number,
    Power,
    Printer,
    ShapePrinter,
    SizeCodePrinter,
    SpecPrinter,
    TorchSourcePrinter,
    Transpose,
    evaluate_scalar,
    free_names,
    iter_names,
    parse_expr,
    unparse,
    walk,
)
from symcomp.lang.sympy_printer import SympyMatrixEvaluator, SympyPrinter
from symcomp.lang.torch_evaluator import TorchEvaluator

# --- trees over every node class ----------------------------------------------------------

_IDENT = r"[A-Za-z_][A-Za-z0-9_]{0,5}"
_names = st.one_of(
    st.sampled_from(["a", "W_Q", "ln.gain", "layers.0.attn.W_O", "layers.*.x", "T", "E"]),
    st.from_regex(rf"{_IDENT}(\.({_IDENT}|\*|[0-9]{{1,2}})){{0,2}}", fullmatch=True),
).filter(lambda name: name.split(".")[0] not in FUNCTIONS)
_numbers = st.one_of(
    st.integers(0, 10**6).map(float),
    st.floats(0, 1e300, allow_nan=False, allow_infinity=False),
)
_leaves = st.one_of(_names.map(Name), _numbers.map(Number))
_exponents = st.floats(-1e6, 1e6, allow_nan=False).filter(lambda x: x != -1)


def _extend(children: st.SearchStrategy) -> st.SearchStrategy:
    unary = st.sampled_from(sorted(f for f, n in FUNCTIONS.items() if n == 1))
    return st.one_of(
        st.builds(BinOp, st.sampled_from(["+", "-", "*", "/", "@"]), children, children),
        st.builds(Neg, children),
        st.builds(Transpose, children),
        st.builds(Inverse, children),
        st.builds(Power, children, _exponents),
        st.builds(lambda f, x: Call(f, (x,)), unary, children),
        st.builds(lambda x, y: Call("kron", (x, y)), children, children),
    )


_trees = st.recursive(_leaves, _extend, max_leaves=16)


@settings(max_examples=400, deadline=None)
@given(_trees)
def test_spec_text_round_trips(tree):
    text = SpecPrinter().doprint(tree)
    assert parse_expr(text) == tree, text
    assert str(tree) == unparse(tree) == text
    assert SpecPrinter().doprint(parse_expr(text)) == text  # printing is a fixed point


@pytest.mark.parametrize(
    "text",
    [
        "a -b",
        "a (-b)",
        "-a b",
        "-a^T",
        "(-a)^T",
        "a - (b - c)",
        "a / (b * c)",
        "a (b c)",
        "W_K A^-T",
        "(a^-1)^T",
        "a^T^-1",
        "(a + b)^-2.5",
        "-(-a)",
        "diag(g)^-1 Q^T W + 2 ones(width)",
        "kron(P, eye(k)) sum(x)^0.5",
        "t (W + b)",
        "layers.*.ln.gain x",
    ],
)
def test_spec_text_of_tricky_precedence(text):
    tree = parse_expr(text)
    assert parse_expr(unparse(tree)) == tree


def test_every_node_class_is_covered_by_the_strategies():
    seen: set[type] = set()

    @settings(max_examples=200, deadline=None)
    @given(_trees)
    def collect(tree):
        seen.update(type(node) for node in walk(tree))

    collect()
    assert seen == set(NODE_CLASSES)


# --- dispatch -------------------------------------------------------------------------------


class _NamesOnly(Printer):
    def _print_Name(self, node: Name) -> str:
        return node.name


def test_a_missing_print_method_names_the_node_class():
    assert _NamesOnly().doprint(Name("x")) == "x"
    with pytest.raises(
        NotImplementedError, match=r"_NamesOnly cannot print a BinOp node.*_print_BinOp"
    ):
        _NamesOnly().doprint(parse_expr("x + y"))


def test_dispatch_walks_the_node_class_mro():
    class Shout(Name):
        pass

    assert _NamesOnly().doprint(Shout("x")) == "x"
    assert SpecPrinter().doprint(BinOp("@", Shout("a"), Number(2.0))) == "a 2"


def test_settings_are_one_dict_checked_against_the_defaults():
    printer = TorchSourcePrinter({"element": "t"})
    assert printer.doprint(parse_expr("t^T")) == "T(t)"
    with pytest.raises(TypeError, match="unknown settings elemnt"):
        TorchSourcePrinter({"elemnt": "t"})


def test_a_printer_overrides_only_what_differs():
    class Hadamard(SpecPrinter):
        def _print_BinOp(self, node: BinOp) -> str:
            text = super()._print_BinOp(node)
            return text.replace(" * ", " .* ")

    assert Hadamard().doprint(parse_expr("a * b^T + -c")) == "a .* b^T + -c"


def test_tree_helpers_do_not_recurse():
    tree: Name | BinOp = Name("x0")
    for i in range(1, 20_000):
        tree = BinOp("+", tree, Name(f"x{i % 7}"))
    assert len(iter_names(tree)) == 20_000
    assert iter_names(tree)[:3] == [Name("x0"), Name("x1"), Name("x2")]
    assert free_names(tree) == {f"x{i}" for i in range(7)}


# --- the evaluators agree ---------------------------------------------------------------------

SHAPES = {"A": (3, 3), "B": (3, 2), "g": (1, 3), "v": (1, 2), "s": (1, 1), "P": (2, 2)}
SIZES = {"n": 3, "m": 2}

# every node class, every function, both meanings of @ (product and scaling), 1 x 1 broadcasts
EXPRESSIONS = [
    "A B + B",
    "B^T A^-1",
    "A^-T * A",
    "diag(g)^-1 A - 2.5",
    "s B / (B + 3)",
    "ones(n)^T v + B",
    "eye(n) + s^-1 A",
    "kron(P, eye(m)) - kron(eye(m), P)^T",
    "sqrt(g)^2 - g",
    "g^0.5 * g^-2",
    "sum(B) B",
    "-v^T v",
    "n A - m",
    "s * A + A / s - s",
    "2 s (g A)^T",
    "diag(v^T) P^-1 + 0.25",
    "(A + -A^T) B P",
    "s^-1 + s^3 - sqrt(s)",
]


def _random_inputs(seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in SHAPES.items():
        out[name] = torch.rand(shape, generator=gen, dtype=torch.float64) + 0.5  # > 0 for sqrt
    for name in ("A", "P"):  # well conditioned
        n = SHAPES[name][0]
        out[name] = out[name] + 2 * torch.eye(n, dtype=torch.float64)
    return out


def _as_float(m: sympy.Matrix) -> torch.Tensor:
    return torch.tensor([[float(e) for e in row] for row in m.tolist()], dtype=torch.float64)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("text", EXPRESSIONS)
def test_torch_and_sympy_evaluators_agree(text, seed):
    expr = parse_expr(text)
    values = _random_inputs(seed)
    matrices = {name: sympy.Matrix(t.tolist()) for name, t in values.items()}
    by_torch = TorchEvaluator(values, SIZES).doprint(expr)
    by_sympy = SympyMatrixEvaluator(matrices, SIZES).doprint(expr)
    shapes = {**SHAPES, **dict.fromkeys(SIZES, (1, 1))}  # a size reads as a scalar
    shape = ShapePrinter(shapes, SIZES).doprint(expr)
    assert tuple(by_torch.shape) == shape == by_sympy.shape
    torch.testing.assert_close(_as_float(by_sympy), by_torch, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("text", EXPRESSIONS)
def test_sympy_matrix_expressions_agree_with_explicit_matrices(text):
    expr = parse_expr(text)
    values = _random_inputs(2)
    matrices = {name: sympy.ImmutableMatrix(t.tolist()) for name, t in values.items()}
    symbols = {**matrices, **{n: sympy.Integer(v) for n, v in SIZES.items()}}
    explicit = SympyMatrixEvaluator(matrices, SIZES).doprint(expr)
    printed = SympyPrinter(symbols).doprint(expr)
    assert printed.shape == explicit.shape
    as_float = _as_float(printed.as_explicit())
    torch.testing.assert_close(as_float, _as_float(explicit), rtol=1e-12, atol=1e-12)


# the helpers that generated packages define for the rendered actions (gauge.py)
def _runtime(values: dict[str, torch.Tensor]) -> dict[str, object]:
    def mm(a, b):
        if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
            return a * b
        return a * b if a.shape == (1, 1) or b.shape == (1, 1) else a @ b

    return {
        "v": values.__getitem__,
        "S": SIZES,
        "mm": mm,
        "inv": lambda a: 1.0 / a if a.shape == (1, 1) else torch.linalg.inv(a),
        "T": lambda a: a.mT,
        "diag": lambda x: torch.diag(x.reshape(-1)),
        "kron": torch.kron,
        "sqrt": torch.sqrt,
        "total": lambda a: a.sum().reshape(1, 1),
        "ones": lambda n: torch.ones(1, n, dtype=torch.float64),
        "eye": lambda n: torch.eye(n, dtype=torch.float64),
    }


@pytest.mark.parametrize("text", EXPRESSIONS)
def test_torch_source_computes_what_the_torch_evaluator_does(text):
    expr = parse_expr(text)
    values = _random_inputs(3)
    names = {name: name for name in SHAPES}
    source = TorchSourcePrinter({"names": names, "size_names": frozenset(SIZES)}).doprint(expr)
    value = eval(source, _runtime(values))  # our own printed source, on test data
    expected = TorchEvaluator(values, SIZES).doprint(expr)
    torch.testing.assert_close(value.expand(expected.shape), expected)


@pytest.mark.parametrize(
    "text",
    [
        "sqrt(width)",
        "width / heads - 1",
        "2^3 + -width",
        "heads^-1",
        "(width + 1)^2",
        "sum(heads) 3",
    ],
)
def test_size_code_computes_what_the_scalar_evaluator_does(text):
    sizes = {"width": 8, "heads": 2}
    source = SizeCodePrinter().doprint(parse_expr(text))
    value = eval(source, {"math": math, "s": type("S", (), sizes)})  # our own printed source
    assert value == pytest.approx(evaluate_scalar(parse_expr(text), sizes), rel=1e-15)
