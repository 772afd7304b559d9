"""A block preconditioner for the least-squares projection: an approximate inverse of ``J^T J``
group by group (each unit's own Gram operator), all units of a group at once.

- A matrix group whose every move has a closed form (``X E``, ``E^-1 X`` ...) has the Gram
  operator ``xi -> A xi + xi B`` per unit, with ``A``, ``B`` sums of ``YᵀY`` or ``Y Yᵀ`` over its
  views. Its inverse is approximated by the Kronecker product
  ``(A + b I) ⊗ (B + a I) / (a + b)``, ``a = tr A / n``, ``b = tr B / n``: exact when either
  side is a multiple of the identity, and two Cholesky solves per unit (no eigendecomposition).
- A scaling group's Gram operator is a diagonal (squared row or column norms): exact.
- Any other group (translations, rotations of norm readers): the inverse of its scale along one
  random direction per unit.
- Unread table entries: ``J`` is the identity there.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .vertical import BatchedVertical

Block = Callable[[Tensor], Tensor]  # (units, dim) -> (units, dim)


def block_preconditioner(op: BatchedVertical) -> list[Block | None]:
    blocks: list[Block | None] = []
    closed = [
        group.kind != "translation" and all(act.form is not None for act in group.acts)
        for group in op.groups
    ]
    probe = torch.randn(op.dim, generator=torch.Generator().manual_seed(0), dtype=op.dtype)
    scales = op.unit_norms(_unit_normalized(op, probe))
    for g, (group, algebra) in enumerate(zip(op.groups, op.algebras, strict=True)):
        if not closed[g]:
            scale = scales[g].to(op.dtype)[:, None] + 1e-300
            blocks.append(lambda c, scale=scale: c / scale)
            continue
        n, count = algebra.n, op.counts[g]
        if group.kind == "scaling":
            diagonal = torch.zeros(count, 1, n, dtype=op.dtype)
            for batch in (b for b in op.batches if b.group == g):
                side = batch.act.form[0]
                Y2 = batch.Y * batch.Y
                part = Y2.sum(-2, keepdim=True) if side == "right" else Y2.sum(-1)[:, None, :]
                diagonal.index_add_(0, batch.units, part)
            diagonal = diagonal + 1e-12 * diagonal.amax() + 1e-300
            blocks.append(lambda c, d=diagonal, a=algebra: a.lower(a.lift(c) / d))
            continue
        A = torch.zeros(count, n, n, dtype=op.dtype)
        B = torch.zeros(count, n, n, dtype=op.dtype)
        for batch in (b for b in op.batches if b.group == g):
            side, form, _ = batch.act.form
            Y = batch.Y
            gram = Y.mT @ Y if side == "right" else Y @ Y.mT
            target = A if (side == "right") == (form in ("E", "E^-1")) else B
            target.index_add_(0, batch.units, gram)
        a = A.diagonal(dim1=-2, dim2=-1).mean(-1)[:, None, None]
        b = B.diagonal(dim1=-2, dim2=-1).mean(-1)[:, None, None]
        eye = torch.eye(n, dtype=op.dtype)
        floor = 1e-12 * float((a + b).max()) + 1e-300
        L_A = torch.linalg.cholesky(A + (b + floor) * eye)
        L_B = torch.linalg.cholesky(B + (a + floor) * eye)
        blocks.append(
            lambda c, L_A=L_A, L_B=L_B, s=a + b + 2 * floor, al=algebra: al.lower(
                s * torch.cholesky_solve(torch.cholesky_solve(al.lift(c), L_A).mT, L_B).mT
            )
        )
    return blocks


def apply_preconditioner(op: BatchedVertical, blocks: list[Block | None], coords: Tensor) -> Tensor:
    parts = op.split(coords)
    out = [
        block(part).reshape(-1) if block is not None else part.reshape(-1)
        for block, part in zip(blocks, parts, strict=False)
    ]
    out += [part.reshape(-1) for part in parts[len(blocks) :]]
    return torch.cat(out)


def _unit_normalized(op: BatchedVertical, c: Tensor) -> Tensor:
    """``c`` with each unit's algebra element of unit norm (the probe of the scales)."""
    parts = op.split(c)
    out = []
    for part, algebra in zip(parts, op.algebras, strict=False):
        lifted = algebra.lower(algebra.lift(part))
        out.append((lifted / lifted.norm(dim=-1, keepdim=True).clamp_min(1e-300)).reshape(-1))
    out += [part.reshape(-1) for part in parts[len(op.algebras) :]]
    return torch.cat(out)
