"""Invariants: quantities every symmetry of a model leaves unchanged.

- ``qk_circuit`` and ``ov_circuit``: per layer and head, the bilinear forms of attention, kept
  factored (``left @ right.T``): nothing of size vocab x vocab is ever built.
- ``group_invariants(model, chart, group)``: the parameters ``group`` moves, brought to the
  chart point of the gauge-fixing steps up to that group's; two models related by the group give
  the same values. ``all_group_invariants(model, chart)``: those of every group, from one
  canonicalization.
- ``invariants(model, chart)``: all of them, by name.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from . import gauge
from .actions import _targets, as_sizes

__all__ = [
    "Factored",
    "all_group_invariants",
    "group_invariants",
    "invariants",
    "ov_circuit",
    "qk_circuit",
]


@dataclass(frozen=True)
class Factored:
    """The matrix ``left @ right.T``, kept as its two factors."""

    left: Tensor
    right: Tensor

    def gram(self) -> Tensor:
        """(left^T left)(right^T right): its trace is the squared Frobenius norm."""
        return (self.left.T @ self.left) @ (self.right.T @ self.right)

    def norm(self) -> Tensor:
        return torch.sqrt(torch.trace(self.gram()).clamp_min(0))

    def singular_values(self) -> Tensor:
        """Its nonzero singular values, from the factors' QR decompositions."""
        _, Rl = torch.linalg.qr(self.left)
        _, Rr = torch.linalg.qr(self.right)
        return torch.linalg.svdvals(Rl @ Rr.T)

    def dense(self) -> Tensor:
        """The full matrix (only for small factors)."""
        return self.left @ self.right.T


def _head(W: Tensor, j: int, k: int, axis: int = 1) -> Tensor:
    return W.narrow(axis, j * k, k)


def qk_circuit(model: nn.Module, layer: int, head: int) -> Factored:
    """``W_Q_h W_K_g^T`` (width x width) for query head ``head``, g its key head. Without
    RoPE it is invariant under the query/key gauge; with RoPE, under its commutant."""
    S = as_sizes(model.sizes)
    k, group = S["head_width"], S["heads"] // S["kv_heads"]
    attn = model.layers[layer].attn
    return Factored(_head(attn.W_Q, head, k), _head(attn.W_K, head // group, k))


def ov_circuit(model: nn.Module, layer: int, head: int) -> Factored:
    """``W_V_g W_O_h`` (width x width): what head ``head`` writes for what it reads."""
    S = as_sizes(model.sizes)
    k, group = S["head_width"], S["heads"] // S["kv_heads"]
    attn = model.layers[layer].attn
    return Factored(_head(attn.W_V, head // group, k), _head(attn.W_O, head, k, axis=0).T)


def group_invariants(model: nn.Module, chart: gauge.Chart, group: str) -> dict[str, Tensor]:
    """The parameters ``group`` moves, at the chart point of the gauge-fixing steps up to and
    including the one that fixes ``group``: invariant under ``group`` (and the groups fixed
    before it)."""
    index = next((i for i, s in enumerate(chart.steps) if group in _step_groups(s)), None)
    if index is None:
        raise KeyError(
            f"no chart step for {group!r}; groups with one: "
            + ", ".join(g for s in chart.steps for g in _step_groups(s))
        )
    return _moved_by(chart, group, _chart_points(model, chart, index + 1)[index])


def all_group_invariants(model: nn.Module, chart: gauge.Chart) -> dict[str, dict[str, Tensor]]:
    """:func:`group_invariants` of every group the chart fixes, from one canonicalization."""
    points = _chart_points(model, chart, len(chart.steps))
    return {
        name: _moved_by(chart, name, points[i])
        for i, step in enumerate(chart.steps)
        for name in _step_groups(step)
    }


def _chart_points(model: nn.Module, chart: gauge.Chart, count: int) -> list[dict[str, Tensor]]:
    """The chart points of the first ``count`` step prefixes."""
    upto = replace(chart, steps=chart.steps[:count])
    params = {name: p.detach() for name, p in model.named_parameters()}
    points: list[dict[str, Tensor]] = []
    gauge.canonicalize(upto, params, as_sizes(model.sizes), points)
    return points


def _moved_by(chart: gauge.Chart, group: str, point: dict[str, Tensor]) -> dict[str, Tensor]:
    acts = chart.groups[group].acts
    moved = {n for act in acts for n in _targets(act.target, None, list(point))}
    return {name: point[name] for name in sorted(moved)}


def _step_groups(step: gauge.Step) -> tuple[str, ...]:
    return (step.group, *(name for name, _ in step.joint))


def invariants(model: nn.Module, chart: gauge.Chart | None = None) -> dict[str, object]:
    """Every invariant above, by name (the groups' with a ``chart``)."""
    S = as_sizes(model.sizes)
    out: dict[str, object] = {}
    for layer in range(S["layers"]):
        for head in range(S["heads"]):
            out[f"qk_circuit.{layer}.{head}"] = qk_circuit(model, layer, head)
            out[f"ov_circuit.{layer}.{head}"] = ov_circuit(model, layer, head)
    if chart is not None:
        for name, values in all_group_invariants(model, chart).items():
            out[f"group.{name}"] = values
    return out
