"""Generic points: every parameter drawn, and no ReLU neuron with one sign on every input."""

from __future__ import annotations

import torch

from symcomp.ir import build_graph
from symcomp.spec import load_spec, parameter_shapes
from symcomp.verify.generic import generic_point, relu_inputs, relu_neurons_mixed
from symcomp.verify.nullity import sample_inputs
from tests.conftest import SPECS


def test_generic_point_mixes_every_relu_neuron():
    graph = build_graph(load_spec(SPECS / "tiny" / "opt.yaml"))
    assert relu_inputs(graph) == ["L0.mlp.up"]
    probe = sample_inputs(11, 6, 512, torch.Generator().manual_seed(99))  # not the probe used
    for seed in range(3):
        params = generic_point(graph, seed)
        assert relu_neurons_mixed(graph, params, probe, low=0.01)


def test_generic_point_draws_every_parameter_away_from_special_values():
    graph = build_graph(load_spec(SPECS / "tiny" / "gemma.yaml"))
    params = generic_point(graph, 0)
    assert {n: tuple(p.shape) for n, p in params.items()} == parameter_shapes(graph.arch)
    for name, p in params.items():
        assert p.dtype == torch.float64
        assert bool((p != 0).all()), name
        assert bool((p != 1).all()), name
