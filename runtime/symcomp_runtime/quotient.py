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
from .actions import Group
from .precondition import apply_preconditioner, block_preconditioner
from .vertical import BatchedVertical

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

    ``J`` and ``J^T`` are :class:`.vertical.BatchedVertical`'s (every unit of a group at once,
    closed forms where the actions have them), on flat vectors in ``named_parameters`` order,
    in ``dtype`` (the parameters' by default; scalars of the solves are reduced in float64).
    :meth:`dense` builds the same space independently, from the group actions themselves, as
    an exact reference for tiny instances."""

    def __init__(
        self,
        model: nn.Module,
        groups: Mapping[str, Group],
        rope: Mapping[str, object] | None = None,
        unread: Unread = (),
        dtype: torch.dtype | None = None,
    ):
        self.model, self.groups, self.rope, self.unread = model, groups, rope, unread
        self.op = BatchedVertical(model, groups, rope, unread, dtype)
        self.names = self.op.names
        self.shapes = self.op.shapes
        self._preconditioner: list | None = None  # built when first needed

    @property
    def dim(self) -> int:
        return self.op.dim

    def dense(self, chunk: int = 512) -> Tensor:
        """The vertical space's spanning columns (parameters x coordinates), by vectorized
        forward AD through the group actions (``gauge.apply``), in float64: the reference the
        batched ``J`` is checked against."""
        params = _params(self.model)
        S = _sizes(self.model)
        parts = []
        for group in self.groups.values():
            basis = gauge.algebra_basis(group, S, self.rope)
            units = gauge.units(group, S)
            if group.continuous and basis.shape[0] and units:
                parts.append((group, units, basis))
        chunks = [len(units) * basis.shape[0] for _, units, basis in parts]
        chunks += [(end - start) * params[t].shape[1] for t, start, end in self.unread]
        total = sum(value.numel() for value in params.values())
        if not sum(chunks):
            return torch.zeros(total, 0, dtype=torch.float64)

        def move(coords: Tensor) -> Tensor:
            moved = dict(params)
            split = coords.split(chunks)
            for (group, units, basis), chunk in zip(parts, split, strict=False):
                base = gauge.identity(group, S)
                for unit, c in zip(units, chunk.reshape(len(units), -1), strict=True):
                    element = base + torch.einsum("i,i...->...", c, basis)
                    moved = gauge.apply(group, moved, unit, element, S)
            for (table, start, end), c in zip(self.unread, split[len(parts) :], strict=True):
                value = moved[table]
                shifted = value[start:end] + c.reshape(end - start, -1)
                moved[table] = torch.cat([value[:start], shifted, value[end:]])
            return torch.cat([moved[name].reshape(-1) for name in self.names])

        zero = torch.zeros(sum(chunks), dtype=torch.float64)

        def column(c: Tensor) -> Tensor:
            return torch.func.jvp(move, (zero,), (c,))[1]

        eye = torch.eye(sum(chunks), dtype=torch.float64)
        return torch.func.vmap(column, chunk_size=chunk)(eye).T

    def flatten(self, direction: Mapping[str, Tensor]) -> Tensor:
        return torch.cat(
            [direction[name].detach().reshape(-1).to(self.op.dtype) for name in self.names]
        )

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        sizes = [math.prod(self.shapes[name]) for name in self.names]
        parts = flat.split(sizes)
        return {n: p.view(self.shapes[n]) for n, p in zip(self.names, parts, strict=True)}

    def J(self, coords: Tensor) -> dict[str, Tensor]:
        return self.unflatten(self.op.J(coords))

    def J_T(self, direction: Mapping[str, Tensor]) -> Tensor:
        return self.op.J_T(self.flatten(direction))

    def precondition(self, coords: Tensor) -> Tensor:
        """An approximation of (J^T J)^-1, block by block (see :mod:`.precondition`)."""
        if self._preconditioner is None:
            self._preconditioner = block_preconditioner(self.op)
        return apply_preconditioner(self.op, self._preconditioner, coords)


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
    stops when the residual's vertical part, estimated through the preconditioner
    (``sqrt(s^T M s)`` with ``s = J^T r``), is at most ``tol`` times its norm."""
    names = space.names
    r = space.flatten(update)
    if space.dim:
        r = _cgls(space, r, tol, max_iter if max_iter is not None else 4 * space.dim + 20)
    out = space.unflatten(r)
    return {name: out[name].to(update[name].dtype) for name in names}


def _cgls(space: VerticalSpace, r: Tensor, tol: float, max_iter: int) -> Tensor:
    op = space.op
    s = op.J_T(r)
    z = space.precondition(s)
    p, gamma = z, _dot(s, z)
    for _ in range(max_iter):
        if math.sqrt(max(gamma, 0.0)) <= tol * _dot(r, r) ** 0.5:
            return r
        q = op.J(p)
        alpha = gamma / max(_dot(q, q), 1e-300)
        r = r - alpha * q
        s = op.J_T(r)
        z = space.precondition(s)
        gamma, previous = _dot(s, z), gamma
        p = z + (gamma / previous) * p
    warnings.warn(
        f"project_horizontal stopped after {max_iter} iterations with a vertical residual "
        f"{math.sqrt(max(gamma, 0.0)) / max(_dot(r, r) ** 0.5, 1e-300):.1e} (relative)",
        RuntimeWarning,
        stacklevel=3,
    )
    return r


def _dot(a: Tensor, b: Tensor, chunk: int = 1 << 20) -> float:
    """``a . b`` summed in float64 (chunk by chunk: no float64 copy of a float32 vector)."""
    if a.dtype == torch.float64:
        return float(torch.dot(a, b))
    return math.fsum(
        float(torch.dot(x, y)) for x, y in zip(a.split(chunk), b.split(chunk), strict=True)
    )


def _sizes(model: nn.Module) -> dict[str, int]:
    return gauge.as_sizes(model.sizes)
