"""Numerical check that a custom group leaves a model's function unchanged.

:func:`measure_invariance` draws a generic point, random elements of the group (one per unit) and
random token sequences, and compares the float64 log-probabilities before and after the action.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from symcomp.ir.graph import Graph, build_graph
from symcomp.ir.interpreter import interpret
from symcomp.spec.model import CustomGroup, Spec
from symcomp.symmetry.action import apply_group, random_elements
from symcomp.verify.generic import generic_point
from symcomp.verify.nullity import sample_inputs

TOLERANCE = 1e-10


@dataclass(frozen=True)
class InvarianceResult:
    """``max_error``: the largest |change of a log-probability| over the trials."""

    group: str
    max_error: float
    tolerance: float = TOLERANCE

    @property
    def holds(self) -> bool:
        return self.max_error <= self.tolerance


def find_group(spec: Spec, name: str) -> CustomGroup:
    """The custom group called ``name`` in ``spec.symmetries``."""
    if not isinstance(spec.symmetries, str):
        for item in spec.symmetries:
            if isinstance(item, CustomGroup) and item.name == name:
                return item
    raise KeyError(f"no custom group {name!r} in the spec")


def measure_invariance(
    spec_or_graph: Spec | Graph,
    group: CustomGroup | str,
    *,
    seed: int = 0,
    trials: int = 3,
    sequences: int = 4,
) -> InvarianceResult:
    """Max |log p(after) - log p(before)| over ``trials`` random elements, each on ``sequences``
    random full-length sequences, at a generic point drawn from ``seed``."""
    graph = spec_or_graph if isinstance(spec_or_graph, Graph) else build_graph(spec_or_graph)
    if isinstance(group, str):
        if not isinstance(spec_or_graph, Spec):
            raise TypeError("a group given by name needs the spec, not the graph")
        group = find_group(spec_or_graph, group)
    arch = graph.arch
    params = generic_point(graph, seed)
    generator = torch.Generator().manual_seed(seed + 7)
    worst = 0.0
    for _ in range(trials):
        ids = sample_inputs(arch.vocab_size, arch.max_positions, sequences, generator)
        before = interpret(graph, params, ids)
        elements = random_elements(group, arch, generator, graph)
        after = interpret(graph, apply_group(group, arch, params, elements), ids)
        worst = max(worst, float((after - before).abs().max()))
    return InvarianceResult(group.name, worst)
