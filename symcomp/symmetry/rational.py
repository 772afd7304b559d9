"""Exact rational arithmetic for the SymPy proofs: a zero test and a canonical form.

SymPy's ``expand(numer(together(e)))`` decides whether a rational expression is zero, but it
does so on expression trees: a group element's inverse (adjugate over determinant) multiplied
through an attention head gives thousands of monomials, and the tree arithmetic takes seconds
where dict-based polynomials take milliseconds. Both functions here walk the expression once
and carry every subexpression as a numerator in ``QQ[generators]`` (SymPy's ``PolyElement``)
and the factors of its denominator, with no gcds: a sum is taken over the least common multiple
of the factors its terms name, so a determinant in every denominator is multiplied in once.

The generators are the symbols and every subexpression that is not a rational operation
(``exp(...)``, ``sqrt(...)``, ``cos(1)``). Treating them as independent is sound one way: a
numerator that vanishes as a polynomial in independent generators vanishes for all their values,
so :func:`rational_zero` returning ``True`` is a proof. A nonzero numerator proves nothing
(``sqrt(x)`` and ``sqrt(x + 1)`` are related through ``x``), so the answer is then ``None`` and
the caller tries SymPy's simplifications. :func:`rational_canon` reduces the fraction (one gcd)
and makes the denominator monic: equal rational functions of the same generators get the
identical expression, which is what :func:`sympy.cancel` was used for, at a fraction of its cost.
"""

from __future__ import annotations

from typing import Any

import sympy
from sympy.polys.domains import QQ
from sympy.polys.rings import PolyRing

__all__ = ["rational_canon", "rational_zero"]


def _is_rational_op(e: Any) -> bool:
    if e.is_Add or e.is_Mul:
        return True
    return bool(e.is_Pow and e.exp.is_Integer)


def _generators(e: Any) -> list[Any]:
    """The leaves of ``e`` under +, *, and integer powers, other than rational numbers."""
    found: dict[Any, None] = {}
    stack = [e]
    seen = set()
    while stack:
        x = stack.pop()
        if x in seen:
            continue
        seen.add(x)
        if x.is_Rational:
            continue
        if _is_rational_op(x):
            stack.extend(x.args)
        else:
            found[x] = None
    return sorted(found, key=sympy.default_sort_key)


class _Fractions:
    """Rational expressions in the generators ``gens`` as a numerator and the factors of a
    denominator (polynomial: power), memoised by subexpression."""

    def __init__(self, gens: list[Any]):
        self.gens = gens
        self.ring = PolyRing([sympy.Dummy(f"g{i}") for i in range(len(gens))], QQ)
        self.memo: dict[Any, tuple[Any, dict[Any, int]]] = {
            g: (x, {}) for g, x in zip(gens, self.ring.gens, strict=True)
        }

    def expand(self, den: dict[Any, int]) -> Any:
        out = self.ring.one
        for f, k in den.items():
            out *= f**k
        return out

    def __call__(self, x: Any) -> tuple[Any, dict[Any, int]]:
        if x in self.memo:
            return self.memo[x]
        if x.is_Rational:
            out = (self.ring(QQ(int(x.p), int(x.q))), {})
        elif x.is_Add:
            out = self._add([self(a) for a in x.args])
        elif x.is_Mul:
            num, den = self.ring.one, {}
            for a in x.args:
                n, d = self(a)
                num *= n
                for f, k in d.items():
                    den[f] = den.get(f, 0) + k
            out = (num, den)
        else:  # an integer power
            n, d = self(x.base)
            p = int(x.exp)
            if p > 0:
                out = (n**p, {f: k * p for f, k in d.items()})
            elif n == 0:
                raise ZeroDivisionError  # a denominator that is zero as written
            else:
                out = (self.expand(d) ** -p, {n: -p})
        self.memo[x] = out
        return out

    def _add(self, terms: list[tuple[Any, dict[Any, int]]]) -> tuple[Any, dict[Any, int]]:
        den: dict[Any, int] = {}
        for _, d in terms:
            for f, k in d.items():
                den[f] = max(den.get(f, 0), k)
        num = self.ring.zero
        for n, d in terms:
            missing = {f: k - d.get(f, 0) for f, k in den.items() if k > d.get(f, 0)}
            num += n * self.expand(missing) if missing else n
        return num, den


def _fraction(e: Any) -> tuple[_Fractions, Any, dict[Any, int]] | None:
    if e.has(sympy.Float):
        return None
    gens = _generators(e)
    if not gens:
        return None
    fractions = _Fractions(gens)
    try:
        num, den = fractions(e)
    except ZeroDivisionError:
        return None
    return fractions, num, den


def rational_zero(e: Any) -> bool | None:
    """True when ``e`` is identically zero as a rational function of its generators; None when
    this test cannot tell (a nonzero numerator, a float, a division by zero)."""
    if e == 0:
        return True
    found = _fraction(e)
    if found is None:
        return None
    return True if found[1] == 0 else None


def rational_canon(e: Any) -> Any:
    """A canonical form of ``e`` (equal rational functions of the same generators give the
    identical expression, as :func:`sympy.cancel` does): numerator and denominator without
    common factors, the denominator monic, both expanded. Falls back to :func:`sympy.cancel`
    for an expression with floats or nothing to cancel."""
    found = _fraction(sympy.sympify(e))
    if found is None:
        return sympy.cancel(e)
    fractions, num, den = found
    p, q = num.cancel(fractions.expand(den))
    lc = q.LC
    p, q = p.quo_ground(lc), q.quo_ground(lc)
    gens = fractions.gens
    return p.as_expr(*gens) / q.as_expr(*gens)
