"""The largest loss increase over a ball of tangent vectors: Auto-PGD with the Riemannian gradient.

The variable is a tangent vector ``ξ`` at the (fixed) point ``θ``; the feasible set is the
horizontal subspace intersected with the ball ``‖ξ‖ ≤ ρ``, both in the geometry's metric, so
projecting onto it is the horizontal projection followed by a rescaling onto the ball. Each step
follows the Riemannian gradient of ``f(ξ) = L(step(ξ))`` made horizontal, normalised in the metric.

The schedule is Auto-PGD's (Croce & Hein, 2020): momentum 0.75, step size ``2ρ`` halved at
checkpoints where fewer than 75% of the steps since the last one improved, or where neither the
step size nor the best value changed; after a halving the search restarts from the best point.
It is deterministic and starts at ``ξ = 0``: every operation is equivariant under the group, so
moving ``θ`` along its orbit leaves the value unchanged, up to rounding.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .metric import Geometry

MOMENTUM = 0.75
IMPROVING = 0.75


@dataclass(frozen=True)
class Ascent:
    """Result of :func:`maximize`: the best increase ``L(step(ξ)) − L(θ)``, the loss at ``θ``,
    the best ``ξ`` and the value after each iteration."""

    value: float
    base_loss: float
    xi: Tensor
    history: tuple[float, ...]


def checkpoints(steps: int) -> list[int]:
    """Auto-PGD's checkpoints ``⌈p_j N⌉``: ``p_0 = 0``, ``p_1 = 0.22``,
    ``p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06)``."""
    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({math.ceil(round(q * steps, 9)) for q in p if q <= 1})


def maximize(
    loss: Callable[[Tensor], Tensor],
    geometry: Geometry,
    rho: float,
    steps: int = 20,
    progress: Callable[[int, float], None] | None = None,
) -> Ascent:
    """Maximise ``loss(geometry.step(ξ)) − loss(θ)`` over horizontal ``ξ`` with ``‖ξ‖ ≤ rho``.

    ``loss`` maps a flat parameter vector to a scalar tensor (differentiable). ``progress`` is
    called as ``progress(iteration, best)`` after each iteration.
    """
    base = float(loss(geometry.theta))

    def value_and_direction(xi: Tensor) -> tuple[float, Tensor]:
        xi = xi.detach().requires_grad_(True)
        value = loss(geometry.step(xi))
        (egrad,) = torch.autograd.grad(value, xi)
        if not (math.isfinite(float(value.detach())) and bool(torch.isfinite(egrad).all())):
            raise ValueError(
                "the loss or its gradient is not finite along the ascent (at a distance "
                f"{float(geometry.norm(xi.detach())):.3g} from the point): no sharpness value "
                "can be trusted; check the loss at the point itself"
            )
        direction = geometry.project(geometry.rgrad(egrad))
        size = float(geometry.norm(direction))
        return float(value.detach()) - base, direction / size if size > 0 else direction

    def feasible(xi: Tensor) -> Tensor:
        xi = geometry.project(xi)
        size = float(geometry.norm(xi))
        return xi * (rho / size) if size > rho else xi

    eta = 2.0 * rho
    marks = set(checkpoints(steps))
    x_prev = x = torch.zeros_like(geometry.theta)
    f_x, d_x = value_and_direction(x)
    best, x_best = f_x, x
    history: list[float] = []
    improved = 0
    last_mark, halved_last, best_at_mark = 0, False, best
    for k in range(steps):
        z = feasible(x + eta * d_x)
        x_next = z if k == 0 else feasible(x + MOMENTUM * (z - x) + (1 - MOMENTUM) * (x - x_prev))
        f_next, d_next = value_and_direction(x_next)
        improved += f_next > f_x
        if f_next > best:
            best, x_best = f_next, x_next
        x_prev, x, f_x, d_x = x, x_next, f_next, d_next
        history.append(best)
        if progress is not None:
            progress(k + 1, best)
        if k + 1 in marks and k + 1 > last_mark:
            stalled = improved < IMPROVING * (k + 1 - last_mark)
            unchanged = not halved_last and best_at_mark == best
            halved_last = stalled or unchanged
            if halved_last:
                eta /= 2
                x_prev = x = x_best
                f_x, d_x = value_and_direction(x)
            last_mark, best_at_mark, improved = k + 1, best, 0
    return Ascent(value=best, base_loss=base, xi=x_best.detach(), history=tuple(history))
