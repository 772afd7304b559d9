"""Translation steps without dense algebra over the anchors: the anchor entries as index
tensors, the move matrix C as its nonzeros, and the minimum-norm fix and the dependent
entries solved per connected component of C's columns (two columns meet where they move the
same anchor entry). Most components are one column (a per-neuron, per-feature shift): those
are solved together in closed form; the others as small dense systems."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

# --- the anchor entries ---------------------------------------------------------------------


@dataclass(frozen=True)
class Entries:
    """The (path, flat index) of each anchor entry a translation step sees (C's rows), as
    tensors: ``which[r]`` indexes ``paths``, ``flat[r]`` the entry in that parameter."""

    paths: tuple[str, ...]
    which: Tensor
    flat: Tensor

    def __len__(self) -> int:
        return int(self.flat.numel())

    def __getitem__(self, row: int) -> tuple[str, int]:
        return self.paths[int(self.which[row])], int(self.flat[row])

    def runs(self) -> tuple[tuple[str, Tensor], ...]:
        """Consecutive rows of one parameter, as (path, flat indices), in order."""
        if len(self) == 0:
            return ()
        change = torch.nonzero(self.which[1:] != self.which[:-1]).reshape(-1) + 1
        starts = [0, *change.tolist()]
        ends = [*change.tolist(), len(self)]
        return tuple(
            (self.paths[int(self.which[a])], self.flat[a:b])
            for a, b in zip(starts, ends, strict=True)
        )

    def read(self, masks: dict[str, Tensor]) -> Tensor:
        """Each row's value in the flat boolean ``masks`` (one per parameter)."""
        out = torch.zeros(len(self), dtype=torch.bool)
        for i, path in enumerate(self.paths):
            rows = self.which == i
            out[rows] = masks[path][self.flat[rows]]
        return out

    def mark(self, masks: dict[str, Tensor], rows: Tensor) -> None:
        """Set the flat boolean ``masks`` at ``rows``."""
        rows = rows.reshape(-1)
        for i, path in enumerate(self.paths):
            mine = rows[self.which[rows] == i]
            masks[path][self.flat[mine]] = True


def entries_of(parts: list[tuple[str, Tensor]]) -> Entries:
    """:class:`Entries` from (path, flat indices) parts, in order (a path may repeat)."""
    paths: list[str] = []
    which, flat = [], []
    names = list(dict.fromkeys(path for path, _ in parts))
    small = torch.int8 if len(names) < 128 else torch.long  # one byte a row at real sizes
    for path, index in parts:
        if path not in paths:
            paths.append(path)
        which.append(torch.full((index.numel(),), paths.index(path), dtype=small))
        flat.append(index.reshape(-1).long())
    if not flat:
        return Entries((), torch.zeros(0, dtype=torch.int8), torch.zeros(0, dtype=torch.long))
    return Entries(tuple(paths), torch.cat(which), torch.cat(flat))


# --- C as its nonzeros ----------------------------------------------------------------------


@dataclass(frozen=True)
class Moves:
    """The anchors' change under each translation basis element: C (anchor entries x basis),
    held as its nonzeros in row-major order."""

    rows: Tensor
    cols: Tensor
    values: Tensor
    shape: tuple[int, int]

    def dense(self) -> Tensor:
        C = torch.zeros(self.shape, dtype=self.values.dtype, device=self.values.device)
        return C.index_put((self.rows, self.cols), self.values)

    def rmatvec(self, x: Tensor) -> Tensor:
        """C^T x."""
        out = torch.zeros(self.shape[1], dtype=x.dtype, device=x.device)
        return out.index_add(0, self.cols, self.values.to(x) * x[self.rows])


@dataclass(frozen=True)
class Fold:
    """Anchor rows that every translation moves alike, kept once: ``segments`` (start, copies,
    width) are runs of the anchor vector holding ``copies`` view rows of ``width`` entries each
    that C moves the same (a vector added to every row of a table); each keeps its last row.
    C is held over the kept rows, ``kept`` (their places in the anchor vector, in order)."""

    size: int
    segments: tuple[tuple[int, int, int], ...]
    kept: Tensor

    @property
    def count(self) -> Tensor:
        """How many anchor rows each kept row stands for."""
        out = torch.ones(self.kept.numel(), dtype=torch.long)
        for at, (_, copies, width) in zip(self._at(), self.segments, strict=True):
            out[at : at + width] = copies
        return out

    def _at(self) -> list[int]:
        return [
            int(torch.searchsorted(self.kept, start + (copies - 1) * width))
            for start, copies, width in self.segments
        ]

    def sum(self, x: Tensor) -> Tensor:
        """The anchor vector ``x`` over the kept rows, each the sum of the rows it stands for."""
        out = x.index_select(0, self.kept.to(x.device))
        for at, (start, copies, width) in zip(self._at(), self.segments, strict=True):
            part = x[start : start + copies * width].reshape(copies, width).sum(0)
            out = torch.cat([out[:at], part, out[at + width :]])
        return out

    def kept_row(self, rows: Tensor) -> Tensor:
        """The kept row standing for each anchor row ``rows``."""
        out = torch.searchsorted(self.kept, rows)
        for at, (start, copies, width) in zip(self._at(), self.segments, strict=True):
            inside = (rows >= start) & (rows < start + copies * width)
            out[inside] = at + (rows[inside] - start) % width
        return out

    def copies(self, kept: Tensor) -> Tensor:
        """The anchor rows the kept rows ``kept`` stand for."""
        parts = [self.kept[kept]]
        for at, (start, copies, width) in zip(self._at(), self.segments, strict=True):
            mine = kept[(kept >= at) & (kept < at + width)] - at
            grid = start + width * torch.arange(copies - 1)[:, None] + mine[None, :]
            parts.append(grid.reshape(-1))
        return torch.cat(parts)

    def open_copy(self, blocked: Tensor) -> tuple[Tensor, Tensor]:
        """(shut, last): for each kept row, whether every row it stands for is ``blocked``,
        and the last of them that is not (the one a greedy pass over all rows picks of a tie;
        the kept row itself when all are)."""
        last = self.kept.clone()
        shut = blocked[self.kept].clone()
        for at, (start, copies, width) in zip(self._at(), self.segments, strict=True):
            grid = ~blocked[start : start + copies * width].reshape(copies, width)
            flipped = torch.argmax(grid.flip(0).to(torch.int8), 0)  # first open from the end
            ok = grid.any(0)
            row = start + (copies - 1 - flipped) * width + torch.arange(width)
            last[at : at + width] = torch.where(ok, row, last[at : at + width])
            shut[at : at + width] = ~ok
        return shut, last


def identity_fold(size: int) -> Fold:
    return Fold(size, (), torch.arange(size))


def find_fold(probes: list[Tensor], runs: list[tuple[int, int, int]]) -> Fold:
    """The :class:`Fold` of the anchor runs ``(start, length, width)`` whose view rows are
    equal in every probe (random combinations of the translations' moves, measured exactly)."""
    size = probes[0].numel()
    segments = []
    for start, length, width in runs:
        copies = length // width if width else 0
        if copies < 2 or copies * width != length:
            continue
        if all(
            bool(
                (
                    p[start : start + length].reshape(copies, width)
                    == p[start + length - width : start + length]
                ).all()
            )
            for p in probes
        ):
            segments.append((start, copies, width))
    if not segments:
        return identity_fold(size)
    drop = torch.zeros(size, dtype=torch.bool)
    for start, copies, width in segments:
        drop[start : start + (copies - 1) * width] = True
    return Fold(size, tuple(segments), torch.nonzero(~drop).reshape(-1))


def sparse_moves(
    move: Callable[[Tensor], Tensor], basis: Tensor, rows: int, budget: int = 1 << 24
) -> Moves:
    """C from ``move`` (linear) over ``basis``: by probing (:func:`probed_moves`) when each of
    C's rows has one nonzero, else densely, a chunk of basis elements at a time (batched with
    ``torch.vmap``, at most ``budget`` dense entries at once)."""
    if basis.shape[0] > 4:
        found = probed_moves(move, basis, rows)
        if found is not None:
            return found
    return dense_moves(move, basis, rows, budget)


def dense_moves(
    move: Callable[[Tensor], Tensor], basis: Tensor, rows: int, budget: int = 1 << 24
) -> Moves:
    """C from ``move`` (linear, batched with ``torch.vmap``) over ``basis``, a chunk of basis
    elements at a time (at most ``budget`` dense entries at once)."""
    chunk = max(1, budget // max(rows, 1))
    found: list[tuple[Tensor, Tensor, Tensor]] = []
    for start in range(0, basis.shape[0], chunk):
        block = torch.vmap(move)(basis[start : start + chunk])
        c, r = torch.nonzero(block, as_tuple=True)
        found.append((r, c + start, block[c, r]))
    r, c, v = (torch.cat(part) for part in zip(*found, strict=True))
    order = torch.argsort(r * basis.shape[0] + c)
    return Moves(r[order], c[order], v[order], (rows, basis.shape[0]))


def probed_moves(move: Callable[[Tensor], Tensor], basis: Tensor, rows: int) -> Moves | None:
    """C in 2 + log2(dim) applications of ``move`` when each row of C has one nonzero (a
    per-feature or per-neuron shift): the sum of all basis elements gives each row's value,
    and the sum of those whose index has bit k set says bit k of its column. A last probe
    with random weights checks the pattern (C v against the move of v); None when it fails
    (a row that two columns move), for the dense computation. The values are differentiable
    in what ``move`` reads (one more application when autograd records)."""
    dim = basis.shape[0]
    if dim == 0:
        return None
    with torch.no_grad():
        total = move(basis.sum(0))
        at = torch.nonzero(total).reshape(-1)
        values = total[at]
        del total
        col = torch.zeros(at.numel(), dtype=torch.long, device=at.device)
        index = torch.arange(dim, device=basis.device)
        for k in range(max(1, (dim - 1).bit_length())):
            chosen = (index >> k) & 1 == 1
            if not bool(chosen.any()):
                continue
            probe = move(basis[chosen].sum(0))[at]
            lit = probe != 0
            if bool(((probe != values) & lit).any()):
                return None  # the row sees two columns: not a one-nonzero row
            col |= lit.long() << k
            del probe, lit
        if bool((col >= dim).any()):
            return None
        weights = torch.rand(dim, generator=torch.Generator().manual_seed(0), dtype=basis.dtype)
        weights = weights.to(basis.device) + 0.5
        check = move(torch.einsum("i,i...->...", weights, basis))
        expected = torch.zeros_like(check).index_put((at,), values * weights[col])
        scale = float(values.abs().max()) if values.numel() else 1.0
        if float((check - expected).abs().max()) > 1e-9 * max(scale, 1e-300):
            return None
    if torch.is_grad_enabled():  # the pattern is fixed; the values follow the point
        values = move(basis.sum(0))[at]
    return Moves(at, col, values, (rows, dim))


def components(C: Moves) -> Tensor:
    """A label per column of C: columns that share a row (transitively) share a label, the
    smallest column index in the component."""
    dim = C.shape[1]
    label = torch.arange(dim)
    if C.rows.numel() == 0:
        return label
    while True:
        by_row = torch.full((C.shape[0],), dim, dtype=torch.long)
        by_row = by_row.scatter_reduce(0, C.rows, label[C.cols], "amin")
        new = label.scatter_reduce(0, C.cols, by_row[C.rows], "amin")
        new = new[new]  # jump along the chain: the iterations grow as log of the diameter
        if torch.equal(new, label):
            return label
        label = new


# --- the greedy pivots ----------------------------------------------------------------------


def greedy_rows(
    U: Tensor,
    count: int | None,
    exclude: Tensor | None = None,
    allowed: Tensor | None = None,
    first: float | None = None,
    scores: list[float] | None = None,
) -> list[int]:
    """Greedy max-volume rows of U (Gram-Schmidt with pivoting); with ``count`` None, as many
    as the rows outside ``exclude`` have rank (until every residual is at rounding level,
    relative to ``first``, by default the largest squared row norm). The residual norms are
    kept up to date with one product ``U q`` per pick (q, the new direction, is orthogonal to
    the earlier ones, so the deflated U gives the same product): U is read, never rewritten,
    and read as a sparse matrix when it mostly holds zeros. ``allowed`` (rows x count,
    boolean): row r may be the i-th pick only where allowed[r, i]. ``scores`` collects each
    pick's squared residual norm."""
    if exclude is not None:
        U = U.masked_fill(exclude[:, None], 0.0)
    norms = (U * U).sum(1)
    if first is None:
        first = float(norms.max()) if norms.numel() else 0.0
    sparse = U.numel() > 0 and int(torch.count_nonzero(U)) < 0.1 * U.numel()
    product = U.to_sparse() if sparse else U
    picked = U.new_zeros(0, U.shape[1])
    chosen: list[int] = []
    if count is None and (first == 0 or not norms.numel() or float(norms.max()) == 0):
        return chosen
    while count is None or len(chosen) < count:
        # the last of the (numerically) largest: ties are common in structured constraints, and
        # the last entry of a centred row is the one a rotation fixing the ones vector leaves
        usable = norms if allowed is None else norms.masked_fill(~allowed[:, len(chosen)], 0.0)
        i = int(torch.nonzero(usable >= usable.max() * (1 - 1e-9))[-1])
        if count is not None and (
            usable[i] <= 1e-24 * max(float(norms.max()), 1.0) or usable[i] == 0
        ):
            from .errors import DegenerateError

            raise DegenerateError("rank-deficient")
        residual = U[i]
        for _ in range(2):  # twice is enough (classical Gram-Schmidt, Kahan and Parlett)
            residual = residual - picked.T @ (picked @ residual)
        # the updated norms carry rounding of the order of eps * first: the rank is read off
        # the candidate's own residual, computed afresh
        size = float(residual @ residual)
        if count is None and size <= 1e-20 * first:
            break
        chosen.append(i)
        if scores is not None:
            scores.append(float(usable[i]))
        q = residual / residual.norm()
        picked = torch.cat([picked, q[None]])
        norms = (norms - (product @ q[:, None])[:, 0] ** 2).clamp_min(0.0)
        norms[chosen] = 0.0
    return chosen


# --- the minimum-norm fix and the dependent entries, per component ---------------------------


def solve_components(
    C: Moves, x: Tensor, blocked: Tensor, dense_limit: int = 1 << 22, count: Tensor | None = None
) -> tuple[Tensor, list[int]]:
    """(c, dependent): the minimum-norm c with C c = -(the part of x in C's range), its
    singular values cut at 1e-10 of the largest; and the greedy max-volume rows of C outside
    ``blocked``, as many as they have rank (in the order one greedy pass over all of C would
    pick them: by decreasing residual, ties to the later row). Components of C's columns are
    independent blocks, so both are solved block by block: a block of more than ``dense_limit``
    entries through its Gram matrix (built from its distinct rows, each with its count) and a
    greedy pass over its distinct rows held sparse (:func:`_large_block`). With ``count``, each
    row of C stands for that many equal rows (a :class:`Fold`) and x holds their sums."""
    dim = C.shape[1]
    c = torch.zeros(dim, dtype=x.dtype)
    if C.values.numel() == 0:
        return c, []
    if count is not None:  # rows standing for ``count`` equal rows each, x summed over them
        w = count.to(x.dtype).sqrt()
        c, _ = solve_components(
            Moves(C.rows, C.cols, C.values * w[C.rows], C.shape), x / w, blocked
        )
        return c, solve_components(C, torch.zeros_like(x), blocked)[1]
    label = components(C)
    width = torch.bincount(label, minlength=dim)
    single = width[label] == 1  # columns alone in their component
    sq = C.values * C.values
    col_norm2 = torch.zeros(dim, dtype=x.dtype).index_add(0, C.cols, sq)
    # the largest singular value: of a one-column block, its norm; of the others, their own
    top2 = float(col_norm2[single].max()) if bool(single.any()) else 0.0
    multi = torch.unique(label[~single]).tolist()
    blocks, large = [], []
    Ctx = C.rmatvec(x)
    for head in multi:
        cols = torch.nonzero(label == head).reshape(-1)
        at = torch.isin(C.cols, cols)
        rows = torch.unique(C.rows[at])
        if rows.numel() * cols.numel() > dense_limit:
            found = _large_block(C, at, rows, cols, x.dtype)
            top2 = max(top2, float(found[-2].max()) if found[-2].numel() else 0.0)
            large.append(found)
            continue
        sub = torch.zeros(rows.numel(), cols.numel(), dtype=x.dtype)
        sub[torch.searchsorted(rows, C.rows[at]), torch.searchsorted(cols, C.cols[at])] = C.values[
            at
        ].to(x)
        U, sv, Vh = torch.linalg.svd(sub, full_matrices=False)
        top2 = max(top2, float(sv.max()) ** 2 if sv.numel() else 0.0)
        blocks.append((rows, cols, sub, U, sv, Vh))
    cut = 1e-10 * max(top2**0.5, 1.0)
    # one-column blocks: c_j = -(C_j . x) / |C_j|^2
    keep = single & (col_norm2.sqrt() > cut)
    c[keep] = -Ctx[keep] / col_norm2[keep]
    for rows, cols, _, U, sv, Vh in blocks:
        rank = int(torch.count_nonzero(sv > cut))
        U, sv, Vh = U[:, :rank], sv[:rank], Vh[:rank]
        c[cols] = -(Vh.T @ ((U.T @ x[rows]) / sv))
    for cols, _, lam, V in large:
        # the Gram matrix resolves eigenvalues to about n eps of the largest, not cut^2
        floor = max(cut * cut, float(lam.max()) * lam.numel() * 2.2e-16) if lam.numel() else 0.0
        kept = lam > floor
        V, lam = V[:, kept], lam[kept]
        c[cols] = -(V @ ((V.T @ Ctx[cols]) / lam))
    # the dependent rows: the greedy threshold is relative to the largest row norm outside
    # ``blocked`` over all of C
    row_norm2 = torch.zeros(C.shape[0], dtype=x.dtype).index_add(0, C.rows, sq)
    row_norm2 = row_norm2.masked_fill(blocked, 0.0)
    first = float(row_norm2.max())
    picks: list[tuple[float, int]] = []
    if first > 0:
        at = single[C.cols] & ~blocked[C.rows]
        r, col, s = C.rows[at], C.cols[at], sq[at]
        best = torch.zeros(dim, dtype=x.dtype).scatter_reduce(0, col, s, "amax")
        near = s >= best[col] * (1 - 1e-9)
        last = torch.full((dim,), -1, dtype=torch.long)
        last = last.scatter_reduce(0, col[near], r[near], "amax")
        ok = (last >= 0) & (best > 1e-20 * first)
        picks += list(zip(best[ok].tolist(), last[ok].tolist(), strict=True))
        for rows, _, sub, *_ in blocks:
            scores: list[float] = []
            chosen = greedy_rows(sub, None, blocked[rows], first=first, scores=scores)
            picks += [(s, int(rows[i])) for s, i in zip(scores, chosen, strict=True)]
        for cols, rows, *_ in large:
            picks += _greedy_sparse(C, cols, rows, blocked, first)
    picks.sort(key=lambda pick: (-pick[0], -pick[1]))
    return c, [row for _, row in picks]


def _distinct_rows(C: Moves, at: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
    """(class, count): a label per row of ``rows`` (C's nonzeros ``at``), equal for rows of C
    that are equal (two random fingerprints of each row agree), and each class's size. A
    broadcast translation (one vector added to every row of a table) repeats its rows."""
    g = torch.Generator().manual_seed(1)
    r = torch.searchsorted(rows, C.rows[at])
    prints = []
    for _ in range(2):
        weight = torch.rand(C.shape[1], generator=g, dtype=torch.float64) + 0.5
        prints.append(
            torch.zeros(rows.numel(), dtype=torch.float64).index_add(
                0, r, C.values[at].double() * weight[C.cols[at]]
            )
        )
    first, label = torch.unique(prints[0], return_inverse=True)
    lo = torch.full((first.numel(),), float("inf"), dtype=torch.float64)
    lo = lo.scatter_reduce(0, label, prints[1], "amin")
    hi = torch.full((first.numel(),), -float("inf"), dtype=torch.float64)
    hi = hi.scatter_reduce(0, label, prints[1], "amax")
    if not torch.equal(lo, hi):  # the fingerprints disagree: every row its own class
        label = torch.arange(rows.numel())
    return label, torch.bincount(label)


def _large_block(C: Moves, at: Tensor, rows: Tensor, cols: Tensor, dtype):
    """A component too large for a dense SVD: (cols, rows, eigenvalues, eigenvectors) of its
    Gram matrix C_b^T C_b, summed over its distinct rows with their counts."""
    label, count = _distinct_rows(C, at, rows)
    # the last row of each class stands for it (its nonzeros, weighted by the class size)
    last = torch.full((count.numel(),), -1, dtype=torch.long)
    last = last.scatter_reduce(0, label, torch.arange(rows.numel()), "amax")
    r = torch.searchsorted(rows, C.rows[at])
    mine = last[label[r]] == r
    rr, cc = label[r[mine]], torch.searchsorted(cols, C.cols[at][mine])
    vv = C.values[at][mine].to(dtype)
    n = cols.numel()
    # rows with a few nonzeros: each contributes its outer product (pairs within a row)
    order = torch.argsort(rr, stable=True)
    rr, cc, vv = rr[order], cc[order], vv[order]
    start = torch.searchsorted(rr, rr, right=False)
    G = torch.zeros(n * n, dtype=dtype)
    weight = count.to(dtype)
    span = int((torch.searchsorted(rr, rr, right=True) - start).max())
    for shift in range(span):
        j = start + shift
        ok = j < torch.searchsorted(rr, rr, right=True)
        a, b = torch.nonzero(ok).reshape(-1), j[ok]
        G.index_add_(0, cc[a] * n + cc[b], weight[rr[a]] * vv[a] * vv[b])
    lam, V = torch.linalg.eigh(G.reshape(n, n))
    return cols, rows, lam, V


def _greedy_sparse(C: Moves, cols: Tensor, rows: Tensor, blocked: Tensor, first: float):
    """:func:`greedy_rows` over a large component's rows outside ``blocked`` (those of ``C``
    at ``rows``, on ``cols``), held sparse: equal rows enter once, as their last copy outside
    ``blocked`` (the one the greedy pass would pick of a tie). Returns (score, row) pairs."""
    at = torch.isin(C.cols, cols)
    label, count = _distinct_rows(C, at, rows)
    open_rows = ~blocked[rows]
    index = torch.arange(rows.numel())
    last = torch.full((count.numel(),), -1, dtype=torch.long)
    last = last.scatter_reduce(0, label[open_rows], index[open_rows], "amax")
    keep = last[last >= 0]  # one row per class with an open copy, in row order
    keep = torch.sort(keep).values
    r = torch.searchsorted(rows, C.rows[at])
    slot = torch.full((rows.numel(),), -1, dtype=torch.long)
    slot[keep] = torch.arange(keep.numel())
    on = slot[r] >= 0
    rr, cc = slot[r[on]], torch.searchsorted(cols, C.cols[at][on])
    vv = C.values[at][on].double()
    order = torch.argsort(rr, stable=True)
    rr, cc, vv = rr[order], cc[order], vv[order]
    m, n = keep.numel(), cols.numel()
    ptr = torch.zeros(m + 1, dtype=torch.long)
    ptr[1:] = torch.cumsum(torch.bincount(rr, minlength=m), 0)
    norms = torch.zeros(m, dtype=torch.float64).index_add(0, rr, vv * vv)
    picked = torch.zeros(0, n, dtype=torch.float64)
    out: list[tuple[float, int]] = []
    if m == 0 or float(norms.max()) == 0:
        return out
    while True:
        i = int(torch.nonzero(norms >= norms.max() * (1 - 1e-9))[-1])
        a, b = int(ptr[i]), int(ptr[i + 1])
        residual = torch.zeros(n, dtype=torch.float64).index_put((cc[a:b],), vv[a:b])
        for _ in range(2):
            residual = residual - picked.T @ (picked @ residual)
        size = float(residual @ residual)
        if size <= 1e-20 * first:
            break
        out.append((float(norms[i]), int(rows[keep[i]])))
        q = residual / residual.norm()
        picked = torch.cat([picked, q[None]])
        product = torch.zeros(m, dtype=torch.float64).index_add(0, rr, vv * q[cc])
        norms = (norms - product**2).clamp_min(0.0)
        norms[i] = 0.0
        if picked.shape[0] == n:
            break
    return out
