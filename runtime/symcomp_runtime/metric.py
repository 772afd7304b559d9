"""Invariant metrics on a parameter vector: inner product, Riemannian gradient, horizontal
projection and Christoffel symbols, batched over the GL(k) pairs of a model.

It depends on torch alone; generated packages and :mod:`symcomp_runtime.sharpness` share it.

The parameters are one flat float64 vector ``theta``. A **GL(k) pair** is a pair of factors
``(G, H)`` (``n x k`` and ``m x k``) read from ``theta`` through index tensors, with ``G Hᵀ``
invariant under ``(G, H) -> (G A, H A^-T)``: per attention head ``G = [W_Q; b_Q]``,
``H = [W_K; b_K]`` (A1) and ``G = [W_V; b_V]``, ``H = W_Oᵀ`` (A3). Pairs of one shape are
stacked into ``(units, n, k)`` index tensors. Every other entry is **elementwise**.

Metrics (``S_G = GᵀG``, ``S_H = HᵀH``; formulas of ``shared/design/quotient.md``, which the
symbolic stage proves exactly on a small instance, see ``symcomp.symmetry.geometry``):

- ``inv``: ``tr(S_G⁻¹ ξ_Gᵀη_G) + tr(S_H⁻¹ ξ_Hᵀη_H)`` on pairs;
- ``mix``: ``tr(S_H ξ_Gᵀη_G) + tr(S_G ξ_Hᵀη_H)`` on pairs;
- ``elementwise``: ``Σ ξ η / w²`` (adaptive); the pairs' entries too when no pair metric is asked;
- ``euclidean``: ``Σ ξ η``.

Both pair metrics are invariant under every ``A`` in GL(k), and the elementwise one under every
elementwise rescaling ``w -> a ⊙ w``, so a ball, a projection and a geodesic built from one of
them do not depend on where in its orbit the point sits. Entries whose weight is exactly zero
cannot move under the elementwise metric (their ball has radius zero); they are held at zero.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

METRICS = ("euclidean", "elementwise", "inv", "mix")
PAIR_METRICS = ("inv", "mix")

__all__ = ["METRICS", "PAIR_METRICS", "Geometry", "PairBlock"]


def _t(x: Tensor) -> Tensor:
    return x.transpose(-1, -2)


def _spd_inverse(S: Tensor) -> Tensor:
    return torch.cholesky_inverse(torch.linalg.cholesky(S))


def _tr(a: Tensor, b: Tensor) -> Tensor:
    """``tr(aᵀ b)`` per unit, summed: the Frobenius inner product of two stacks."""
    return (a * b).sum()


class PairBlock:
    """The stacked pairs ``(G, H)`` of one shape at a point, with their Gram matrices."""

    def __init__(self, theta: Tensor, index_G: Tensor, index_H: Tensor):
        if index_G.shape[0] != index_H.shape[0] or index_G.shape[2] != index_H.shape[2]:
            raise ValueError(f"pair index shapes {tuple(index_G.shape)}, {tuple(index_H.shape)}")
        self.index_G, self.index_H = index_G, index_H
        self.G, self.H = theta[index_G], theta[index_H]
        self.S_G, self.S_H = _t(self.G) @ self.G, _t(self.H) @ self.H
        self.S_G_inv, self.S_H_inv = _spd_inverse(self.S_G), _spd_inverse(self.S_H)

    def read(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x[self.index_G], x[self.index_H]

    def write(self, out: Tensor, x_G: Tensor, x_H: Tensor) -> None:
        out[self.index_G] = x_G
        out[self.index_H] = x_H

    def inner(self, metric: str, x: Tensor, y: Tensor) -> Tensor:
        (x_G, x_H), (y_G, y_H) = self.read(x), self.read(y)
        if metric == "inv":
            return _tr(x_G @ self.S_G_inv, y_G) + _tr(x_H @ self.S_H_inv, y_H)
        return _tr(x_G @ self.S_H, y_G) + _tr(x_H @ self.S_G, y_H)  # mix

    def rgrad(self, metric: str, g_G: Tensor, g_H: Tensor) -> tuple[Tensor, Tensor]:
        """The Riemannian gradient from the Euclidean one: ``g(rgrad, η) = ⟨∇, η⟩``."""
        if metric == "inv":
            return g_G @ self.S_G, g_H @ self.S_H
        return g_G @ self.S_H_inv, g_H @ self.S_G_inv

    def project(self, metric: str, x_G: Tensor, x_H: Tensor) -> tuple[Tensor, Tensor]:
        """The horizontal part ``(ξ_G + GΛ, ξ_H − HΛᵀ)``: orthogonal, in ``metric``, to every
        vertical vector ``(G ω, −H ωᵀ)``."""
        G, H = self.G, self.H
        if metric == "euclidean":  # min ‖x − (G ω, −H ωᵀ)‖: S_G ω + ω S_H = Gᵀx_G − x_HᵀH
            omega = _sylvester_pair(self.S_G, self.S_H, _t(G) @ x_G - _t(x_H) @ H)
            return x_G - G @ omega, x_H + H @ _t(omega)
        if metric == "mix":
            lam = 0.5 * (_t(x_H) @ H @ self.S_H_inv - self.S_G_inv @ _t(G) @ x_G)
        else:  # inv: Λ = Xᵀ where A X + X A = B, A = S_G S_H, B = S_G Hᵀξ_H − ξ_GᵀG S_H
            B = self.S_G @ _t(H) @ x_H - _t(x_G) @ G @ self.S_H
            lam = _t(_sylvester_same(self.S_G, self.S_H, B))
        return x_G + G @ lam, x_H - H @ _t(lam)

    def christoffel(self, metric: str, x_G: Tensor, x_H: Tensor) -> tuple[Tensor, Tensor]:
        """``Γ(ξ, ξ)`` of the Levi-Civita connection of ``metric``, both factors."""
        G, H = self.G, self.H
        if metric == "inv":

            def part(F: Tensor, x: Tensor, S_inv: Tensor) -> Tensor:
                return -x @ S_inv @ (_t(x) @ F + _t(F) @ x) + F @ S_inv @ (_t(x) @ x)

            return part(G, x_G, self.S_G_inv), part(H, x_H, self.S_H_inv)
        g_part = (x_G @ (_t(x_H) @ H + _t(H) @ x_H) - G @ (_t(x_H) @ x_H)) @ self.S_H_inv
        h_part = (x_H @ (_t(x_G) @ G + _t(G) @ x_G) - H @ (_t(x_G) @ x_G)) @ self.S_G_inv
        return g_part, h_part


def _sylvester_pair(S_G: Tensor, S_H: Tensor, C: Tensor) -> Tensor:
    """``ω`` with ``S_G ω + ω S_H = C`` (both SPD), batched: ``S_G = U diag(λ) Uᵀ``,
    ``S_H = V diag(σ) Vᵀ``, ``ω = U [(Uᵀ C V)_ij / (λ_i + σ_j)] Vᵀ``."""
    lam, U = torch.linalg.eigh(S_G)
    sig, V = torch.linalg.eigh(S_H)
    return U @ ((_t(U) @ C @ V) / (lam.unsqueeze(-1) + sig.unsqueeze(-2))) @ _t(V)


def _sylvester_same(S_G: Tensor, S_H: Tensor, B: Tensor) -> Tensor:
    """``X`` with ``A X + X A = B`` for ``A = S_G S_H`` (both SPD), batched over units.

    ``A = R M R⁻¹`` with ``R = S_G^½`` and ``M = R S_H R`` symmetric positive definite, so
    ``A = P diag(m) P⁻¹`` with ``P = R V`` (``M = V diag(m) Vᵀ``) and
    ``X = P [(P⁻¹ B P)_ij / (m_i + m_j)] P⁻¹``: one symmetric eigendecomposition per unit.
    """
    s, U = torch.linalg.eigh(S_G)
    R = U @ torch.diag_embed(s.sqrt()) @ _t(U)
    R_inv = U @ torch.diag_embed(s.rsqrt()) @ _t(U)
    m, V = torch.linalg.eigh(R @ S_H @ R)
    P, P_inv = R @ V, _t(V) @ R_inv
    C = P_inv @ B @ P
    return P @ (C / (m.unsqueeze(-1) + m.unsqueeze(-2))) @ P_inv


class Geometry:
    """One metric on the flat parameter vector ``theta``, frozen at that point.

    ``metric`` is one of :data:`METRICS`; ``pairs`` lists ``(index_G, index_H)`` stacks (used by
    the pair metrics, and by the Euclidean one for its projection); ``second_order`` chooses the
    geodesic step ``θ + ξ − ½ Γ(ξ, ξ)`` over the straight line ``θ + ξ``. The tangent vectors
    ``ξ`` are flat vectors like ``theta``.
    """

    def __init__(
        self,
        theta: Tensor,
        pairs: Sequence[tuple[Tensor, Tensor]] = (),
        metric: str = "inv",
        *,
        second_order: bool = True,
    ):
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; accepted: {', '.join(METRICS)}")
        self.theta = theta
        self.metric = metric
        self.second_order = second_order
        pairs = pairs if metric in (*PAIR_METRICS, "euclidean") else ()
        self.blocks = [PairBlock(self.theta, index_G, index_H) for index_G, index_H in pairs]
        paired = torch.zeros_like(self.theta, dtype=torch.bool)
        for block in self.blocks:
            for index in (block.index_G, block.index_H):
                if paired[index].any():
                    raise ValueError("a parameter entry belongs to two pairs")
                paired[index] = True
        self.elementwise = ~paired  # entries under the elementwise (or Euclidean) metric
        if metric == "euclidean":  # every entry live, no weights: nothing to precompute
            self.live = torch.ones_like(paired)
            return
        self.live = self.elementwise & (self.theta != 0) | paired
        # the elementwise metric's weights: w where it applies, 1 elsewhere (paired and frozen
        # entries), so that no division by a zero weight ever runs, not even in a branch that
        # torch.where discards (its gradient would be 0 * nan = nan)
        self._scaled = self.elementwise & self.live
        self._w = torch.where(self._scaled, self.theta, torch.ones_like(self.theta))
        self._w2 = self._w * self._w

    @property
    def dim(self) -> int:
        return self.theta.numel()

    def inner(self, x: Tensor, y: Tensor) -> Tensor:
        if self.metric == "euclidean":
            return (x * y).sum()
        mask = self.elementwise & self.live
        out = (x * y / self._w2)[mask].sum()
        for block in self.blocks:
            out = out + block.inner(self.metric, x, y)
        return out

    def norm(self, x: Tensor) -> Tensor:
        return self.inner(x, x).clamp_min(0).sqrt()

    def rgrad(self, egrad: Tensor) -> Tensor:
        """The Riemannian gradient of a function whose Euclidean gradient is ``egrad``."""
        if self.metric == "euclidean":
            return egrad.clone()
        out = torch.where(self.live, egrad * self._w2, torch.zeros_like(egrad))
        for block in self.blocks:
            block.write(out, *block.rgrad(self.metric, *block.read(egrad)))
        return out

    def project(self, x: Tensor, *, inplace: bool = False) -> Tensor:
        """The horizontal part of ``x`` (orthogonal to the pairs' orbits in this metric);
        frozen entries set to zero. With the Euclidean metric and pairs, this is the per-head
        least-squares projection of an optimizer's update (the design note's A1/A3 Sylvester
        equations, batched over heads)."""
        if self.metric == "euclidean":  # ``inplace``: write into x (the Euclidean case only)
            out = x if inplace else x.clone()
        else:
            out = torch.where(self.live, x, 0.0)
        for block in self.blocks:
            block.write(out, *block.project(self.metric, *block.read(x)))
        return out

    def christoffel(self, x: Tensor) -> Tensor:
        """``Γ(ξ, ξ)``: zero for the Euclidean metric, ``−ξ²/w`` elementwise."""
        if self.metric == "euclidean":
            return torch.zeros_like(x)
        out = torch.where(self._scaled, -x * x / self._w, torch.zeros_like(x))
        for block in self.blocks:
            block.write(out, *block.christoffel(self.metric, *block.read(x)))
        return out

    def step(self, x: Tensor) -> Tensor:
        """The point reached along ``x``: ``θ + ξ − ½ Γ(ξ, ξ)``, or ``θ + ξ`` to first order."""
        if not self.second_order:
            return self.theta + x
        return self.theta + x - 0.5 * self.christoffel(x)

    def vertical(self, omegas: Sequence[Tensor]) -> Tensor:
        """The vertical vector ``(G ω, −H ωᵀ)`` of the pairs, one ``ω`` stack per block (a
        reference for tests: the projection is orthogonal to every such vector)."""
        out = torch.zeros_like(self.theta)
        for block, omega in zip(self.blocks, omegas, strict=True):
            block.write(out, block.G @ omega, -block.H @ _t(omega))
        return out
