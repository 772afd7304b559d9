"""The vertical map ``J`` (Lie-algebra coordinates -> parameter directions) and its adjoint,
batched: one tensor operation per (group, action, member) over all the group's units, every
layer and head at once, instead of one replay of the group action per unit.

The parameters live in one flat vector (``named_parameters`` order). Each *batch* is one action
of one group on one member parameter pattern, over every unit: the flat indices of each unit's
view (a ``units x rows x cols`` index tensor, or a plain slice for a whole parameter), and how
the view moves to first order:

- an action with a known form (``Act.form``: ``X f(E)`` or ``f(E) X``): in closed form, ``Y xi``,
  ``-Y xi``, ``Y xiᵀ``, ``xi X`` ... (a batched matmul; a scaling is a broadcast product);
- any other action (translations, reader rotations through norm gains): the derivative of its
  rendered torch code, ``torch.func.jvp`` under ``vmap`` over the units, and ``vjp`` for the
  adjoint. The parameters it reads are stacked once per point.

Coordinates per unit: the whole ``n x n`` matrix (or ``1 x n`` row) of the algebra element,
projected onto the algebra (identity for GL, the skew part for O/SO, its part that fixes the ones
vector for a rotation that does; an orthonormal basis where RoPE restricts the algebra). The
coordinates are redundant where the projection is not the identity; the least-squares solves
on them (``symcomp_runtime.quotient``) do not mind.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from . import actions as gauge
from .actions import Act, Group

Unread = tuple[tuple[str, int, int], ...]


@dataclass
class _Batch:
    group: int  # index into the space's groups
    units: Tensor  # positions of the batch's units among the group's units
    index: Tensor | None  # (units, rows, cols) flat indices of the views, None: the slice
    start: int  # the slice's start (a whole parameter, one unit)
    shape: tuple[int, ...]  # the view's shape
    act: Act
    Y: Tensor | None  # a form action's stacked views (plus its offset)
    reads: dict[str, Tensor] | None  # a generic action's stacked reads


class _Algebra:
    """Lift (coordinates -> algebra element) and its adjoint for one group, all units."""

    def __init__(self, group: Group, S, rope):
        self.group, self.n = group, group.size(S)
        self.matrix = group.is_matrix
        self.basis: Tensor | None = None
        self.skew = group.kind in ("O", "SO")
        self.ones = group.fixes_ones
        if group.commutes_with_rope or (self.matrix and group.fixes_ones and not self.skew):
            self.basis = gauge.algebra_basis(group, S, rope).reshape(-1, self._width)

    @property
    def _width(self) -> int:
        return self.n * self.n if self.matrix else self.n

    @property
    def dim(self) -> int:
        return self._width if self.basis is None else self.basis.shape[0]

    def _project(self, xi: Tensor) -> Tensor:
        if self.skew:
            xi = 0.5 * (xi - xi.mT)
            if self.ones:  # Π xi Π, Π = I - 1 1ᵀ / n: the skew matrices with xi 1 = 0
                xi = xi - xi.mean(-1, keepdim=True)
                xi = xi - xi.mean(-2, keepdim=True)
        return xi

    def lift(self, c: Tensor) -> Tensor:
        """(units, dim) -> (units, n, n) or (units, 1, n)."""
        if self.basis is not None:
            c = c @ self.basis.to(c.dtype)
        shape = (self.n, self.n) if self.matrix else (1, self.n)
        return self._project(c.reshape(c.shape[0], *shape))

    def lower(self, xi: Tensor) -> Tensor:
        xi = self._project(xi).reshape(xi.shape[0], -1)
        return xi if self.basis is None else xi @ self.basis.to(xi.dtype).T


class BatchedVertical:
    """``J`` and ``J^T`` at ``model``'s parameters, in ``dtype`` (the parameters' by default),
    on flat vectors."""

    def __init__(
        self,
        model: nn.Module,
        groups: Mapping[str, Group],
        rope=None,
        unread: Unread = (),
        dtype: torch.dtype | None = None,
    ):
        named = dict(model.named_parameters())
        self.names = list(named)
        self.dtype = dtype or next(iter(named.values())).dtype
        self.shapes = {n: tuple(p.shape) for n, p in named.items()}
        self.offsets, start = {}, 0
        for name in self.names:
            self.offsets[name] = start
            start += math.prod(self.shapes[name])
        self.size = start
        self.S = S = gauge.as_sizes(model.sizes)
        params = {n: p.detach().to(self.dtype) for n, p in named.items()}
        self.groups: list[Group] = []
        self.algebras: list[_Algebra] = []
        self.counts: list[int] = []
        self.batches: list[_Batch] = []
        self._numbered: dict[str, Tensor] = {}
        for group in groups.values():
            units = gauge.units(group, S) if group.continuous else []
            if not units:
                continue
            self.groups.append(group)
            self.algebras.append(_Algebra(group, S, rope))
            self.counts.append(len(units))
            self._add_batches(len(self.groups) - 1, group, units, params, S)
        self.unread = [
            (self.offsets[t] + a * self.shapes[t][1], (b - a) * self.shapes[t][1])
            for t, a, b in unread
        ]
        self.chunks = [c * a.dim for c, a in zip(self.counts, self.algebras, strict=True)]
        self.chunks += [width for _, width in self.unread]
        self.dim = sum(self.chunks)
        self._numbered.clear()
        self._record()

    # --- construction ---------------------------------------------------------------------

    def _add_batches(self, g: int, group: Group, units, params, S) -> None:
        names = list(params)
        keyed: dict[tuple, list] = {}
        for position, unit in enumerate(units):
            seen: dict[tuple, int] = {}
            for act, target, cut, block, _ in gauge._contexts(group, names, unit, S):
                local = gauge._local(target) or target
                member = (group.acts.index(act), local)
                seen[member] = seen.get(member, -1) + 1  # the i-th block of a kv-head unit
                key = (*member, seen[member])
                keyed.setdefault(key, []).append((position, unit, act, target, cut, block))
        for members in keyed.values():
            self.batches.append(self._batch(g, group, members, params, S))

    def _batch(self, g: int, group: Group, members, params, S) -> _Batch:
        act = members[0][2]
        indices, views, reads = [], [], []
        for _, unit, _, target, _, block in members:
            if target not in self._numbered:  # each entry's flat index, as a parameter
                count = math.prod(self.shapes[target])
                start = self.offsets[target]
                numbered = torch.arange(start, start + count).reshape(self.shapes[target])
                self._numbered[target] = numbered
            index = gauge.view(group, self._numbered, unit, target, S, block)
            indices.append(index)

            def v(pattern: str, target=target, unit=unit, block=block, out=None):
                path = gauge._resolve(pattern, target, unit[0])
                return gauge.view(group, params, unit, path, S, block)

            if act.form is not None:
                views.append(v(act.target) + act.form[2])
            else:
                reads.append(_recorded(act, v, group, S))
        stacked = torch.stack(indices)
        whole = len(members) == 1 and stacked.numel() == math.prod(self.shapes[members[0][3]])
        first = int(stacked.reshape(-1)[0])
        contiguous = whole and torch.equal(
            stacked.reshape(-1), torch.arange(first, first + stacked.numel())
        )
        return _Batch(
            group=g,
            units=torch.tensor([m[0] for m in members]),
            index=None if contiguous else stacked,
            start=first,
            shape=tuple(stacked.shape[1:]),
            act=act,
            Y=torch.stack(views) if views else None,
            reads={k: torch.stack([r[k] for r in reads]) for k in reads[0]} if reads else None,
        )

    # --- the maps ---------------------------------------------------------------------------

    def split(self, c: Tensor) -> list[Tensor]:
        """Coordinates -> one (units, dim) block per group, then the unread entries."""
        parts = list(c.split(self.chunks))
        for i, (count, algebra) in enumerate(zip(self.counts, self.algebras, strict=True)):
            parts[i] = parts[i].reshape(count, algebra.dim)
        return parts

    def tangents(self, c: Tensor) -> list[Tensor]:
        """Every batch's stacked moved views (units, rows, cols) along coordinates ``c``."""
        parts = self.split(c.to(self.dtype))
        xis = [a.lift(p) for a, p in zip(self.algebras, parts, strict=False)]
        out: list[Tensor | None] = [None] * len(self.batches)
        for i, batch in enumerate(self.batches):
            if batch.Y is not None:
                group = self.groups[batch.group]
                out[i] = _form_tangent(
                    batch.act.form, batch.Y, xis[batch.group][batch.units], group
                )
        curved = [j for j, i in enumerate(self._generic) if i not in self._affine]
        for i, fixed in self._affine.items():  # an affine move: its value less its base
            batch = self.batches[i]
            out[i] = self._evaluate(batch, xis[batch.group][batch.units]) - fixed
        if curved:
            batches = [self.batches[self._generic[j]] for j in curved]
            inputs = [xis[batch.group][batch.units] for batch in batches]
            values = torch.autograd.grad(
                [self._adjoints[j] for j in curved],
                [self._probes[j] for j in curved],
                inputs,
                retain_graph=True,
                allow_unused=True,
            )
            for j, value in zip(curved, values, strict=True):
                probe = self._probes[j]
                out[self._generic[j]] = torch.zeros_like(probe) if value is None else value.detach()
        return out  # type: ignore[return-value]

    def _evaluate(self, batch: _Batch, xi: Tensor) -> Tensor:
        """A generic action's moved views at ``identity + xi`` per unit (its rendered code)."""
        base = gauge.identity(self.groups[batch.group], self.S).to(self.dtype)
        kept = gauge._DTYPE["dtype"]
        gauge._DTYPE["dtype"] = self.dtype  # the actions' constants (ones, eye) in our dtype
        try:
            moved = []
            for u in range(len(batch.units)):
                reads = {k: value[u] for k, value in batch.reads.items()}
                if batch.act.shift:  # X + g(E), g reading no parameter: g alone, from X = 0
                    reads = {
                        k: torch.zeros((), dtype=v.dtype).expand(v.shape) for k, v in reads.items()
                    }
                value = batch.act.fn(lambda p, reads=reads: reads[p], base + xi[u], self.S)
                moved.append(value.expand(batch.shape).to(self.dtype))
        finally:
            gauge._DTYPE["dtype"] = kept
        return torch.stack(moved)

    def J(self, c: Tensor) -> Tensor:
        out = torch.zeros(self.size, dtype=self.dtype)
        for batch, value in zip(self.batches, self.tangents(c), strict=True):
            if batch.index is None:
                out[batch.start : batch.start + value.numel()] += value.reshape(-1)
            else:
                out.index_add_(0, batch.index.reshape(-1), value.reshape(-1))
        parts = c.to(self.dtype).split(self.chunks)[len(self.groups) :]
        for (start, width), part in zip(self.unread, parts, strict=True):
            out[start : start + width] += part
        return out

    def J_T(self, r: Tensor) -> Tensor:
        r = r.to(self.dtype)
        grads = [
            torch.zeros(count, *a.lift(torch.zeros(1, a.dim, dtype=self.dtype)).shape[1:],
                        dtype=self.dtype)
            for count, a in zip(self.counts, self.algebras, strict=True)
        ]  # fmt: skip
        views = []
        for batch in self.batches:
            if batch.index is None:
                view = r[batch.start : batch.start + math.prod(batch.shape)]
                views.append(view.reshape(1, *batch.shape))
            else:
                views.append(r[batch.index])
        for batch, view in zip(self.batches, views, strict=True):
            if batch.Y is not None:
                group = self.groups[batch.group]
                grads[batch.group].index_add_(
                    0, batch.units, _form_adjoint(batch.act.form, batch.Y, view, group)
                )
        if self._generic:
            cotangents = [views[i] for i in self._generic]
            values = torch.autograd.grad(
                self._outputs, self._inputs, cotangents, retain_graph=True, allow_unused=True
            )
            for i, value in zip(self._generic, values, strict=True):
                if value is not None:
                    batch = self.batches[i]
                    grads[batch.group].index_add_(0, batch.units, value.detach())
        out = [a.lower(g).reshape(-1) for a, g in zip(self.algebras, grads, strict=True)]
        out += [r[start : start + width] for start, width in self.unread]
        return torch.cat(out) if out else torch.zeros(0, dtype=self.dtype)

    def unit_norms(self, c: Tensor) -> list[Tensor]:
        """Per group, per unit: ``||J_u c_u||^2`` summed over the unit's views (overlaps of
        one unit's views ignored): the scale of the unit's Gram operator along ``c_u``."""
        out = [torch.zeros(count, dtype=torch.float64) for count in self.counts]
        for batch, value in zip(self.batches, self.tangents(c), strict=True):
            norms = value.to(torch.float64).pow(2).reshape(value.shape[0], -1).sum(-1)
            out[batch.group].index_add_(0, batch.units, norms)
        return out

    def _record(self) -> None:
        """The generic actions' derivatives as one recorded graph: ``J^T`` is one backward
        pass through it, ``J`` the backward pass of that (linear in its input), so that no
        Python runs per unit at each call."""
        self._generic = [i for i, b in enumerate(self.batches) if b.Y is None]
        self._inputs, self._outputs, self._probes = [], [], []
        self._adjoints: list[Tensor] = []
        self._affine = {}
        if not self._generic:
            return
        kept = gauge._DTYPE["dtype"]
        gauge._DTYPE["dtype"] = self.dtype  # the actions' constants (ones, eye) in our dtype
        try:
            self._record_generic()
        finally:
            gauge._DTYPE["dtype"] = kept

    def _record_generic(self) -> None:
        with torch.enable_grad():
            for i in self._generic:
                batch = self.batches[i]
                group = self.groups[batch.group]
                base = gauge.identity(group, self.S).to(self.dtype)
                x = torch.zeros(len(batch.units), *base.shape, dtype=self.dtype)
                x.requires_grad_(True)
                moved = []
                for u in range(len(batch.units)):
                    reads = {k: value[u] for k, value in batch.reads.items()}
                    value = batch.act.fn(lambda p, reads=reads: reads[p], base + x[u], self.S)
                    moved.append(value.expand(batch.shape).to(self.dtype))
                self._inputs.append(x)
                self._outputs.append(torch.stack(moved))
        generator = torch.Generator().manual_seed(0)
        self._affine: dict[int, Tensor] = {}
        for i, x, out in zip(self._generic, self._inputs, self._outputs, strict=True):
            fixed = out.detach()
            xi = torch.randn(x.shape, generator=generator, dtype=torch.float64).to(self.dtype)
            base = gauge.identity(self.groups[self.batches[i].group], self.S).to(self.dtype)
            if self.groups[self.batches[i].group].kind != "translation" or bool(base.any()):
                continue  # only translations are tried: their identity is zero
            with torch.no_grad():
                shifted = 0.0 if self.batches[i].act.shift else fixed
                once = self._evaluate(self.batches[i], xi) - shifted
                twice = self._evaluate(self.batches[i], 2 * xi) - shifted
            tol = 1e-5 if self.dtype == torch.float32 else 1e-10
            if float((twice - 2 * once).abs().max()) <= tol * float(once.abs().max()) + 1e-30:
                shift = self.batches[i].act.shift
                self._affine[i] = torch.zeros((), dtype=self.dtype) if shift else fixed
        with torch.enable_grad():
            self._probes = [torch.zeros_like(o, requires_grad=True) for o in self._outputs]
            adjoints = torch.autograd.grad(
                self._outputs, self._inputs, self._probes, create_graph=True, allow_unused=True
            )  # (an affine move's adjoint graph is unused: its J runs its code)
            self._adjoints = [
                torch.zeros_like(x) if a is None else a
                for a, x in zip(adjoints, self._inputs, strict=True)
            ]


def _recorded(act: Act, v, group: Group, S) -> dict[str, Tensor]:
    """The views ``act``'s code reads (pattern -> tensor), found by running it once."""
    seen: dict[str, Tensor] = {}

    def record(pattern: str) -> Tensor:
        seen[pattern] = v(pattern)
        return seen[pattern]

    act.fn(record, gauge.identity(group, S), S)
    return seen


_SIGN = {"E": 1.0, "E^T": 1.0, "E^-1": -1.0, "E^-T": -1.0}


def _form_tangent(form, Y: Tensor, xi: Tensor, group: Group) -> Tensor:
    side, f, _ = form
    sign = _SIGN[f]
    if group.kind == "scaling":  # diag(xi): a broadcast product, E^T = E
        return sign * (Y * xi if side == "right" else Y * xi.mT)
    xi = xi.mT if f in ("E^T", "E^-T") else xi
    return sign * (Y @ xi if side == "right" else xi @ Y)


def _form_adjoint(form, Y: Tensor, R: Tensor, group: Group) -> Tensor:
    side, f, _ = form
    sign = _SIGN[f]
    if group.kind == "scaling":
        if side == "right":
            return sign * (Y * R).sum(-2, keepdim=True)
        return sign * (Y * R).sum(-1, keepdim=True).mT
    g = Y.mT @ R if side == "right" else R @ Y.mT
    return sign * (g.mT if f in ("E^T", "E^-T") else g)
