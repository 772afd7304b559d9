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
