"""Generic points: random parameters with no accidental structure.

A count of symmetries is a statement about a generic point. Random draws are generic almost
surely, except for one thing a finite input set can show: a ReLU neuron whose pre-activation has
the same sign on every input the model sees acts linearly (or not at all) there, which adds null
directions of that point only. :func:`generic_point` centres each ReLU neuron's bias on the
median of its pre-activation over a probe sample (plus noise, to stay generic), and redraws until
every ReLU neuron is active on some, but not all, of the probe's positions.

A mixture of experts has the same hazard: an expert that no position of the sample selects is
never read there (all of its parameters are null directions of that point only), and one that
every position selects has a router that sees no choice. The draw is redrawn until every expert
is selected on some, but not all, of the probe's positions (:func:`experts_mixed`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from symcomp.errors import VerificationError
from symcomp.ir.graph import Graph
from symcomp.ir.interpreter import evaluate
from symcomp.ir.ops import HOMOGENEITY
from symcomp.spec.params import parameter_shapes
from symcomp.verify.nullity import randomize_, sample_inputs


class NotGenericError(VerificationError):
    """No draw gave a generic point (every ReLU neuron sometimes on, sometimes off; every
    expert sometimes selected, sometimes not)."""


def relu_inputs(graph: Graph) -> list[str]:
    """The values that go through a ReLU or squared ReLU (the positively homogeneous ops)."""
    slots = {"activation": "x", "gate": "a"}
    return [
        op.input(slots[op.kind]).node
        for op in graph.ops
        if op.kind in slots and op.attr("fn") in HOMOGENEITY
    ]


def relu_neurons_mixed(
    graph: Graph, params: Mapping[str, Tensor], probe: Tensor, low: float = 0.05
) -> bool:
    """Whether every ReLU neuron is active on at least ``low`` and at most ``1 - low`` of the
    probe's positions."""
    watched = relu_inputs(graph)
    if not watched:
        return True
    env = evaluate(graph, params, probe)
    for name in watched:
        pre = env[name]
        active = (pre > 0).double().reshape(-1, pre.shape[-1]).mean(0)
        if bool(((active < low) | (active > 1 - low)).any()):
            return False
    return True


def experts_mixed(
    graph: Graph,
    params: Mapping[str, Tensor],
    probe: Tensor,
    low: float = 0.05,
    env: Mapping[str, Tensor] | None = None,
) -> bool:
    """Whether every expert of every mixture is selected on at least ``low`` and at most
    ``1 - low`` of the probe's positions."""
    routes = [op.output for op in graph.ops if op.kind == "route"]
    if not routes:
        return True
    env = env if env is not None else evaluate(graph, params, probe)
    for name in routes:
        selected = (env[name] > 0).double().reshape(-1, env[name].shape[-1]).mean(0)
        if bool(((selected < low) | (selected > 1 - low)).any()):
            return False
    return True


def centre_relu_biases_(
    graph: Graph, params: dict[str, Tensor], probe: Tensor, generator: torch.Generator
) -> None:
    """Shift the bias feeding each ReLU so that its neurons change sign on the probe."""
    producers = {op.output: op for op in graph.ops}
    env = evaluate(graph, params, probe)
    for name in relu_inputs(graph):
        bias = producers[name].input("b")
        if producers[name].kind != "linear" or bias is None:
            continue  # no bias to move: only redrawing can help
        pre = env[name].reshape(-1, env[name].shape[-1])
        spread = pre.std(0)
        jitter = 0.2 * spread * torch.randn(spread.shape, generator=generator, dtype=spread.dtype)
        params[bias.node] = params[bias.node] - pre.median(0).values + jitter


def generic_point(graph: Graph, seed: int, *, attempts: int = 100) -> dict[str, Tensor]:
    """Random float64 parameters for ``graph`` (every gain, bias and weight drawn), made
    generic in the sense above."""
    shapes = parameter_shapes(graph.arch)
    probe_gen = torch.Generator().manual_seed(12345)
    probe = sample_inputs(graph.arch.vocab_size, graph.arch.max_positions, 256, probe_gen)
    for attempt in range(attempts):
        generator = torch.Generator().manual_seed(seed + 1000 * attempt)
        params = {n: torch.zeros(s, dtype=torch.float64) for n, s in shapes.items()}
        randomize_(params, generator)
        centre_relu_biases_(graph, params, probe, generator)
        if relu_neurons_mixed(graph, params, probe) and experts_mixed(graph, params, probe):
            return params
    raise NotGenericError(f"no generic point in {attempts} draws from seed {seed}")
