"""Quotient geometry: the vertical space of the group orbits, the horizontal
projection of updates, and re-canonicalisation of the gauge.

The vertical space at a point is spanned by the derivatives of every continuous group's action
(all units, a basis of each Lie algebra) and by the entries of table rows that no input reads.
:class:`VerticalSpace` holds it as a linear map ``J`` from Lie-algebra coordinates to parameter
directions, applied matrix-free: forward-mode AD through the groups' actions gives ``J c``,
reverse mode gives ``J^T v``; nothing of size parameters x redundant is ever built.

:func:`project_horizontal` removes from an update its least-squares vertical component, in the
Euclidean metric on the parameters. Groups share parameters (the rotation and the per-head
gauges both move ``W_Q``), so it solves for all groups jointly: conjugate gradients on the least
squares problem (CGLS), preconditioned by each group's own Gram operator in closed form (for a
move ``X E`` or ``E^-1 X``, ``xi -> A xi + xi B``, inverted through the eigenvectors of ``A``
and ``B``; for a scaling, a diagonal). :func:`vertical_basis` builds the same space densely, as
an exact reference for tiny instances.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from . import actions as gauge
from .actions import Group, Unit

__all__ = ["VerticalSpace", "project_horizontal", "vertical_basis"]

Unread = tuple[tuple[str, int, int], ...]  # (table, first row, end row) no input reads


def _params(model: nn.Module) -> dict[str, Tensor]:
    return {name: p.detach().to(torch.float64) for name, p in model.named_parameters()}


def vertical_basis(
    model: nn.Module,
    groups: Mapping[str, Group],
    rope: Mapping[str, object] | None = None,
    unread: Unread = (),
    tol: float = 1e-10,
) -> Tensor:
    """An orthonormal basis (parameters x rank) of the vertical space at ``model``, dense: its
    rank is the number of redundant parameters at a generic point. Parameters are flattened in
    ``named_parameters()`` order. For tiny instances (an exact reference for the projection)."""
    V = VerticalSpace(model, groups, rope, unread).dense()
    if V.shape[1] == 0:
        return V
    U, sv, _ = torch.linalg.svd(V, full_matrices=False)
    rank = int(torch.count_nonzero(sv > tol * float(sv.max())))
    return U[:, :rank]


class VerticalSpace:
    """The vertical space at one point of the standard parametrization, matrix-free.

    Coordinates: for each continuous group, one row of Lie-algebra coordinates per unit (in the
    orthonormal basis of :func:`gauge.algebra_basis`), then one entry per unread table entry,
    all in one flat float64 vector. ``J(c)`` maps them to parameter directions (name ->
    tensor), ``J_T(v)`` is its adjoint."""

    def __init__(
        self,
        model: nn.Module,
        groups: Mapping[str, Group],
        rope: Mapping[str, object] | None = None,
        unread: Unread = (),
    ):
        self.unread = unread
        self.params = _params(model)
        self.S = _sizes(model)
        self.names = list(self.params)
        self.parts: list[tuple[Group, list[Unit], Tensor]] = []
        for group in groups.values():
            basis = gauge.algebra_basis(group, self.S, rope)
            units = gauge.units(group, self.S)
            if group.continuous and basis.shape[0] and units:
                self.parts.append((group, units, basis))
        self.chunks = [len(units) * basis.shape[0] for _, units, basis in self.parts]
        self.chunks += [(end - start) * self.params[t].shape[1] for t, start, end in unread]
        self._zero = torch.zeros(sum(self.chunks), dtype=torch.float64)
        # J^T is one backward pass through the recorded moves, J the backward pass of J^T
        # (linear in its input): both replay a graph recorded once, no Python per call
        with torch.enable_grad():  # also inside an optimizer's no_grad step
            self._coords = self._zero.clone().requires_grad_(True)
            moved = self._move(self._coords)
            self._live = [i for i, value in enumerate(moved) if value.requires_grad]
            self._moved = [moved[i] for i in self._live]
            self._probe = [torch.zeros_like(v, requires_grad=True) for v in self._moved]
            (self._adjoint,) = torch.autograd.grad(
                self._moved, self._coords, self._probe, create_graph=True, allow_unused=True
            )
        self._blocks: list | None = None  # built when first needed
        self.norm = self._norm_estimate()

    @property
    def dim(self) -> int:
        return sum(self.chunks)

    def dense(self, chunk: int = 512) -> Tensor:
        """J as a matrix (parameters x coordinates), its columns by vectorized forward AD."""
        total = sum(value.numel() for value in self.params.values())
        if not self.dim:
            return torch.zeros(total, 0, dtype=torch.float64)

        def column(c: Tensor) -> Tensor:
            _, out = torch.func.jvp(self._move, (self._zero,), (c,))
            return torch.cat([v.reshape(-1) for v in out])

        eye = torch.eye(self.dim, dtype=torch.float64)
        return torch.func.vmap(column, chunk_size=chunk)(eye).T

    def _move(self, coords: Tensor) -> tuple[Tensor, ...]:
        """The parameters moved by ``identity + xi`` of every unit of every group (``xi`` from
        the coordinates), and the unread entries shifted: at ``coords = 0``, its derivative is
        J."""
        params = dict(self.params)
        chunks = coords.split(self.chunks)
        for (group, units, basis), chunk in zip(self.parts, chunks, strict=False):
            base = gauge.identity(group, self.S)
            for unit, c in zip(units, chunk.reshape(len(units), -1), strict=True):
                element = base + torch.einsum("i,i...->...", c, basis)
                params = gauge.apply(group, params, unit, element, self.S)
        for (table, start, end), c in zip(self.unread, chunks[len(self.parts) :], strict=True):
            value = params[table]
            moved = value[start:end] + c.reshape(end - start, -1)
            params[table] = torch.cat([value[:start], moved, value[end:]])
        return tuple(params[name] for name in self.names)

    def J(self, coords: Tensor) -> dict[str, Tensor]:
        out = {name: torch.zeros_like(value) for name, value in self.params.items()}
        if self._adjoint is None or not self._adjoint.requires_grad:
            return out
        grads = torch.autograd.grad(
            self._adjoint, self._probe, coords, retain_graph=True, allow_unused=True
        )
        for i, grad in zip(self._live, grads, strict=True):
            if grad is not None:
                out[self.names[i]] = grad
        return out

    def J_T(self, direction: Mapping[str, Tensor]) -> Tensor:
        if not self._moved:
            return torch.zeros_like(self._zero)
        cotangents = [direction[self.names[i]].to(torch.float64) for i in self._live]
        (out,) = torch.autograd.grad(
            self._moved, self._coords, cotangents, retain_graph=True, allow_unused=True
        )
        return torch.zeros_like(self._zero) if out is None else out

    def precondition(self, coords: Tensor) -> Tensor:
        """An approximation of (J^T J)^-1, block by block: each group's own Gram operator, in
        closed form where its moves are multiplicative, the identity elsewhere."""
        if self._blocks is None:
            self._blocks = [_preconditioner(g, self.params, u, b, self.S) for g, u, b in self.parts]
        chunks = list(coords.split(self.chunks))
        for i, block in enumerate(self._blocks):
            if block is not None:
                chunks[i] = block(chunks[i])
        return torch.cat(chunks)

    def _norm_estimate(self, steps: int = 12) -> float:
        """||J||_2, by power iteration on J^T J (a scale for the stopping test)."""
        if not self.dim:
            return 0.0
        x = torch.randn(self.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        value = 0.0
        for _ in range(steps):
            x = x / x.norm()
            y = self.J_T(self.J(x))
            value = float(y.norm())
            x = y
        return math.sqrt(value)


def project_horizontal(
    space: VerticalSpace,
    update: Mapping[str, Tensor],
    *,
    tol: float = 1e-12,
    max_iter: int | None = None,
) -> dict[str, Tensor]:
    """``update`` (parameter name -> tensor) without its vertical component at the point of
    ``space`` (a :class:`VerticalSpace`; build one per point and reuse it across calls).

    Preconditioned CGLS on ``min_c ||update - J c||``: the residual is the horizontal part. It
    stops when ``||J^T r|| <= tol ||J|| ||r||``."""
    names = space.names
    r = {name: update[name].detach().to(torch.float64) for name in names}
    if space.dim:
        r = _cgls(space, r, tol, max_iter if max_iter is not None else 4 * space.dim + 20)
    return {name: r[name].to(update[name].dtype) for name in names}


def _cgls(
    space: VerticalSpace, r: dict[str, Tensor], tol: float, max_iter: int
) -> dict[str, Tensor]:
    s = space.J_T(r)
    z = space.precondition(s)
    p, gamma = z, float(s @ z)
    for _ in range(max_iter):
        if float(s.norm()) <= tol * space.norm * _norm(r):
            return r
        q = space.J(p)
        alpha = gamma / sum(float((v * v).sum()) for v in q.values())
        r = {name: r[name] - alpha * q[name] for name in r}
        s = space.J_T(r)
        z = space.precondition(s)
        gamma, previous = float(s @ z), gamma
        p = z + (gamma / previous) * p
    warnings.warn(
        f"project_horizontal stopped after {max_iter} iterations with a vertical residual "
        f"{float(s.norm()) / max(space.norm * _norm(r), 1e-300):.1e} (relative)",
        RuntimeWarning,
        stacklevel=3,
    )
    return r


def _norm(tensors: Mapping[str, Tensor]) -> float:
    return math.sqrt(sum(float((v * v).sum()) for v in tensors.values()))


def _preconditioner(group: gauge.Group, params, units, basis: Tensor, S):
    """The inverse of the group's Gram operator J_g^T J_g, unit by unit, on the group's
    coordinates (all units at once): in closed form when every move is multiplicative (a
    Sylvester operator, or a diagonal for scalings), else the inverse of its scale along one
    random direction (translations, rotations of RMSNorm readers)."""
    dim, count = basis.shape[0], len(units)
    closed = group.kind != "translation" and all(act.form is not None for act in group.acts)
    if not closed:
        generator = torch.Generator().manual_seed(0)
        scales = torch.tensor([_scale(group, params, u, basis, S, generator) for u in units])
        return lambda chunk: (chunk.reshape(count, dim) / scales[:, None]).reshape(-1)
    grams = [_sylvester(group, params, unit, S) for unit in units]
    if group.kind == "scaling":
        g = torch.stack(grams)  # (units, 1, n)

        def solve(xi: Tensor) -> Tensor:
            return xi / g

    else:
        U, V, D = (torch.stack(parts) for parts in zip(*grams, strict=True))

        def solve(xi: Tensor) -> Tensor:
            return U @ ((U.mT @ xi @ V) / D) @ V.mT

    def apply(chunk: Tensor) -> Tensor:
        xi = torch.einsum("ui,ijk->ujk", chunk.reshape(count, dim), basis)
        return torch.einsum("ujk,ijk->ui", solve(xi), basis).reshape(-1)

    return apply


def _scale(group: gauge.Group, params, unit, basis: Tensor, S, generator) -> float:
    """|J z|^2 for one random unit direction z of the unit's algebra."""
    c = torch.randn(basis.shape[0], generator=generator, dtype=torch.float64)
    moved = gauge.tangent(group, params, unit, torch.einsum("i,i...->...", c / c.norm(), basis), S)
    return sum(float((v * v).sum()) for v in moved.values()) + 1e-300


def _sylvester(group: gauge.Group, params, unit, S):
    """The unit's Gram operator in closed form. A move X E (or X E^-1) has tangent X xi, so it
    adds X^T X on the left of xi; X E^T (or E^-T) adds it on the right; f(E) X likewise with
    X X^T. So G xi = A xi + xi B, and G^-1 xi = U ((U^T xi V) / (a_i + b_j)) V^T with the
    eigenvectors U, V of A, B. A scaling's G is the diagonal of squared column (or row) norms.
    Returns (U, V, a_i + b_j), or the diagonal as a 1 x n row for a scaling."""
    n = group.size(S)
    if group.kind == "scaling":
        g = torch.zeros(1, n, dtype=torch.float64)
        for act, X in gauge.act_views(group, params, unit, S):
            side, _, offset = act.form
            Y = X + offset
            g = g + ((Y * Y).sum(0) if side == "right" else (Y * Y).sum(1))[None, :]
        return g + 1e-12 * float(g.max()) + 1e-300
    A = torch.zeros(n, n, dtype=torch.float64)
    B = torch.zeros(n, n, dtype=torch.float64)
    for act, X in gauge.act_views(group, params, unit, S):
        side, form, offset = act.form
        Y = X + offset
        gram = Y.T @ Y if side == "right" else Y @ Y.T
        if (side == "right") == (form in ("E", "E^-1")):
            A = A + gram
        else:
            B = B + gram
    a, U = torch.linalg.eigh(A)
    b, V = torch.linalg.eigh(B)
    denominator = a[:, None] + b[None, :]
    return U, V, denominator + 1e-12 * float(denominator.max()) + 1e-300


def _sizes(model: nn.Module) -> dict[str, int]:
    return gauge.as_sizes(model.sizes)
