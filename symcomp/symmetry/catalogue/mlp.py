"""C1-C3. The MLP, per layer and per hidden neuron.

A neuron ``i`` reaches the stream as ``act(x W_up[:, i] + b_up[i]) W_down[i, :]``:

- C1 ``mlp_scaling`` (ReLU): ``relu(a z) = a relu(z)`` for ``a > 0``, so ``a`` on the neuron's
  column of ``W_up`` (and ``b_up``) against ``1 / a`` on its row of ``W_down``; an activation
  positively homogeneous of degree n (``relu2 = relu^2``: n = 2) takes ``a^-n`` on ``W_down``;
- C2 ``mlp_scaling`` (gated): ``act(x W_gate) * (x W_up)`` is linear in the up branch, so any
  ``a != 0`` passes through (SwiGLU, GeGLU). GELU and SiLU without a gate have no such scale;
- C3 ``neuron_permutation``: neurons are summed into the stream, so relabelling them changes
  nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

import sympy

from symcomp.ir.ops import HOMOGENEITY
from symcomp.symmetry.catalogue.base import GroupInfo, L, Worked, _custom, _pattern, _short, f
from symcomp.symmetry.catalogue.facts import Facts


def mlp_scaling(facts: Facts) -> Iterator[GroupInfo]:
    """A positively homogeneous activation (ReLU, degree 1; squared ReLU, degree 2: the degree
    is read from :data:`HOMOGENEITY`) or the linear branch of a gate passes a per-neuron scale
    through to W_down."""
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
        yield GroupInfo(
            "mlp_scaling",
            "C1" if positive else "C2",
            _custom("mlp_scaling", "scaling", "layer", "hidden", acts, positive=positive),
            "W_up (+ b_up), W_down",
            "layer",
            f,
            L,
            "W_up[:, i] W_down[i, :] per neuron",
            "one entry per neuron of W_down fixed to +-1 (sign kept in a buffer)",
            "closed form per neuron (balancing |W_up[:, i]| = |W_down[i, :]|)",
        )


def neuron_permutation(facts: Facts) -> Iterator[GroupInfo]:
    """MLP neurons permute with their rows of W_down (C3, discrete)."""
    acts = {}
    for name in ("W_up", "b_up", "W_gate", "b_gate"):
        if f"layers.0.mlp.{name}" in facts.graph.param:
            acts[f"layers.*.mlp.{name}"] = f"{name} P"
    acts["layers.*.mlp.W_down"] = "P^T W_down"
    yield GroupInfo(
        "neuron_permutation",
        "C3",
        _custom("neuron_permutation", "permutation", "layer", "hidden", acts),
        "W_up, W_gate, W_down and biases",
        "layer",
        sympy.Integer(0),
        L,
        "the set of neurons",
        "neurons sorted",
        "none (discrete)",
    )


WORKED = (
    # ReLU: a positive scale per neuron (C1)
    Worked(mlp_scaling, "opt-125m", "L*f", 36_864),
    # SwiGLU: any non-zero scale per neuron on the linear branch (C2)
    Worked(mlp_scaling, "llama-2-7b", "L*f", 352_256),
    # GELU without a gate: no continuous scale, only the discrete permutations
    Worked(mlp_scaling, "gpt2-small", "0", 0),
    Worked(neuron_permutation, "gpt2-small", "0", 0),
)
