"""The exact rational arithmetic behind the SymPy proofs (:mod:`symcomp.symmetry.rational`)."""

from __future__ import annotations

import random

import sympy

from symcomp.symmetry.rational import rational_canon, rational_zero


def _gl_through_a_head(n: int) -> tuple[sympy.Matrix, sympy.Matrix]:
    """x W_V W_O before and x (W_V B)(B^-1 W_O) after, times a transcendental atom."""
    B = sympy.Matrix(n, n, sympy.symbols(f"b0:{n * n}", real=True))
    x = sympy.Matrix(1, n, sympy.symbols(f"x0:{n}", real=True))
    W = sympy.Matrix(n, 2, sympy.symbols(f"w0:{2 * n}", real=True))
    e = sympy.exp(sympy.Symbol("p", real=True))
    return (x * W) * e, (x * B) * (B.inv() * W) * e


def test_a_gauge_through_an_inverse_is_shown_zero():
    before, after = _gl_through_a_head(3)
    assert all(rational_zero(b - a) is True for a, b in zip(before, after, strict=True))


def test_a_nonzero_difference_is_never_called_zero():
    before, after = _gl_through_a_head(3)
    x0 = sympy.Symbol("x0", real=True)
    for a, b in zip(before, after, strict=True):
        assert rational_zero(b - a + x0 / (1 + x0**2)) is None
        assert rational_zero(b - a + sympy.Rational(1, 10**9)) is None


def test_relations_between_generators_are_left_to_sympy():
    x = sympy.Symbol("x", positive=True)
    # sqrt(x + 1) is a generator of its own, unrelated to x: the test cannot tell, so None
    assert rational_zero(sympy.sqrt(x + 1) ** 3 - (x + 1) * sympy.sqrt(x + 1)) is True
    assert rational_zero(sympy.sqrt(x + 1) - sympy.sqrt(x) * sympy.sqrt(1 + 1 / x)) is None
    assert rational_zero(1 / (x - x)) is None  # zoo: SymPy decides


def test_the_canonical_form_is_one_form_for_equal_functions():
    rng = random.Random(0)
    xs = sympy.symbols("x0:4", real=True)

    def draw(depth: int) -> sympy.Expr:
        if depth == 0:
            return rng.choice([*xs, sympy.Integer(rng.randint(-3, 3))])
        a, b = draw(depth - 1), draw(depth - 1)
        op = rng.choice(["+", "*", "/"])
        if op == "/" and b == 0:
            op = "+"
        return a + b if op == "+" else a * b if op == "*" else a / b

    for _ in range(60):
        e = draw(4)
        ours = rational_canon(e)
        assert sympy.cancel(ours - e) == 0  # the same function
        factor = xs[1] ** 2 + 3
        for other in (sympy.together(e), sympy.expand(e), e * factor / sympy.expand(factor)):
            assert rational_canon(other) == ours
    # equal functions, written apart, get the identical form (they key the same atom)
    x, y = xs[:2]
    assert rational_canon((x**2 - y**2) / (x - y)) == rational_canon(x + y)
    assert rational_canon(1 / (1 / x + 1 / y)) == rational_canon(x * y / (x + y))
