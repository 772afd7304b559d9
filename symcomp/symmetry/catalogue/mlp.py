"""C1-C3. The MLP, per layer and per hidden neuron.

A neuron ``i`` reaches the stream as ``act(x W_up[:, i] + b_up[i]) W_down[i, :]``:

- C1 ``mlp_scaling`` (ReLU): ``relu(a z) = a relu(z)`` for ``a > 0``, so ``a`` on the neuron's
  column of ``W_up`` (and ``b_up``) against ``1 / a`` on its row of ``W_down``; an activation
  positively homogeneous of degree n (``relu2 = relu^2``: n = 2) takes ``a^-n`` on ``W_down``;
- C2 ``mlp_scaling`` (gated): ``act(x W_gate) * (x W_up)`` is linear in the up branch, so any
  ``a != 0`` passes through (SwiGLU, GeGLU). GELU and SiLU without a gate have no such scale;
- C3 ``neuron_permutation``: neurons are summed into the stream, so relabelling them changes
  nothing.

In a mixture of experts every expert is such an MLP with its own neurons: C1-C3 hold per expert
(one copy per expert, ``units`` = experts x layers). The router adds

- C4 ``router_shift``: the routing weights depend on the router logits only through their
  differences (a softmax, then the top k of it, renormalized): adding one vector ``t`` to every
  expert's column of ``W_router`` adds ``x t`` to every logit of a token and changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace

import sympy

from symcomp.ir.ops import HOMOGENEITY
from symcomp.symmetry.catalogue.base import GroupInfo, L, Worked, _custom, _pattern, _short, d, f
from symcomp.symmetry.catalogue.facts import Facts


def _experts(facts: Facts) -> int:
    """The number of experts of each layer's mixture; 0 for a dense MLP."""
    experts = facts.graph.arch.mlp.experts
    return experts.count if experts is not None else 0


def _merged(infos: list[GroupInfo]) -> Iterator[GroupInfo]:
    """One line for the copies of a group in a mixture's experts (units: experts x layers)."""
    if len(infos) > 1:
        yield replace(
            infos[0],
            acts_on=f"{infos[0].acts_on}, in each of the {len(infos)} experts",
            per="layer, expert",
            units=sympy.Integer(len(infos)) * L,
            instances=tuple(i.group for i in infos[1:]),
        )
    else:
        yield from infos


def _expert_tag(param: str) -> str:
    """``_expert3`` for a parameter of expert 3 of a mixture, else empty."""
    match = re.search(r"\.experts\.(\d+)\.", param)
    return f"_expert{match.group(1)}" if match else ""


def mlp_scaling(facts: Facts) -> Iterator[GroupInfo]:
    """A positively homogeneous activation (ReLU, degree 1; squared ReLU, degree 2: the degree
    is read from :data:`HOMOGENEITY`) or the linear branch of a gate passes a per-neuron scale
    through to W_down (in each expert of a mixture)."""
    yield from _merged(list(_mlp_scalings(facts)))


def _mlp_scalings(facts: Facts) -> Iterator[GroupInfo]:
    for op in facts.graph.ops:
        if not op.name.startswith("L0."):
            continue
        if op.kind == "activation" and op.attr("fn") in HOMOGENEITY:
            branch, positive = facts.producer[op.input("x").node], True
            degree = HOMOGENEITY[op.attr("fn")]
        elif op.kind == "gate":
            branch, positive, degree = facts.producer[op.input("b").node], False, 1
        else:
            continue
        down = next(c for c in facts.readers(op.output) if c.kind == "linear")
        W_up, b_up = facts.param(branch, "W") or "", facts.param(branch, "b")
        acts = {
            _pattern(W_up): f"{_short(W_up)} diag(s)",
            _pattern(facts.param(down, "W") or ""): (
                "diag(s)^-1 W_down" if degree == 1 else f"diag(s^-{degree}) W_down"
            ),
        }
        if b_up:
            acts[_pattern(b_up)] = f"{_short(b_up)} diag(s)"
        name = "mlp_scaling" + _expert_tag(W_up)
        yield GroupInfo(
            "mlp_scaling",
            "C1" if positive else "C2",
            _custom(name, "scaling", "layer", "hidden", acts, positive=positive),
            "W_up (+ b_up), W_down",
            "layer",
            f,
            L,
            "W_up[:, i] W_down[i, :] per neuron",
            "one entry per neuron of W_down fixed to +-1 (sign kept in a buffer)",
            "closed form per neuron (balancing |W_up[:, i]| = |W_down[i, :]|)",
        )


def neuron_permutation(facts: Facts) -> Iterator[GroupInfo]:
    """MLP neurons permute with their rows of W_down (C3, discrete), in each expert."""
    E = _experts(facts)
    prefixes = [f"mlp.experts.{e}." for e in range(E)] if E else ["mlp."]
    yield from _merged([_neuron_permutation(facts, p) for p in prefixes])


def _neuron_permutation(facts: Facts, prefix: str) -> GroupInfo:
    acts = {}
    for name in ("W_up", "b_up", "W_gate", "b_gate"):
        if f"layers.0.{prefix}{name}" in facts.graph.param:
            acts[f"layers.*.{prefix}{name}"] = f"{name} P"
    acts[f"layers.*.{prefix}W_down"] = "P^T W_down"
    name = "neuron_permutation" + _expert_tag(f".{prefix}")
    return GroupInfo(
        "neuron_permutation",
        "C3",
        _custom(name, "permutation", "layer", "hidden", acts),
        "W_up, W_gate, W_down and biases",
        "layer",
        sympy.Integer(0),
        L,
        "the set of neurons",
        "neurons sorted",
        "none (discrete)",
    )


def router_shift(facts: Facts) -> Iterator[GroupInfo]:
    """The routing weights read the router logits only through their differences: one vector
    added to every expert's column of W_router changes nothing (C4)."""
    for op in facts.graph.ops:
        if op.kind != "route" or not op.name.startswith("L0."):
            continue
        W = facts.param(op, "W") or ""
        experts = facts.graph.param[W].shape[1]
        acts = {_pattern(W): f"{_short(W)} + t^T ones({experts})"}
        yield GroupInfo(
            "router_shift",
            "C4",
            _custom("router_shift", "translation", "layer", "width", acts),
            _pattern(W),
            "layer",
            d,
            L,
            "W_router (I - 1 1^T / E): the differences of the experts' columns",
            "the columns of W_router sum to zero",
            "closed form: subtract the mean column",
        )


WORKED = (
    # ReLU: a positive scale per neuron (C1)
    Worked(mlp_scaling, "opt-125m", "L*f", 36_864),
    # SwiGLU: any non-zero scale per neuron on the linear branch (C2)
    Worked(mlp_scaling, "llama-2-7b", "L*f", 352_256),
    # GELU without a gate: no continuous scale, only the discrete permutations
    Worked(mlp_scaling, "gpt2-small", "0", 0),
    Worked(neuron_permutation, "gpt2-small", "0", 0),
    # a mixture of 8 SwiGLU experts: C2 in each expert; C4, one width-vector per router
    Worked(mlp_scaling, "moe/mixtral-8x7b", "8*L*f", 3_670_016),
    Worked(router_shift, "moe/mixtral-8x7b", "L*d", 131_072),
)
