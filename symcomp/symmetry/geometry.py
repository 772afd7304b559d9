"""Invariant metrics of the GL(k) pairs and of elementwise weights, proved exactly with SymPy.

Geodesic sharpness (``symcomp_runtime.sharpness``) needs, for every group it quotients, a metric the
group leaves invariant, the horizontal projection in that metric, the Riemannian gradient and the
Christoffel symbols of the metric's Levi-Civita connection. The generated ``metric.py`` evaluates
them in closed form (``shared/design/quotient.md``). This module is their judge: on a small
instance in exact rational arithmetic it

- builds each metric as a matrix over the coordinates ``vec(G), vec(H)``;
- checks that a random rational ``A`` in GL(k) is an isometry;
- checks that the closed-form projection equals the metric-orthogonal projection onto the span of
  the vertical vectors ``(G ω, −H ωᵀ)``, which it computes from their Gram matrix;
- checks the Riemannian gradient, ``g(rgrad ∇, η) = ⟨∇, η⟩``;
- derives ``Γ(ξ, ξ)`` from the Koszul formula, ``Γ^l = g^{lm}(∂_i g_jm − ½ ∂_m g_ij) ξ^i ξ^j``,
  by differentiating the metric symbolically, and compares it with the closed form.

The elementwise metric ``Σ ξ²/w²`` is derived outright: its Christoffel symbol comes out of the
same Koszul formula as ``−ξ²/w``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cache

import sympy as sp

PAIR_METRICS = ("inv", "mix")


@dataclass(frozen=True)
class PairProof:
    """What :func:`prove_pair_metric` established, on ``G`` (n×k) and ``H`` (m×k)."""

    metric: str
    n: int
    m: int
    k: int
    isometry: bool
    projection: bool
    gradient: bool
    christoffel: bool

    @property
    def holds(self) -> bool:
        return self.isometry and self.projection and self.gradient and self.christoffel


def _random_matrix(rows: int, cols: int, rng: random.Random) -> sp.Matrix:
    return sp.Matrix(rows, cols, lambda i, j: sp.Rational(rng.randint(-9, 9), rng.randint(1, 5)))


def _generic_matrix(rows: int, cols: int, rng: random.Random) -> sp.Matrix:
    """A random rational matrix of full column rank."""
    while True:
        M = _random_matrix(rows, cols, rng)
        if (M.T * M).det() != 0:
            return M


def _split(vector: sp.Matrix, n: int, m: int, k: int) -> tuple[sp.Matrix, sp.Matrix]:
    G = sp.Matrix(n, k, list(vector[: n * k]))
    H = sp.Matrix(m, k, list(vector[n * k : n * k + m * k]))
    return G, H


def _join(G: sp.Matrix, H: sp.Matrix) -> sp.Matrix:
    return sp.Matrix(list(G) + list(H))


def pair_inner(metric: str, G, H, x_G, x_H, y_G, y_H):
    """The pair metric at ``(G, H)`` (the closed forms of ``shared/design/quotient.md``)."""
    S_G, S_H = G.T * G, H.T * H
    if metric == "inv":
        return (S_G.inv() * x_G.T * y_G).trace() + (S_H.inv() * x_H.T * y_H).trace()
    return (S_H * x_G.T * y_G).trace() + (S_G * x_H.T * y_H).trace()


def pair_rgrad(metric: str, G, H, g_G, g_H):
    S_G, S_H = G.T * G, H.T * H
    if metric == "inv":
        return g_G * S_G, g_H * S_H
    return g_G * S_H.inv(), g_H * S_G.inv()


def pair_projection(metric: str, G, H, x_G, x_H):
    """The closed-form horizontal part; for ``inv`` the Sylvester equation is solved exactly."""
    S_G, S_H = G.T * G, H.T * H
    k = G.shape[1]
    if metric == "mix":
        lam = (x_H.T * H * S_H.inv() - S_G.inv() * G.T * x_G) / 2
    else:
        X = sp.Matrix(k, k, sp.symbols(f"x0:{k * k}"))
        A, B = S_G * S_H, S_G * H.T * x_H - x_G.T * G * S_H
        solution = sp.solve(list(A * X + X * A - B), list(X), dict=True)[0]
        lam = X.subs(solution).T
    return x_G + G * lam, x_H - H * lam.T


def pair_christoffel(metric: str, G, H, x_G, x_H):
    S_G, S_H = G.T * G, H.T * H
    if metric == "inv":

        def part(F, x, S):
            return -x * S.inv() * (x.T * F + F.T * x) + F * S.inv() * x.T * x

        return part(G, x_G, S_G), part(H, x_H, S_H)
    g_part = (x_G * (x_H.T * H + H.T * x_H) - G * x_H.T * x_H) * S_H.inv()
    h_part = (x_H * (x_G.T * G + G.T * x_G) - H * x_G.T * x_G) * S_G.inv()
    return g_part, h_part


def metric_matrix(inner, coords: list[sp.Symbol]) -> sp.Matrix:
    """The matrix ``g_ij = inner(e_i, e_j)`` of a metric given as a bilinear function."""
    size = len(coords)
    basis = [sp.Matrix(size, 1, lambda r, _c, i=i: int(r == i)) for i in range(size)]
    return sp.Matrix(size, size, lambda i, j: sp.cancel(inner(basis[i], basis[j])))


def koszul_christoffel(g: sp.Matrix, coords, point: dict, xi: sp.Matrix) -> sp.Matrix:
    """``Γ(ξ, ξ)`` at ``point`` from the metric matrix ``g`` over ``coords``."""
    size = len(coords)
    dg = [g.diff(c).subs(point) for c in coords]  # dg[l][i, j] = ∂_l g_ij
    rhs = sp.zeros(size, 1)
    for mm in range(size):
        total = 0
        for i in range(size):
            for j in range(size):
                total += (dg[i][j, mm] - sp.Rational(1, 2) * dg[mm][i, j]) * xi[i] * xi[j]
        rhs[mm] = total
    return g.subs(point).LUsolve(rhs)


def prove_pair_metric(metric: str, n: int = 3, m: int = 2, k: int = 2, seed: int = 0) -> PairProof:
    """Prove the closed forms of the pair ``metric`` on one rational instance."""
    if metric not in PAIR_METRICS:
        raise ValueError(f"unknown pair metric {metric!r}; accepted: {', '.join(PAIR_METRICS)}")
    rng = random.Random(seed)
    G, H = _generic_matrix(n, k, rng), _generic_matrix(m, k, rng)
    x_G, x_H = _random_matrix(n, k, rng), _random_matrix(m, k, rng)
    y_G, y_H = _random_matrix(n, k, rng), _random_matrix(m, k, rng)

    # isometry: (G, H, ξ) -> (G A, H A^-T, ξ_G A, ξ_H A^-T) keeps the inner product
    A = _generic_matrix(k, k, rng)
    A_T_inv = A.inv().T
    moved = pair_inner(metric, G * A, H * A_T_inv, x_G * A, x_H * A_T_inv, y_G * A, y_H * A_T_inv)
    isometry = sp.simplify(moved - pair_inner(metric, G, H, x_G, x_H, y_G, y_H)) == 0

    # projection: closed form == orthogonal projection onto span{(G ω, −H ωᵀ)} in the metric
    verticals = []
    for a in range(k * k):
        omega = sp.Matrix(k, k, lambda i, j, a=a: int(i * k + j == a))
        verticals.append((G * omega, -H * omega.T))
    gram = sp.Matrix(
        k * k, k * k, lambda a, b: pair_inner(metric, G, H, *verticals[a], *verticals[b])
    )
    rhs = sp.Matrix([pair_inner(metric, G, H, x_G, x_H, *v) for v in verticals])
    coeff = gram.LUsolve(rhs)
    exact_G = x_G - sum((coeff[a] * verticals[a][0] for a in range(k * k)), sp.zeros(n, k))
    exact_H = x_H - sum((coeff[a] * verticals[a][1] for a in range(k * k)), sp.zeros(m, k))
    p_G, p_H = pair_projection(metric, G, H, x_G, x_H)
    projection = (p_G - exact_G).is_zero_matrix and (p_H - exact_H).is_zero_matrix

    # Riemannian gradient: g(rgrad ∇, η) = ⟨∇, η⟩
    r_G, r_H = pair_rgrad(metric, G, H, x_G, x_H)
    euclidean = (x_G.T * y_G).trace() + (x_H.T * y_H).trace()
    gradient = sp.simplify(pair_inner(metric, G, H, r_G, r_H, y_G, y_H) - euclidean) == 0

    # Christoffel symbols: Koszul formula on the symbolic metric == closed form
    coords = list(sp.symbols(f"c0:{(n + m) * k}"))
    C_G, C_H = _split(sp.Matrix(coords), n, m, k)

    def inner(u: sp.Matrix, v: sp.Matrix):
        return pair_inner(metric, C_G, C_H, *_split(u, n, m, k), *_split(v, n, m, k))

    g = metric_matrix(inner, coords)
    point = dict(zip(coords, _join(G, H), strict=True))
    koszul = koszul_christoffel(g, coords, point, _join(x_G, x_H))
    closed = _join(*pair_christoffel(metric, G, H, x_G, x_H))
    christoffel = (koszul - closed).is_zero_matrix
    return PairProof(metric, n, m, k, isometry, projection, gradient, christoffel)


@cache
def elementwise_christoffel() -> sp.Expr:
    """``Γ(ξ, ξ)`` of the elementwise metric ``ξ²/w²``, derived by the Koszul formula."""
    w, xi = sp.symbols("w xi", nonzero=True)
    g = sp.Matrix([[1 / w**2]])
    return sp.simplify(koszul_christoffel(g, [w], {}, sp.Matrix([xi]))[0])
