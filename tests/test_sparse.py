"""The translation steps' move matrix C found by probing (one nonzero per row) agrees with the
dense computation, and probing gives up (for the dense path) where a row sees two columns."""

import torch
from symcomp_runtime.sparse import dense_moves, probed_moves, sparse_moves


def _linear(A: torch.Tensor):
    return lambda B: A @ B.reshape(-1)


def _one_per_row(rows: int, dim: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    A = torch.zeros(rows, dim, dtype=torch.float64)
    cols = torch.randint(0, dim, (rows,), generator=g)
    A[torch.arange(rows), cols] = torch.randn(rows, generator=g, dtype=torch.float64)
    A[::3] = 0.0  # rows no basis element moves
    return A


def _same(a, b) -> bool:
    return (
        a.shape == b.shape
        and torch.equal(a.rows, b.rows)
        and torch.equal(a.cols, b.cols)
        and torch.allclose(a.values, b.values, rtol=1e-14, atol=0)
    )


def test_probing_finds_one_nonzero_rows():
    rows, dim = 50, 13
    A = _one_per_row(rows, dim)
    basis = torch.eye(dim, dtype=torch.float64).reshape(dim, dim)
    found = probed_moves(_linear(A), basis, rows)
    assert found is not None
    assert _same(found, dense_moves(_linear(A), basis, rows))
    assert torch.equal(found.dense(), A)


def test_probing_over_a_non_unit_basis():
    # basis elements shaped as matrices, the move reading them through a fixed map
    rows, dim = 40, 9
    A = _one_per_row(rows, dim, seed=1)
    basis = torch.eye(dim, dtype=torch.float64).reshape(dim, 3, 3) * 2.0
    found = sparse_moves(_linear(A), basis, rows)
    assert torch.allclose(found.dense(), 2.0 * A, rtol=1e-14, atol=0)


def test_probing_gives_up_where_a_row_sees_two_columns():
    rows, dim = 30, 8
    A = _one_per_row(rows, dim, seed=2)
    A[4, 1], A[4, 6] = 1.5, -0.25
    basis = torch.eye(dim, dtype=torch.float64)
    assert probed_moves(_linear(A), basis, rows) is None
    assert torch.equal(sparse_moves(_linear(A), basis, rows).dense(), A)


def test_probing_is_not_fooled_by_cancelling_columns():
    # row 7 is moved by two columns whose sum cancels: invisible to the total, caught by the
    # random check
    rows, dim = 30, 8
    A = _one_per_row(rows, dim, seed=3)
    A[7] = 0.0
    A[7, 2], A[7, 5] = 1.0, -1.0
    basis = torch.eye(dim, dtype=torch.float64)
    assert probed_moves(_linear(A), basis, rows) is None
    assert torch.equal(sparse_moves(_linear(A), basis, rows).dense(), A)


def test_a_large_component_through_its_distinct_rows_matches_the_dense_svd():
    """An embedding-like step: every row of W_E (V x d) moved by one scalar and by c_j, every
    row of W_P (T x d) by b_p and -c_j; one component, its W_E rows repeated V times."""
    from symcomp_runtime.sparse import Moves, solve_components

    V, T, d = 7, 4, 3
    rows, cols, vals = [], [], []
    for v in range(V):
        for j in range(d):
            rows += [v * d + j] * 2
            cols += [0, 1 + T + j]
            vals += [1.0, 1.0]
    for p in range(T):
        for j in range(d):
            rows += [(V + p) * d + j] * 2
            cols += [1 + p, 1 + T + j]
            vals += [1.0, -1.0]
    m, n = (V + T) * d, 1 + T + d
    C = Moves(
        torch.tensor(rows), torch.tensor(cols), torch.tensor(vals, dtype=torch.float64), (m, n)
    )
    x = torch.randn(m, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    blocked = torch.zeros(m, dtype=torch.bool)
    blocked[[0, 5, 30]] = True
    c_dense, dep_dense = solve_components(C, x, blocked)
    c_large, dep_large = solve_components(C, x, blocked, dense_limit=1)
    D = C.dense()
    assert torch.allclose(c_large, c_dense, atol=1e-12)
    assert (D.T @ (x + D @ c_large)).abs().max() < 1e-12  # the fix is the projection
    assert dep_large == dep_dense
    assert int(torch.linalg.matrix_rank(D[dep_large])) == int(torch.linalg.matrix_rank(D))
    assert not blocked[dep_large].any()


def test_the_probe_colouring_separates_columns_that_share_a_row():
    from symcomp_runtime.slices import _colours
    from symcomp_runtime.sparse import Moves

    g = torch.Generator().manual_seed(4)
    rows = torch.randint(0, 30, (80,), generator=g)
    cols = torch.randint(0, 12, (80,), generator=g)
    key = torch.unique(rows * 12 + cols)
    rows, cols = key // 12, key % 12
    colour = _colours(Moves(rows, cols, torch.ones(rows.numel(), dtype=torch.float64), (30, 12)))
    for r in rows.unique():
        mine = colour[cols[rows == r]]
        assert mine.unique().numel() == mine.numel()
    assert int(colour.max()) < 12
