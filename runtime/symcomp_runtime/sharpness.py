"""Sharpness on the quotient: plain, adaptive and geodesic (Hide & Seek, arXiv 2505.05409).

Sharpness is the largest loss increase over a ball of perturbations around a trained point.
Three measures, each maximised by Auto-PGD (:mod:`symcomp_runtime.ascent`):

- ``plain``: the Euclidean ball, straight steps ``θ + ξ``. Not invariant under the symmetries.
- ``adaptive``: the elementwise ball ``‖ξ / w‖ ≤ ρ``, straight steps: invariant under elementwise
  rescalings (per-neuron scalings of a ReLU or gated MLP), not under the per-head GL(k) gauges.
- ``geodesic``: the quotient. On every GL(k) pair (``(W_Q, W_K)`` and ``(W_V, W_Oᵀ)`` per head)
  a GL-invariant metric (``inv`` or ``mix``), horizontal perturbations only, and the second-order
  geodesic ``θ + ξ − ½ Γ(ξ, ξ)``; every other weight elementwise, with its own geodesic
  correction ``+ ξ²/(2w)``. Invariant under the pairs' GL(k) actions and elementwise rescalings.

:func:`sharpness` works on a flat parameter vector with explicit pair index tensors (a diagonal
linear network ``β = u ⊙ v`` is ``D`` pairs of 1×1 factors); :func:`model_sharpness` takes a
model from a package ``symcomp compile`` wrote, whose ``geometry`` module finds the pairs.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .ascent import Ascent, maximize
from .metric import METRICS, PAIR_METRICS, Geometry

MEASURES = ("plain", "adaptive", "geodesic")

__all__ = [
    "MEASURES",
    "METRICS",
    "PAIR_METRICS",
    "Ascent",
    "DegeneratePointWarning",
    "Geometry",
    "Sharpness",
    "geometry_for",
    "lm_loss",
    "maximize",
    "model_sharpness",
    "sharpness",
]


@dataclass(frozen=True)
class Sharpness:
    """One sharpness value and how it was measured (``metric``: the one the ball used,
    ``euclidean`` for plain, ``elementwise`` for adaptive)."""

    measure: str
    metric: str
    rho: float
    value: float
    base_loss: float
    history: tuple[float, ...]


def geometry_for(
    theta: Tensor, pairs: Sequence[tuple[Tensor, Tensor]], measure: str, metric: str = "inv"
) -> Geometry:
    """The geometry a ``measure`` uses at ``theta`` (``metric`` matters for ``geodesic`` only)."""
    if measure not in MEASURES:
        raise ValueError(f"unknown measure {measure!r}; accepted: {', '.join(MEASURES)}")
    if measure == "plain":
        return Geometry(theta, (), "euclidean", second_order=False)
    if measure == "adaptive":
        return Geometry(theta, (), "elementwise", second_order=False)
    if metric not in PAIR_METRICS:
        raise ValueError(f"unknown pair metric {metric!r}; accepted: {', '.join(PAIR_METRICS)}")
    return Geometry(theta, pairs, metric, second_order=True)


def sharpness(
    loss: Callable[[Tensor], Tensor],
    theta: Tensor,
    pairs: Sequence[tuple[Tensor, Tensor]] = (),
    *,
    measure: str = "geodesic",
    metric: str = "inv",
    rho: float = 0.1,
    steps: int = 20,
    progress: bool = False,
    names: Callable[[Tensor], str] | None = None,
) -> Sharpness:
    """Sharpness of ``loss`` (a function of the flat float64 vector ``theta``) at ``theta``.

    The adaptive and geodesic balls measure an elementwise weight relative to itself, so an
    entry that is exactly zero cannot move: a :class:`DegeneratePointWarning` says how many
    are held fixed (a freshly initialised model's biases are all zero; measure at a trained
    or perturbed point; ``names`` maps a mask over ``theta`` to the parameters it touches, for
    that message). A loss that is not finite along the ascent is a ValueError."""
    geometry = geometry_for(theta.detach().to(torch.float64), pairs, measure, metric)
    _warn_if_degenerate(geometry, measure, names)
    if progress:
        ascent = _with_progress_bar(loss, geometry, rho, steps, f"{measure} sharpness")
    else:
        ascent = maximize(loss, geometry, rho, steps)
    return Sharpness(measure, geometry.metric, rho, ascent.value, ascent.base_loss, ascent.history)


def model_sharpness(
    model: nn.Module,
    loss: Callable[[dict[str, Tensor]], Tensor],
    *,
    measure: str = "geodesic",
    metric: str = "inv",
    rho: float = 0.1,
    steps: int = 20,
    progress: bool = False,
) -> Sharpness:
    """Sharpness of a generated ``Model``; ``loss`` maps named parameters to a scalar (use
    :func:`lm_loss`, or ``torch.func.functional_call`` on your own data)."""
    from .packages import package_module

    module = package_module(model, "geometry")
    theta = module.flat_parameters(model)
    pairs = module.pair_indices(model) if measure == "geodesic" else ()

    def flat_loss(vector: Tensor) -> Tensor:
        return loss(module.unflatten(model, vector))

    def names(mask: Tensor) -> str:
        parts = module.unflatten(model, mask.to(theta.dtype))
        return ", ".join(name for name, part in parts.items() if bool(part.any()))

    return sharpness(
        flat_loss,
        theta,
        pairs,
        measure=measure,
        metric=metric,
        rho=rho,
        steps=steps,
        progress=progress,
        names=names,
    )


class DegeneratePointWarning(UserWarning):
    """The point has parameters the sharpness ball cannot move (see :func:`sharpness`)."""


def _warn_if_degenerate(
    geometry: Geometry, measure: str, names: Callable[[Tensor], str] | None
) -> None:
    if measure == "plain":
        return
    mask = geometry.elementwise & ~geometry.live
    frozen = int(mask.sum())
    if frozen:
        where = names(mask) if names is not None else ""
        warnings.warn(
            f"{frozen} of {geometry.dim} parameter entries are exactly zero"
            + (f" (in {where[:300]})" if where else "")
            + f": the {measure} ball measures each elementwise weight relative to itself, so "
            "it holds them fixed and the sharpness ignores them. A freshly initialised model's "
            "biases are zero: measure at a trained or perturbed point, or with measure='plain'.",
            DegeneratePointWarning,
            stacklevel=3,
        )


def lm_loss(model: nn.Module, tokens: Tensor) -> Callable[[dict[str, Tensor]], Tensor]:
    """Next-token cross-entropy of ``model`` on ``tokens`` (B, T), as a function of its
    parameters (float64)."""
    inputs, targets = tokens[:, :-1], tokens[:, 1:]

    def loss(params: dict[str, Tensor]) -> Tensor:
        logits = torch.func.functional_call(model, params, (inputs,))
        return torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
        )

    return loss


def _with_progress_bar(loss, geometry: Geometry, rho: float, steps: int, label: str) -> Ascent:
    """The ascent with a progress bar: rich's where rich is installed (symcomp depends on it, the
    runtime does not), else one line on stderr, rewritten after each step."""
    try:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    except ModuleNotFoundError:

        def line(k: int, best: float) -> None:
            end = "\n" if k == steps else ""
            print(f"\r{label}: {k}/{steps}, best {best:.4g}", end=end, file=sys.stderr, flush=True)

        return maximize(loss, geometry, rho, steps, progress=line)

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("best {task.fields[best]:.4g}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task(label, total=steps, best=0.0)
        return maximize(
            loss,
            geometry,
            rho,
            steps,
            progress=lambda k, best: bar.update(task, completed=k, best=best),
        )
