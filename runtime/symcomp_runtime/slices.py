"""Translation slices: the chart's translation steps solved on every forward of the reduced
model without forming the constraint matrix C (its sparsity pattern is read once)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from .actions import Sizes, Unit, apply, units
from .gauge import (
    Chart,
    _anchor_entries,
    _anchor_runs,
    _gather,
    _solve_dependents,
    _translation_moves,
    _unit_key,
    _write,
    _writes,
    constant_move,
    fixed_entries,
)
from .sparse import Fold, Moves

# --- translation slices, solved on every forward without forming C -----------------------------


@dataclass(frozen=True)
class Probe:
    """One measurement of a slice's nonzeros of C: the element ``element`` of ``group`` on
    ``unit`` moves the unit's anchors (read through ``runs``; they sit at ``offset`` in the
    slice's anchor vector), and the change at ``rows`` is C's nonzeros ``slots``."""

    group: str
    unit: Unit
    element: Tensor
    runs: tuple[tuple[str, Tensor], ...]
    offset: int
    rows: Tensor
    slots: Tensor


@dataclass(frozen=True)
class Slice:
    """A translation step's slice ``C^T x = 0`` on one or more units, ready for the reduced
    model's forward. x is the anchor vector, read through ``runs`` ((path, flat indices), in
    order). C (anchor entries x translation dimension) is sparse with a pattern that does not
    depend on the point: ``rows``, ``cols`` are its nonzeros off the dependent entries,
    ``dep_cols`` (with ``dep_slot``, which dependent entry) those on them. Their values come
    in that order from ``probes``: each is one group element, the sum of basis elements whose
    columns of C share no row (a colouring), so one application of the group measures all
    their nonzeros exactly (the move is linear in t). When the move is the same from every
    point (:func:`constant_move`) they are measured once: ``values`` holds those off the
    dependent entries, and the solve for the dependent ones is kept: ``divisors`` (C_d's
    nonzeros) when ``diagonal``, the solve being a division, otherwise ``lift``, a
    (units, r, k) stack of C_d's pseudo-inverses. The dependent entries ``x_d`` solve
    ``C_d^T x_d = -C^T x``, x with them at zero. Units whose anchors are disjoint share one
    slice: their constraints are independent, so solving them together is solving them in
    turn."""

    runs: tuple[tuple[str, Tensor], ...]
    rows: Tensor
    cols: Tensor
    dep_cols: Tensor
    dep_slot: Tensor
    probes: tuple[Probe, ...]
    writes: tuple[tuple[str, Tensor, Tensor], ...]
    dimension: int
    dependents: int
    diagonal: bool  # each dependent entry's row of C has one nonzero, in distinct columns
    values: Tensor | None = None
    divisors: Tensor | None = None
    lift: Tensor | None = None
    fold: Fold | None = None  # C over kept rows: x is summed over the rows each stands for


def translation_slices(chart: Chart, record, shapes, S: Sizes, dtype=torch.float64, device=None):
    """``{step index: slices}`` for every translation step: what :func:`reconstruct` solves
    them with. C's pattern is read at a fixed random point (generic: a structural nonzero is
    nonzero there); values that do not depend on the point are kept in float64."""
    generator = torch.Generator().manual_seed(0)
    point = {
        name: torch.randn(shape, generator=generator, dtype=torch.float64)
        for name, shape in shapes.items()
    }
    out: dict[int, tuple[Slice, ...]] = {}
    for i, step in enumerate(chart.steps):
        if step.kind != "translation":
            continue
        constant = constant_move(chart, step)
        parts = []
        for unit in units(chart.groups[step.group], S):
            dependent = record[_unit_key(i, unit)]
            if dependent.numel() == 0:
                continue
            C, elements, fold = _translation_moves(chart, step, point, unit, S)
            entries = _anchor_entries(chart, step, unit, shapes, S)
            runs = _anchor_runs(chart, step, unit, shapes, S)
            found = _slice(C, elements, entries, dependent.tolist(), constant, unit, runs, fold)
            parts.append(found)
        out[i] = tuple(_slice_to(found, dtype, device) for found in _merged(parts))
    return out


def _colours(C: Moves) -> Tensor:
    """A greedy colouring of C's columns (in order, each the smallest colour its earlier
    neighbours leave): two columns with a nonzero in the same row differ."""
    dimension = C.shape[1]
    rows, cols = C.rows, C.cols
    # the clashing pairs: nonzeros of one row (C is held row-major)
    start = torch.searchsorted(rows, rows)
    end = torch.searchsorted(rows, rows, right=True)
    span = int((end - start).max()) if rows.numel() else 0
    pairs = []
    for shift in range(1, span):
        j = start + shift
        ok = j < end
        a, b = cols[ok], cols[j[ok]]
        pairs.append(torch.maximum(a, b) * dimension + torch.minimum(a, b))
    colour = torch.zeros(dimension, dtype=torch.long)
    if not pairs:
        return colour
    edges = torch.unique(torch.cat(pairs))  # later * dimension + earlier, sorted by the later
    later, earlier = edges // dimension, edges % dimension
    keep = later != earlier
    later, earlier = later[keep], earlier[keep]
    ptr = torch.searchsorted(later, torch.arange(dimension + 1))
    for col in range(dimension):
        a, b = int(ptr[col]), int(ptr[col + 1])
        if a == b:
            continue
        taken = torch.zeros(b - a + 1, dtype=torch.bool)
        seen = colour[earlier[a:b]]
        taken[seen[seen <= b - a]] = True
        colour[col] = int(torch.nonzero(~taken)[0])
    return colour


def _slice(C: Moves, elements, entries, dependent: list[int], constant: bool, unit, runs, fold):
    """One unit's :class:`Slice`, from C (its nonzeros) at a generic point. With a ``fold``
    (a constant move; C over the kept rows), every nonzero reads the summed x, the dependent
    entries' rows at zero."""
    rows, cols = C.rows, C.cols
    dep = torch.tensor(dependent, dtype=torch.long)
    folded = bool(fold.segments)
    slot = torch.full((C.shape[0],), -1, dtype=torch.long)
    slot[fold.kept_row(dep) if folded else dep] = torch.arange(dep.numel())
    is_on = slot[rows] >= 0
    off = torch.arange(rows.numel()) if folded else torch.nonzero(~is_on).reshape(-1)
    on = torch.nonzero(is_on).reshape(-1)
    place = torch.empty(rows.numel(), dtype=torch.long)
    place[off] = torch.arange(off.numel())
    place[on] = off.numel() + torch.arange(on.numel())
    names = list(dict.fromkeys(name for name, _ in elements))
    group = torch.tensor([names.index(name) for name, _ in elements], dtype=torch.long)
    key = _colours(C)[cols] * len(names) + group[cols]  # the nonzeros each probe measures
    found, inverse = torch.unique(key, return_inverse=True)
    first = torch.full((found.numel(),), rows.numel(), dtype=torch.long)
    first = first.scatter_reduce(0, inverse, torch.arange(rows.numel()), "amin")
    by_class = torch.argsort(inverse, stable=True)
    members = torch.split(by_class, torch.bincount(inverse, minlength=found.numel()).tolist())
    probes = []
    for k in [] if folded else torch.argsort(first).tolist():  # in order of first appearance
        mine = members[k]
        used = torch.unique(cols[mine]).tolist()
        probes.append(
            Probe(
                group=names[int(found[k]) % len(names)],
                unit=unit,
                element=torch.stack([elements[c][1] for c in used]).sum(0),
                runs=runs,
                offset=0,
                rows=rows[mine],
                slots=place[mine],
            )
        )
    dep_cols = cols[on]
    dep_slot = slot[rows[on]]
    diagonal = on.numel() == len(dependent) and torch.unique(dep_cols).numel() == on.numel()
    values = divisors = lift = None
    if constant:
        values = C.values[off]
        on_values = C.values[on]
        if diagonal:  # the solve is a division: keep the divisors
            divisors = on_values
        else:
            C_d = torch.zeros(C.shape[1], len(dependent), dtype=C.values.dtype)
            C_d[dep_cols, dep_slot] = on_values
            lift = torch.linalg.pinv(C_d)[None]
    return Slice(
        runs=runs,
        rows=rows[off],
        cols=cols[off],
        dep_cols=dep_cols,
        dep_slot=dep_slot,
        probes=tuple(probes),
        writes=_writes(entries, dependent),
        dimension=C.shape[1],
        dependents=len(dependent),
        diagonal=diagonal,
        values=values,
        divisors=divisors,
        lift=lift,
        fold=fold if folded else None,
    )


def _merged(parts: list[Slice]) -> list[Slice]:
    """The units' slices as one when that is exact and cheap: their anchors are disjoint, and
    either every solve is a division or all are constant with lifts of one shape."""
    if len(parts) < 2 or any(found.fold is not None for found in parts):
        return parts
    flats: dict[str, list[Tensor]] = {}
    for found in parts:
        for path, index in found.runs:
            flats.setdefault(path, []).append(index)
    for index in flats.values():
        joined = torch.cat(index)
        if torch.unique(joined).numel() != joined.numel():
            return parts
    diagonal = all(found.diagonal for found in parts)
    same = all(
        found.lift is not None and found.lift.shape == parts[0].lift.shape for found in parts
    )
    return [_merge(parts, diagonal)] if diagonal or same else parts


def _offsets(sizes: list[int]) -> list[int]:
    return [sum(sizes[:i]) for i in range(len(sizes))]


def _merge(parts: list[Slice], diagonal: bool) -> Slice:
    lengths = [sum(index.numel() for _, index in found.runs) for found in parts]
    row_at = _offsets(lengths)
    col_at = _offsets([found.dimension for found in parts])
    dep_at = _offsets([found.dependents for found in parts])
    off_at = _offsets([found.rows.numel() for found in parts])
    on_at = _offsets([found.dep_cols.numel() for found in parts])
    total_off = sum(found.rows.numel() for found in parts)
    probes = []
    for found, r0, o0, q0 in zip(parts, row_at, off_at, on_at, strict=True):
        k = found.rows.numel()
        for probe in found.probes:
            slots = torch.where(probe.slots < k, probe.slots + o0, probe.slots - k + total_off + q0)
            probes.append(replace(probe, offset=r0, slots=slots))
    writes: dict[str, tuple[list[Tensor], list[Tensor]]] = {}
    for found, d0 in zip(parts, dep_at, strict=True):
        for path, flat, at in found.writes:
            flats, slots = writes.setdefault(path, ([], []))
            flats.append(flat)
            slots.append(at + d0)

    def joined(field: str) -> Tensor | None:
        kept = [getattr(found, field) for found in parts]
        return None if kept[0] is None else torch.cat(kept)

    return Slice(
        runs=tuple(run for found in parts for run in found.runs),
        rows=torch.cat([found.rows + r0 for found, r0 in zip(parts, row_at, strict=True)]),
        cols=torch.cat([found.cols + c0 for found, c0 in zip(parts, col_at, strict=True)]),
        dep_cols=torch.cat([f.dep_cols + c0 for f, c0 in zip(parts, col_at, strict=True)]),
        dep_slot=torch.cat([f.dep_slot + d0 for f, d0 in zip(parts, dep_at, strict=True)]),
        probes=tuple(probes),
        writes=tuple((path, torch.cat(f), torch.cat(a)) for path, (f, a) in writes.items()),
        dimension=sum(found.dimension for found in parts),
        dependents=sum(found.dependents for found in parts),
        diagonal=diagonal,
        values=joined("values"),
        divisors=joined("divisors"),
        lift=joined("lift"),
    )


def _slice_to(found: Slice, dtype, device) -> Slice:
    """The slice's index tensors on ``device``, its probes' elements in ``dtype`` (the solve
    stays in float64)."""
    return replace(
        found,
        runs=_runs_to(found.runs, device),
        rows=found.rows.to(device),
        cols=found.cols.to(device),
        dep_cols=found.dep_cols.to(device),
        dep_slot=found.dep_slot.to(device),
        probes=tuple(
            replace(
                probe,
                element=probe.element.to(device=device, dtype=dtype),
                runs=_runs_to(probe.runs, device),
                rows=probe.rows.to(device),
                slots=probe.slots.to(device),
            )
            for probe in found.probes
        ),
        writes=tuple((path, flat.to(device), at.to(device)) for path, flat, at in found.writes),
        values=None if found.values is None else found.values.to(device),
        divisors=None if found.divisors is None else found.divisors.to(device),
        lift=None if found.lift is None else found.lift.to(device),
        fold=None if found.fold is None else replace(found.fold, kept=found.fold.kept.to(device)),
    )


def _runs_to(runs, device) -> tuple[tuple[str, Tensor], ...]:
    return tuple((path, index.to(device)) for path, index in runs)


def _solve_slice(chart: Chart, params, S: Sizes, found: Slice) -> dict[str, Tensor]:
    """Fill a slice's dependent entries (differentiable in ``params``)."""
    x = _gather(params, found.runs)
    values = found.values
    if values is None:
        off = found.rows.numel()
        measured = torch.zeros(off + found.dep_cols.numel(), dtype=torch.float64, device=x.device)
        for probe in found.probes:
            group = chart.groups[probe.group]
            moved = _gather(apply(group, params, probe.unit, probe.element, S), probe.runs)
            change = moved - x[probe.offset : probe.offset + moved.numel()]
            measured = measured.index_put((probe.slots,), change[probe.rows].double())
        values, on = measured[:off], measured[off:]
    y = torch.zeros(found.dimension, dtype=torch.float64, device=x.device)
    read = x if found.fold is None else found.fold.sum(x)
    y = y.index_add(0, found.cols, values * read.index_select(0, found.rows).double())
    if found.diagonal:
        divisors = found.divisors if found.divisors is not None else on
        solved = y.new_zeros(found.dependents)
        solved = solved.index_put((found.dep_slot,), -y[found.dep_cols] / divisors)
    elif found.lift is not None:
        solved = -(found.lift @ y.reshape(found.lift.shape[0], -1, 1)).reshape(-1)
    else:
        C_d = y.new_zeros(found.dimension, found.dependents)
        C_d = C_d.index_put((found.dep_cols, found.dep_slot), on)
        solved = torch.linalg.lstsq(C_d, -y[:, None]).solution[:, 0]
    return _write(params, found.writes, solved.to(x.dtype))


def reconstruct(
    chart: Chart, free: Mapping[str, Tensor], record, masks, S: Sizes, slices=None, fixed=None
):
    """The standard parameters from the free entries: scatter them over the entries the steps
    fix (``fixed``, from :func:`fixed_entries`), then solve the translation steps' constraints
    in order (differentiable in ``free``). With ``slices`` (from :func:`translation_slices`)
    the translation steps are solved without forming C; without, from the dense C at the
    current point."""
    like = next(iter(free.values()))
    if fixed is None:
        fixed = fixed_entries(chart, record, masks, S, like.dtype, like.device)
    slices = slices or {}
    params = {
        name: fixed[name].masked_scatter(~mask.to(like.device), free[name])
        for name, mask in masks.items()
    }
    shapes = {name: tuple(mask.shape) for name, mask in masks.items()}
    for i, step in enumerate(chart.steps):
        if step.kind != "translation":
            continue
        if i in slices:
            for found in slices[i]:
                params = _solve_slice(chart, params, S, found)
            continue
        for unit in units(chart.groups[step.group], S):
            dependent = record[_unit_key(i, unit)]
            params = _solve_dependents(chart, step, params, unit, S, dependent, shapes)
    return params
