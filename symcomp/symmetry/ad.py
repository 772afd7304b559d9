"""Forward-mode derivatives computed with reverse-mode autograd (the double-vjp trick).

``torch.func.jvp`` and ``torch.autograd.forward_ad`` both import ``torch._dynamo`` on their first
call (about 1.3 s, through the Python decompositions that forward mode dispatches to), which every
``symcomp compile`` would pay. Reverse mode does not: with ``g(u) = J^T u`` (one backward pass that
keeps its graph), ``J v`` is the gradient of ``<g(u), v>`` with respect to ``u``. Both passes are
exact automatic differentiation, so the result is the JVP up to rounding.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def jacobian_columns(fn: Callable[[Tensor], Tensor], primal: Tensor, directions: Tensor) -> Tensor:
    """``(len(directions), fn(primal).numel())``: ``J d`` for each direction ``d`` (shaped like
    ``primal``), from one transposed pass and one batched backward. Not for use inside a
    ``torch.func`` transform (it needs ``requires_grad``)."""
    x = primal.detach().requires_grad_()
    with torch.enable_grad():
        out = fn(x)
        zeros = out.new_zeros(directions.shape[0], out.numel())
        if not out.requires_grad:  # fn does not depend on x
            return zeros
        u = torch.zeros_like(out, requires_grad=True)
        (back,) = torch.autograd.grad(out, x, u, create_graph=True, allow_unused=True)
    if back is None or not back.requires_grad:  # fn does not depend on x, or J^T u not on u
        return zeros
    (columns,) = torch.autograd.grad(back, u, directions, is_grads_batched=True, allow_unused=True)
    return zeros if columns is None else columns.reshape(directions.shape[0], -1)
