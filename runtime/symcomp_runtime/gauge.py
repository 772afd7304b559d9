"""Gauge fixing: the chart's steps, the canonical element of each group on each unit, and the
conversion of a model to its chart point (:func:`canonicalize`) and back (:func:`reconstruct`).

A chart is a sequence of steps; each fixes one group (or several jointly) by pinning entries
of an anchor parameter. ``reduced.py`` of a generated package lists its model's steps.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from .actions import (
    _DTYPE,
    Group,
    Params,
    Sizes,
    Unit,
    _resolve,
    algebra_basis,
    apply,
    at_layer,
    rotary_width,
    units,
    view,
)
from .errors import DegenerateError
from .sparse import (
    Entries,
    Fold,
    Moves,
    entries_of,
    find_fold,
    identity_fold,
    solve_components,
    sparse_moves,
)
from .sparse import greedy_rows as _greedy_rows

# --- pivots ---------------------------------------------------------------------------------


# --- gauge-fixing steps ---------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """Fix one group's gauge on its ``anchor`` parameter.

    ``kind``: ``gl`` (k pivot rows of the anchor made the identity; with RoPE, one pivot row per
    rotated pair made (1, 0)), ``rotation`` (d pivot rows made lower triangular with a positive
    diagonal), ``scale`` (one pivot entry per scaled column made 1, or its sign), ``translation``
    (the anchors made orthogonal to the translations: minimum norm; ``joint`` lists the other
    translations fixed in the same step, when their directions overlap), ``rank_one`` (a row
    anchor moved as X (I + u t)^-1 made a unit vector e_p). ``form``: how the element E
    multiplies the anchor (``E``, ``E^-1``, ``E^T``, ``E^-T``), ``side``: ``right`` (X f(E)) or
    ``left`` (f(E) X); ``offset``: c in (c + X) f(E) - c (Gemma's 1 + w gains).
    """

    group: str
    kind: str
    anchor: str
    side: str = "right"
    form: str = "E"
    offset: float = 0.0
    joint: tuple[tuple[str, str], ...] = ()  # more (group, anchor) fixed jointly (translations)


def _from_multiplier(M: Tensor, form: str, kind: str) -> Tensor:
    """The element E with f(E) = M."""
    if kind == "scale":
        return M if form == "E" else 1.0 / M
    return {"E": M, "E^-1": torch.linalg.inv(M), "E^T": M.T, "E^-T": torch.linalg.inv(M).T}[form]


def rope_pairs(
    rope: Mapping[str, object] | None, k: int
) -> tuple[list[tuple[int, int]], list[int]]:
    """The rotated feature pairs of a head, and its unrotated features."""
    if rope is None:
        return [], list(range(k))
    r = rotary_width(rope, {"head_width": k})
    half = r // 2
    if rope["pair_layout"] == "split_half":
        pairs = [(i, i + half) for i in range(half)]
    else:
        pairs = [(2 * i, 2 * i + 1) for i in range(half)]
    return pairs, list(range(r, k))


def _oriented(step: Step, X: Tensor) -> Tensor:
    """The anchor with the element acting on its columns (transposed for left actions)."""
    X = X + step.offset
    return X if step.side == "right" else X.T


def canonical_element(
    step: Step, group: Group, X: Tensor, S: Sizes, rope, exclude: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """The element that brings the anchor view ``X`` of one unit to the chart, and the pivots.

    ``exclude`` (a boolean matrix like X) marks entries an earlier step already determined: no
    pivot lands on them."""
    Y = _oriented(step, X)
    taken = (
        torch.zeros_like(Y, dtype=torch.bool) if exclude is None else _oriented_mask(step, exclude)
    )
    if step.kind == "gl":
        n = Y.shape[1]
        pairs, rest = rope_pairs(rope if group.commutes_with_rope else None, n)
        M = torch.zeros(n, n, dtype=Y.dtype)
        chosen: list[int] = []
        for a, b in pairs:
            norms = (Y[:, a] ** 2 + Y[:, b] ** 2).masked_fill(taken[:, a] | taken[:, b], 0.0)
            p = int(torch.nonzero(norms >= norms.max() * (1 - 1e-9))[0])
            if norms[p] <= 0:
                raise DegenerateError("a rotated feature pair is zero")
            xa, xb = Y[p, a] / norms[p], Y[p, b] / norms[p]
            M[a, a], M[a, b], M[b, a], M[b, b] = xa, -xb, xb, xa
            chosen.append(p)
        if rest:
            idx = torch.tensor(rest)
            sub = Y[:, idx]
            U, _, _ = torch.linalg.svd(sub, full_matrices=False)
            rows = _greedy_rows(U, len(rest), taken[:, idx].any(1))
            block = sub[torch.tensor(rows)]
            if torch.linalg.matrix_rank(block) < len(rest):
                raise DegenerateError("rank-deficient")
            M[idx[:, None], idx[None, :]] = torch.linalg.inv(block)
            chosen += rows
        return _from_multiplier(M, step.form, "gl"), torch.tensor(chosen)
    if step.kind == "rotation":
        columns = Y.shape[1] - 1 if group.fixes_ones else Y.shape[1]
        return _rotation_element(step, group, Y, _pivot_slots(taken[:, :columns]))
    if step.kind == "scale":
        rows = torch.argmax(Y.abs().masked_fill(taken, -1.0), dim=0)
        value = Y[rows, torch.arange(Y.shape[1])]
        if group.commutes_with_rope:
            # one factor per rotated pair: the pair's larger entry (over both columns) is pinned,
            # the other column follows (its pivot -1: not pinned)
            pairs, _ = rope_pairs(rope, Y.shape[1])
            for a, b in pairs:
                keep, drop = (a, b) if value[a].abs() >= value[b].abs() else (b, a)
                value[drop] = value[keep]
                rows[drop] = -1
        if bool((value == 0).any()):
            raise DegenerateError("a scaled column is zero")
        M = 1.0 / (value.abs() if group.positive else value)
        return _from_multiplier(M[None, :], step.form, "scale"), rows
    raise ValueError(f"unknown step kind {step.kind!r}")


def _rank_one_vector(group: Group, step: Step, params: Params, unit: Unit, S: Sizes) -> Tensor:
    """u of an action X -> X (I + u t)^-1 on the step's anchor, as a row: the action applied to
    X = I is (I + u t)^-1, whose derivative at t = 0 along e_0 is -u e_0."""
    act = next(a for a in group.acts if a.target == step.anchor)
    path = _anchor(step.anchor, unit)
    n = view(group, params, unit, path, S).shape[1]

    def probe(pattern: str) -> Tensor:
        resolved = _resolve(pattern, path, unit[0])
        return (
            torch.eye(n, **_DTYPE) if resolved == path else view(group, params, unit, resolved, S)
        )

    e0 = torch.zeros(1, n, **_DTYPE)
    e0[0, 0] = 1.0
    _, d = torch.func.jvp(lambda t: act.fn(probe, t, S), (torch.zeros_like(e0),), (e0,))
    return -d[:, 0][None, :]


def rank_one_element(X: Tensor, u: Tensor, exclude: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The t with X (I + u t)^-1 = e_p, p the pivot (largest |u_p|, so that the element is well
    conditioned): X = e_p (I + u t) = e_p + u_p t gives t = (X - e_p) / u_p (Sherman-Morrison),
    and I + u t is invertible exactly when X u != 0. Every row Y with Y u != 0 lies on the orbit
    of X (t = (X - Y) / (Y u)), so e_p is a function of the orbit once u is."""
    weights = u.abs().reshape(-1)
    if exclude is not None:
        weights = weights.masked_fill(exclude.reshape(-1), -1.0)
    p = int(torch.nonzero(weights >= weights.max() * (1 - 1e-9))[-1])
    beta = float((X @ u.T).reshape(()))
    if weights[p] <= 0 or abs(beta) <= 1e-12 * float(X.norm() * u.norm()):
        raise DegenerateError("the vector is orthogonal to the rank-one direction")
    target = torch.zeros_like(X)
    target[0, p] = 1.0
    return (X - target) / u[0, p], torch.tensor([p])


def _oriented_mask(step: Step, mask: Tensor) -> Tensor:
    return mask if step.side == "right" else mask.T


def _pivot_slots(taken: Tensor) -> Tensor:
    """Which row may be the i-th pivot of a rotation (rows x columns, boolean): the i-th pivot
    row is pinned at the columns after i, so a row can be it when no earlier step determined
    any of those entries. A row an earlier step determined at column c still serves from the
    c-th pivot on: excluding every row with a determined entry would leave too few rows where
    earlier translations spread their dependent entries over many rows (a small vocabulary)."""
    after = taken.flip(1).cumsum(1).flip(1) > 0  # after[r, c]: a determined entry at c or later
    return ~torch.cat([after[:, 1:], torch.zeros_like(after[:, :1])], 1)


def _rotation_element(step: Step, group: Group, Y: Tensor, allowed: Tensor):
    """The rotation making the anchor's pivot rows lower triangular with a positive diagonal.

    Without ``fixes_ones``: Y[p] = L Q^T (an LQ decomposition), M = Q. With it, the rows of Y
    lie in the complement of the ones vector (the writer centering before this step put them
    there), so each row is given by its first n - 1 entries y, with squared norm
    y (I + 1 1^T) y^T = |y C|^2 (C the Cholesky factor). The LQ decomposition of the pivot rows of
    Z = Y[:, :n-1] C in those orthonormal coordinates gives O, and y -> y C O C^-1 is lower
    triangular on the pivot rows in the standard coordinates too (C and C^-1 are lower
    triangular)."""
    n = Y.shape[1]
    if not group.fixes_ones:
        rows = _greedy_rows(Y, n, allowed=allowed)
        Qr, Rr = torch.linalg.qr(Y[torch.tensor(rows)].T)  # Y[p] = Rr^T Qr^T
        M = Qr * torch.sign(torch.diagonal(Rr))[None, :]
        return _from_multiplier(M, step.form, "rotation"), torch.tensor(rows)
    m = n - 1
    one = torch.ones(m, m, dtype=Y.dtype)
    C = torch.linalg.cholesky(torch.eye(m, dtype=Y.dtype) + one)
    Z = Y[:, :m] @ C
    rows = _greedy_rows(Z, m, allowed=allowed)
    Qr, Rr = torch.linalg.qr(Z[torch.tensor(rows)].T)
    O = Qr * torch.sign(torch.diagonal(Rr))[None, :]
    G = C @ O @ torch.linalg.inv(C)  # y -> y G, orthogonal for the metric I + 1 1^T
    P = torch.eye(n, dtype=Y.dtype) - torch.full((n, n), 1.0 / n, dtype=Y.dtype)
    S = torch.eye(n, dtype=Y.dtype)[:, :m]  # x -> y: the first n - 1 entries
    K = torch.cat([torch.eye(m, dtype=Y.dtype), -torch.ones(m, 1, dtype=Y.dtype)], 1)  # y -> x
    M = P @ S @ G @ K + torch.full((n, n), 1.0 / n, dtype=Y.dtype)
    return _from_multiplier(M, step.form, "rotation"), torch.tensor(rows)


def pinned(step: Step, group: Group, shape: tuple[int, int], pivots: Tensor, S: Sizes, rope, signs):
    """(rows, cols, values) of the anchor view entries the chart fixes, in view coordinates."""
    rows: list[int] = []
    cols: list[int] = []
    values: list[float] = []
    n = shape[1] if step.side == "right" else shape[0]
    if step.kind == "gl":
        pairs, rest = rope_pairs(rope if group.commutes_with_rope else None, n)
        for pos, (a, b) in enumerate(pairs):
            p = int(pivots[pos])
            rows += [p, p]
            cols += [a, b]
            values += [1.0, 0.0]
        for i, p in enumerate(pivots[len(pairs) :].tolist()):
            for j, c in enumerate(rest):
                rows.append(p)
                cols.append(c)
                values.append(1.0 if i == j else 0.0)
    elif step.kind == "rotation":
        columns = n - 1 if group.fixes_ones else n
        for i, p in enumerate(pivots.tolist()):
            for j in range(i + 1, columns):
                rows.append(p)
                cols.append(j)
                values.append(0.0)
    elif step.kind == "rank_one":
        p = int(pivots[0])
        rows += [0] * n
        cols += list(range(n))
        values += [1.0 if j == p else 0.0 for j in range(n)]
    elif step.kind == "scale":
        for j, p in enumerate(pivots.tolist()):
            if p < 0:
                continue  # the other column of a rotated pair (one factor per pair)
            rows.append(p)
            cols.append(j)
            values.append(float(signs[j]) if signs is not None else 1.0)
    values = [v - step.offset for v in values]
    if step.side == "left":
        rows, cols = cols, rows
    return rows, cols, values


# --- the chart: canonical form, fixed entries, reconstruction --------------------------------


@dataclass(frozen=True)
class Chart:
    """A model's gauge-fixing steps, in order, with its groups and RoPE table settings."""

    groups: Mapping[str, Group]
    steps: tuple[Step, ...]
    rope: Mapping[str, object] | None
    unread: tuple[tuple[str, int, int], ...] = ()  # (table, first row, end row) nothing reads


def _anchor(anchor: str, unit: Unit) -> str:
    layer = unit[0]
    if layer is None:
        return anchor
    return at_layer(anchor, layer).replace("layers.*.", f"layers.{layer}.", 1)


def view_index(group: Group, unit: Unit, path: str, shape: tuple[int, ...], S: Sizes) -> Tensor:
    """Flat indices into ``path`` of the entries of the unit's view (a 2-D long tensor, not to
    be written to: it is cached, since every forward of the reduced model asks again)."""
    return _view_index(group, unit, path, tuple(shape), tuple(sorted(S.items())))


@functools.lru_cache(maxsize=4096)
def _view_index(group: Group, unit: Unit, path: str, shape: tuple[int, ...], sizes) -> Tensor:
    flat = torch.arange(math.prod(shape), dtype=torch.float64).reshape(shape)
    return view(group, {path: flat}, unit, path, dict(sizes)).round().long()


def _members(step: Step) -> tuple[tuple[str, str], ...]:
    """(group, anchor) of every translation a (joint) translation step fixes."""
    return ((step.group, step.anchor), *step.joint)


def _joint_paths(chart: Chart, step: Step, unit: Unit) -> list[tuple[str, str]]:
    """(group, path) of each distinct anchor of a translation step, for one unit."""
    out: list[tuple[str, str]] = []
    for name, anchor in _members(step):
        path = _anchor(anchor, unit)
        if path not in [p for _, p in out]:
            out.append((name, path))
    return out


def _anchor_entries(chart: Chart, step: Step, unit: Unit, shapes, S: Sizes) -> Entries:
    """(path, flat index) of every anchor entry a translation step sees (as index tensors):
    the unit's views of its anchors, less the unread rows (which the chart sets to zero on
    their own). Cached: the reduced model asks on every forward."""
    key = _cache_key(chart, step, unit, shapes, S)
    if key not in _ENTRIES:
        unread = _unread_masks(chart, shapes)
        parts = []
        for name, path in _joint_paths(chart, step, unit):
            group = chart.groups[name]
            index = view_index(group, unit, path, tuple(shapes[path]), S).reshape(-1)
            skip = unread.get(path)
            parts.append((path, index if skip is None else index[~skip[index]]))
        _ENTRIES[key] = entries_of(parts)
    return _ENTRIES[key]


_ENTRIES: dict[tuple, Entries] = {}


def _cache_key(chart: Chart, step: Step, unit: Unit, shapes, S: Sizes) -> tuple:
    return (id(chart), step, unit, tuple(sorted(shapes.items())), tuple(sorted(S.items())))


def _anchor_vector(chart: Chart, step: Step, params: Params, unit: Unit, S: Sizes) -> Tensor:
    shapes = {name: tuple(value.shape) for name, value in params.items()}
    return _gather(params, _anchor_runs(chart, step, unit, shapes, S))


_RUNS: dict[tuple, tuple[tuple[str, Tensor], ...]] = {}


def _anchor_runs(chart: Chart, step: Step, unit: Unit, shapes, S: Sizes):
    """:func:`_anchor_entries` as runs ``(path, flat indices)``, in order: one gather per
    parameter instead of one per entry (the reduced model asks on every forward)."""
    key = _cache_key(chart, step, unit, shapes, S)
    if key not in _RUNS:
        _RUNS[key] = _anchor_entries(chart, step, unit, shapes, S).runs()
    return _RUNS[key]


def _unread_masks(chart: Chart, shapes) -> dict[str, Tensor]:
    masks = {}
    for path, start, end in chart.unread:
        mask = torch.zeros(shapes[path], dtype=torch.bool)
        mask[start:end] = True
        masks[path] = mask.reshape(-1)
    return masks


def _zero_unread(chart: Chart, params: dict[str, Tensor]) -> dict[str, Tensor]:
    out = dict(params)
    for path, start, end in chart.unread:
        value = out[path].clone()
        value[start:end] = 0.0
        out[path] = value
    return out


def constant_move(chart: Chart, step: Step) -> bool:
    """Whether a translation step's anchors move by the same amount from every point: every
    member group's action on every anchor of the step is ``X + g(E)`` (``Act.shift``)."""
    anchors = {anchor for _, anchor in _members(step)}
    return all(
        act.shift
        for name, _ in _members(step)
        for act in chart.groups[name].acts
        if act.target in anchors
    )


def _translation_moves(chart: Chart, step: Step, params: Params, unit: Unit, S: Sizes):
    """(C, elements, fold): the anchors' change under each translation basis element (columns
    of C, held as its nonzeros: :class:`Moves`), those elements as (group, element) pairs,
    and the :class:`Fold` of the anchor rows C moves alike (C is held over its kept rows).
    The move is linear in t, so C is exact; a move that is the same from every point is
    measured from zero anchors (exactly: equal rows come out equal). Its columns are computed
    in batched applications of each group's actions on the anchors only."""
    runs = _anchor_runs(chart, step, unit, {n: tuple(v.shape) for n, v in params.items()}, S)
    constant = constant_move(chart, step)
    if constant:
        params = {path: torch.zeros(params[path].shape, **_DTYPE) for path, _ in runs}
    base = _gather(params, runs)
    anchors = {anchor for _, anchor in _members(step)}
    moves = []
    for name, _ in _members(step):
        group = chart.groups[name]
        basis = algebra_basis(group, S, chart.rope)
        if basis.shape[0] == 0:
            continue
        mine = replace(group, acts=tuple(act for act in group.acts if act.target in anchors))
        moves.append((name, mine, basis.to(base)))
    fold = identity_fold(base.numel())
    if constant and moves:
        fold = _find_fold(chart, step, params, unit, S, runs, moves)
    kept = None if fold.kept.numel() == base.numel() else _kept_runs(runs, fold.kept)
    base_kept = base if kept is None else _gather(params, kept)
    parts, elements = [], []
    offset = 0
    for name, mine, basis in moves:

        def move(B: Tensor, group: Group = mine) -> Tensor:
            moved = apply(group, params, unit, B, S)
            return _gather(moved, runs if kept is None else kept) - base_kept

        found = sparse_moves(move, basis, base_kept.numel())
        parts.append((found.rows, found.cols + offset, found.values))
        offset += basis.shape[0]
        elements += [(name, B) for B in basis]
    if not parts:  # a translation the RoPE commutant leaves no room for
        empty = torch.zeros(0, dtype=torch.long)
        return Moves(empty, empty, base.new_zeros(0), (base_kept.numel(), 0)), elements, fold
    r, c, v = (torch.cat(part) for part in zip(*parts, strict=True))
    order = torch.argsort(r * offset + c)
    return Moves(r[order], c[order], v[order], (base_kept.numel(), offset)), elements, fold


def _find_fold(chart, step, params, unit, S, runs, moves) -> Fold:
    """The anchor rows two random moves (of every member group at once) move alike."""
    generator = torch.Generator().manual_seed(2)
    probes = []
    for _ in range(2):
        moved = dict(params)
        for _, mine, basis in moves:
            weights = torch.randn(basis.shape[0], generator=generator, **_DTYPE).to(basis)
            moved = apply(mine, moved, unit, torch.einsum("i,i...->...", weights, basis), S)
        probes.append(_gather(moved, runs))
    shapes = {name: tuple(value.shape) for name, value in params.items()}
    widths = {
        path: view_index(chart.groups[name], unit, path, shapes[path], S).shape[1]
        for name, path in _joint_paths(chart, step, unit)
    }
    spans, start = [], 0
    for path, index in runs:
        spans.append((start, index.numel(), widths.get(path, 0)))
        start += index.numel()
    return find_fold(probes, spans)


def _kept_runs(runs, kept: Tensor) -> tuple[tuple[str, Tensor], ...]:
    """``runs`` restricted to the anchor rows ``kept`` (sorted)."""
    out, start = [], 0
    for path, index in runs:
        mine = kept[(kept >= start) & (kept < start + index.numel())] - start
        if mine.numel():
            out.append((path, index[mine]))
        start += index.numel()
    return tuple(out)


def _fix_translations(chart, step, params, unit, S, determined, support):
    """Move the anchors to their minimum-norm point along the translations. Returns the new
    parameters and the dependent entries: one per direction not implied by earlier steps,
    chosen outside what earlier steps determined or constrained (so that rebuilding can solve
    the steps in order)."""
    C, elements, fold = _translation_moves(chart, step, params, unit, S)
    shapes = {name: tuple(value.shape) for name, value in params.items()}
    entries = _anchor_entries(chart, step, unit, shapes, S)
    if C.shape[1] == 0 or C.values.numel() == 0:  # the translations do not move these anchors
        return dict(params), torch.zeros(0, dtype=torch.long)
    x = _anchor_vector(chart, step, params, unit, S)
    shut, last = fold.open_copy(entries.read(determined) | entries.read(support))
    # as many dependent entries as the rows of C outside ``blocked`` have rank
    c, dependent = solve_components(C, fold.sum(x), shut, count=fold.count)
    del x
    out = dict(params)
    for name in dict.fromkeys(name for name, _ in elements):
        parts = [ci * B for ci, (n, B) in zip(c, elements, strict=True) if n == name]
        out = apply(chart.groups[name], out, unit, torch.stack(parts).sum(0), S)
    magnitude = C.values.abs()
    moved = torch.unique(C.rows[magnitude > 1e-12 * float(magnitude.max())])
    entries.mark(support, fold.copies(moved))
    chosen = last[torch.tensor(dependent, dtype=torch.long)]
    entries.mark(determined, chosen)
    return out, chosen


def _unit_key(i: int, unit: Unit) -> str:
    return f"{i}.{unit[0]}.{unit[1]}"


def canonicalize(
    chart: Chart,
    params: Params,
    S: Sizes,
    snapshots: list[dict[str, Tensor]] | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    consume: bool = False,
) -> tuple[dict[str, Tensor], dict]:
    """The chart's representative of the orbit of ``params`` (float64), and the discrete choices
    made on the way (pivot rows, signs, dependent entries), keyed ``"<step>.<unit>"``. With
    ``snapshots``, the chart point after each step is appended to it (the prefixes' points);
    ``progress(done, units, group)`` is called as each step starts on each unit, and at the
    end. With ``consume``, ``params`` (a dict) is emptied as its tensors are read, so that a
    tensor and its float64 copy are not both held for the whole model."""
    source = params
    params = {}
    for name in list(source):
        value = source.pop(name) if consume else source[name]  # type: ignore[attr-defined]
        params[name] = value.detach().to(torch.float64)
        del value
    params = _zero_unread(chart, params)
    determined = {name: torch.zeros(v.numel(), dtype=torch.bool) for name, v in params.items()}
    for path, mask in _unread_masks(chart, {n: tuple(v.shape) for n, v in params.items()}).items():
        determined[path] |= mask
    support = {name: torch.zeros(v.numel(), dtype=torch.bool) for name, v in params.items()}
    record: dict[str, Tensor] = {}
    total = sum(len(units(chart.groups[step.group], S)) for step in chart.steps)
    done = 0
    for i, step in enumerate(chart.steps):
        group = chart.groups[step.group]
        for unit in units(group, S):
            if progress is not None:
                progress(done, total, step.group)
            done += 1
            key = _unit_key(i, unit)
            path = _anchor(step.anchor, unit)
            try:
                if step.kind == "translation":
                    params, record[key] = _fix_translations(
                        chart, step, params, unit, S, determined, support
                    )
                    continue
                X = view(group, params, unit, path, S)
                index = view_index(group, unit, path, tuple(params[path].shape), S)
                if step.kind == "rank_one":
                    u = _rank_one_vector(group, step, params, unit, S)
                    element, pivots = rank_one_element(X, u, determined[path][index])
                else:
                    element, pivots = canonical_element(
                        step, group, X, S, chart.rope, determined[path][index]
                    )
            except DegenerateError as exc:
                raise DegenerateError(
                    f"{step.group}: cannot fix the gauge of {path} ({_unit_name(unit)}): {exc}; "
                    "the parameters are degenerate there (a zero or rank-deficient block)"
                ) from None
            if step.kind == "scale" and group.positive:
                Y = _oriented(step, X)
                record[key + ".signs"] = torch.sign(Y[pivots, torch.arange(Y.shape[1])])
            params = apply(group, params, unit, element, S)
            record[key] = pivots
            rows, cols, _ = pinned(step, group, tuple(index.shape), pivots, S, chart.rope, None)
            determined[path][index[rows, cols]] = True
        _forget_indices()  # index tensors as large as the parameters: not kept step after step
        if snapshots is not None:
            snapshots.append(_zero_unread(chart, params))
    if progress is not None:
        progress(total, total, "")
    return _zero_unread(chart, params), record


def _unit_name(unit: Unit) -> str:
    layer, index = unit
    if layer is None:
        return "model"
    return f"layer {layer}" + (f", unit {index}" if index is not None else "")


def determined(chart: Chart, record: Mapping[str, Tensor], shapes, S: Sizes) -> dict[str, Tensor]:
    """For each parameter, a boolean mask of the entries the chart determines."""
    masks = {
        name: torch.zeros(math.prod(shape), dtype=torch.bool) for name, shape in shapes.items()
    }
    for path, mask in _unread_masks(chart, shapes).items():
        masks[path] |= mask
    for i, step in enumerate(chart.steps):
        group = chart.groups[step.group]
        for unit in units(group, S):
            key = _unit_key(i, unit)
            if step.kind == "translation":
                entries = _anchor_entries(chart, step, unit, shapes, S)
                for d in record[key].tolist():
                    path, flat = entries[d]
                    masks[path][flat] = True
                continue
            path = _anchor(step.anchor, unit)
            index = view_index(group, unit, path, shapes[path], S)
            rows, cols, _ = pinned(
                step, group, tuple(index.shape), record[key], S, chart.rope, None
            )
            masks[path][index[rows, cols]] = True
        _forget_indices()
    return {name: mask.reshape(shapes[name]) for name, mask in masks.items()}


def _forget_indices() -> None:
    """Drop the cached anchor entries and view indices (at real sizes they hold several
    bytes per parameter)."""
    _ENTRIES.clear()
    _RUNS.clear()
    _view_index.cache_clear()


def fixed_entries(chart: Chart, record, masks, S: Sizes, dtype=torch.float64, device=None):
    """Each parameter with the values the gauge-fixing steps other than translations pin
    (pivot blocks, signs, rotation-fixed entries) and zero elsewhere."""
    params = {
        name: torch.zeros(mask.shape, dtype=dtype, device=device) for name, mask in masks.items()
    }
    for i, step in enumerate(chart.steps):
        if step.kind == "translation":
            continue
        group = chart.groups[step.group]
        for unit in units(group, S):
            key = _unit_key(i, unit)
            path = _anchor(step.anchor, unit)
            value = params[path]
            index = view_index(group, unit, path, tuple(value.shape), S)
            signs = record.get(key + ".signs")
            rows, cols, values = pinned(
                step, group, tuple(index.shape), record[key], S, chart.rope, signs
            )
            target = index[rows, cols].to(value.device)
            flat = value.reshape(-1).index_put((target,), torch.tensor(values).to(value))
            params[path] = flat.reshape(value.shape)
    return params


def _solve_dependents(chart, step, params, unit, S, dependent: Tensor, shapes):
    """Fill a translation step's dependent entries from its slice ``C^T x = 0`` (x: the
    anchors; the same slice as ``U^T x = 0``, U an orthonormal basis of C's columns)."""
    if dependent.numel() == 0:
        return params
    wide = {name: value.to(torch.float64) for name, value in params.items()}
    C, _, fold = _translation_moves(chart, step, wide, unit, S)
    x = _anchor_vector(chart, step, wide, unit, S)
    dep = dependent.to(x.device)
    slot = torch.full((C.shape[0],), -1, dtype=torch.long)
    slot[fold.kept_row(dep)] = torch.arange(dep.numel())
    on = slot[C.rows] >= 0
    C_d = x.new_zeros(C.shape[1], dep.numel())
    C_d[C.cols[on], slot[C.rows[on]]] = C.values[on].to(x)
    # least squares: the system is consistent, and some of its rows may be implied by others
    y = C.rmatvec(fold.sum(x.index_fill(0, dep, 0.0)))
    solved = torch.linalg.lstsq(C_d, -y[:, None]).solution
    entries = _anchor_entries(chart, step, unit, shapes, S)
    dtype = next(iter(params.values())).dtype
    return _write(params, _writes(entries, dependent.tolist(), x.device), solved[:, 0].to(dtype))


def _writes(entries, dependent: list[int], device=None) -> tuple[tuple[str, Tensor, Tensor], ...]:
    """The dependent entries grouped by parameter: (path, flat indices, positions)."""
    writes: dict[str, list[tuple[int, int]]] = {}
    for position, row in enumerate(dependent):
        path, flat = entries[row]
        writes.setdefault(path, []).append((flat, position))
    return tuple(
        (path, *(torch.tensor(part, device=device) for part in zip(*items, strict=True)))
        for path, items in writes.items()
    )


def _write(params: Params, writes, solved: Tensor) -> dict[str, Tensor]:
    out = dict(params)
    for path, flat, position in writes:
        value = out[path]
        out[path] = value.reshape(-1).index_put((flat,), solved[position]).reshape(value.shape)
    return out


def _gather(params: Params, runs) -> Tensor:
    """The entries ``runs`` ((path, flat indices), in order) name, as one vector."""
    parts = []
    for path, index in runs:
        value = params[path].reshape(-1)
        parts.append(value.index_select(0, index.to(value.device)))
    return torch.cat(parts)
