"""Geodesic sharpness: the metrics proved exactly, the generated pair layout, and invariance.

The headline test moves a trained-looking tiny transformer along its orbit (random per-head GL(k)
gauges A1/A3 and random positive per-neuron rescalings of its ReLU MLP) and measures sharpness
before and after: geodesic sharpness (both metrics) does not change, plain sharpness does.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import sympy as sp
import torch
from symcomp_runtime import actions
from symcomp_runtime.ascent import checkpoints
from symcomp_runtime.sharpness import Geometry, geometry_for, lm_loss, model_sharpness, sharpness

from symcomp.codegen.emit import write_package
from symcomp.pipeline import compile_package
from symcomp.spec import load_spec
from symcomp.symmetry import geometry as symbolic

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    # torch's forward-mode AD loads its decompositions through torch.jit.script, which warns
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning"),
]

# GPT-2-shaped (full GL(k) pairs: learned positions) with a ReLU MLP (per-neuron scalings)
SPEC = """\
name: tiny-relu-gpt
architecture:
  kind: causal_lm
  vocab_size: 7
  max_positions: 5
  width: 6
  layers: 1
  block: pre_norm
  norm: {type: layernorm, eps: 0.1}
  attention: {heads: 2, bias: true}
  positions: {type: learned}
  mlp: {hidden: 5, activation: relu, bias: true}
  embeddings: {tied: true}
"""


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    root = tmp_path_factory.mktemp("sharpness")
    path = root / "spec.yaml"
    path.write_text(SPEC)
    write_package(compile_package(load_spec(path), SPEC), root / "relu_gpt")
    sys.path.insert(0, str(root))
    try:
        import relu_gpt

        yield relu_gpt
    finally:
        sys.path.remove(str(root))
        for name in [m for m in sys.modules if m == "relu_gpt" or m.startswith("relu_gpt.")]:
            del sys.modules[name]


def _model(package):
    torch.manual_seed(0)
    model = package.Model(dtype=torch.float64)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, dtype=torch.float64) * 0.7)
    return model


def _tokens(package) -> torch.Tensor:
    S = package.model.SIZES
    generator = torch.Generator().manual_seed(1)
    return torch.randint(0, S["vocab"], (6, S["positions"]), generator=generator)


def _move_along_orbit(package, model, group_names, seed: int, repeats: int = 4):
    """The same function: every unit of each group moved by a product of ``repeats`` random
    elements (each near the identity) and a scale ``4 I`` that moves it far."""
    gauge = actions
    S = gauge.as_sizes(model.sizes)
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    generator = torch.Generator().manual_seed(seed)
    for name in group_names:
        group = package.GROUPS[name]
        for unit in gauge.units(group, S):
            for _ in range(repeats):
                element = gauge.random_element(group, S, package.groups.ROPE, generator)
                if group.kind == "scaling":
                    element = element.abs()  # a ReLU commutes with positive scalings only
                params = gauge.apply(group, params, unit, element, S)
            params = gauge.apply(group, params, unit, 4 * gauge.identity(group, S), S)
    moved = package.Model(dtype=torch.float64)
    with torch.no_grad():
        for n, p in moved.named_parameters():
            p.copy_(params[n])
    return moved


# --- the symbolic stage's proofs ---------------------------------------------------------------


@pytest.mark.parametrize("metric", ["inv", "mix"])
def test_pair_metric_closed_forms_are_exact(metric):
    proof = symbolic.prove_pair_metric(metric)
    assert proof.isometry and proof.projection and proof.gradient and proof.christoffel


def test_a_wrong_christoffel_symbol_or_projection_is_caught(monkeypatch):
    right, right_projection = symbolic.pair_christoffel, symbolic.pair_projection

    def dropped_term(metric, G, H, x_G, x_H):  # the inv form without its second term
        g_part, h_part = right(metric, G, H, x_G, x_H)
        return g_part - G * (G.T * G).inv() * x_G.T * x_G, h_part

    monkeypatch.setattr(symbolic, "pair_christoffel", dropped_term)
    assert not symbolic.prove_pair_metric("inv").christoffel

    def euclidean_projection(metric, G, H, x_G, x_H):  # the mix form, wrong for inv
        return right_projection("mix", G, H, x_G, x_H)

    monkeypatch.setattr(symbolic, "pair_projection", euclidean_projection)
    assert not symbolic.prove_pair_metric("inv").projection


def test_the_elementwise_christoffel_symbol_is_derived():
    w, xi = sp.symbols("w xi", nonzero=True)
    assert sp.simplify(symbolic.elementwise_christoffel() + xi**2 / w) == 0


# --- the runtime metric against the generated actions ------------------------------------------


def test_pair_indices_read_the_factors_the_group_actions_move(package):
    """The stacks cover one qk and one vo pair per head, no entry twice, and the generated A1
    action moves each (G, H) it reads while keeping G Hᵀ."""
    model = _model(package)
    geometry = package.geometry
    theta = geometry.flat_parameters(model)
    blocks = geometry.pair_indices(model)
    assert sorted(geometry.PAIRS) == ["qk_gauge", "vo_gauge"]
    moved = geometry.flat_parameters(_move_along_orbit(package, model, ["qk_gauge"], seed=3))
    S = actions.as_sizes(model.sizes)
    changed = 0
    for index_G, index_H in blocks:
        G, H = theta[index_G], theta[index_H]
        G2, H2 = moved[index_G], moved[index_H]
        assert torch.allclose(G2 @ H2.mT, G @ H.mT, atol=1e-12)
        changed += int(not torch.allclose(G2, G))
    assert changed  # the qk pairs moved
    pairs = sum(index_G.shape[0] for index_G, _ in blocks)
    assert pairs == 2 * S["layers"] * S["heads"]  # one qk and one vo pair per head
    entries = sum(i.numel() + j.numel() for i, j in blocks)
    assert entries == len(torch.cat([i.reshape(-1) for b in blocks for i in b]).unique())


@pytest.mark.parametrize("metric", ["inv", "mix"])
def test_projection_removes_the_pairs_vertical_directions_and_keeps_first_order_loss(
    package, metric
):
    model = _model(package)
    loss = lm_loss(model, _tokens(package))
    geo = package.geometry
    theta = geo.flat_parameters(model).requires_grad_(True)
    (egrad,) = torch.autograd.grad(loss(geo.unflatten(model, theta)), theta)
    geometry = geo.geometry(model, metric)
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(theta.shape, generator=generator, dtype=torch.float64)
    h = geometry.project(x)
    removed = x - h
    omegas = [
        torch.randn(b.G.shape[0], b.G.shape[2], b.G.shape[2], generator=generator).double()
        for b in geometry.blocks
    ]
    vertical = geometry.vertical(omegas)
    assert abs(float(geometry.inner(h, vertical))) <= 1e-12 * float(
        geometry.norm(h) * geometry.norm(vertical)
    )
    assert torch.allclose(geometry.project(h), h, atol=1e-12)
    # what was removed is vertical: the loss does not change along it to first order
    assert float(removed.norm()) > 1e-3 * float(x.norm())
    assert abs(float(egrad @ removed)) <= 1e-10 * float(egrad.norm() * removed.norm())
    assert abs(float(egrad @ x)) > 1e-3 * float(egrad.norm() * x.norm())


def test_euclidean_pair_projection_is_the_least_squares_one(package):
    """The per-head Sylvester solve equals the dense least-squares projection against every
    vertical vector of the A1/A3 pairs, for a random vector and a loss gradient's neighbour."""
    model = _model(package)
    geometry = package.geometry.geometry(model, "euclidean")
    columns = []
    for b_index, block in enumerate(geometry.blocks):
        units, _, k = block.G.shape
        for flat in range(units * k * k):
            omegas = [torch.zeros(b.G.shape[0], k, k, dtype=torch.float64) for b in geometry.blocks]
            omegas[b_index].view(-1)[flat] = 1.0
            columns.append(geometry.vertical(omegas))
    V = torch.stack(columns, 1)
    x = torch.randn(geometry.dim, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    dense = x - V @ torch.linalg.lstsq(V, x).solution
    assert float((geometry.project(x) - dense).norm()) <= 1e-10 * float(x.norm())
    assert float((x - dense).norm()) > 1e-2 * float(x.norm())  # it removed something


# --- the ascent ----------------------------------------------------------------------------


def test_auto_pgd_checkpoints():
    assert checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]


def test_sharpness_of_a_quadratic_is_its_largest_curvature():
    """L = ½ θᵀ diag(c) θ at 0, Euclidean ball ρ: the maximum is ½ ρ² max(c)."""
    c = torch.tensor([1.0, 4.0, 2.0, 0.5], dtype=torch.float64)
    theta = torch.tensor([1e-3, 2e-3, -1e-3, 5e-4], dtype=torch.float64)  # a gradient to start

    def loss(t):
        return 0.5 * (c * t * t).sum()

    out = sharpness(loss, theta, measure="plain", rho=0.5, steps=40)
    best = max(loss(theta + 0.5 * e) for e in torch.eye(4, dtype=torch.float64)) - loss(theta)
    assert abs(out.value - float(best)) <= 1e-3 * float(best)


def test_unknown_measure_or_metric_is_refused():
    theta = torch.ones(3, dtype=torch.float64)
    with pytest.raises(ValueError, match="accepted: plain, adaptive, geodesic"):
        geometry_for(theta, (), "sharp")
    with pytest.raises(ValueError, match="accepted: inv, mix"):
        geometry_for(theta, (), "geodesic", "euclidean")
    with pytest.raises(ValueError, match="accepted"):
        Geometry(theta, (), "cosine")


# --- invariance: the one test that shows both --------------------------------------------------


def test_geodesic_sharpness_is_invariant_along_the_orbit_and_plain_sharpness_is_not(package):
    model = _model(package)
    moved = _move_along_orbit(
        package, model, ["qk_gauge", "vo_gauge", *_neuron_scalings(package)], seed=7
    )
    tokens = _tokens(package)
    assert torch.allclose(moved.log_probs(tokens), model.log_probs(tokens), atol=1e-10)

    def measure(m, kind, metric="inv"):
        return model_sharpness(
            m, lm_loss(m, tokens), measure=kind, metric=metric, rho=0.05, steps=8
        )

    for metric in ("inv", "mix"):
        before, after = measure(model, "geodesic", metric), measure(moved, "geodesic", metric)
        assert before.value > 1e-4
        assert after.value == pytest.approx(before.value, rel=1e-7)
    plain_before, plain_after = measure(model, "plain"), measure(moved, "plain")
    assert abs(plain_after.value - plain_before.value) > 0.05 * plain_before.value
    # adaptive sharpness follows the neuron rescalings but not the per-head gauges
    adaptive_before, adaptive_after = measure(model, "adaptive"), measure(moved, "adaptive")
    assert abs(adaptive_after.value - adaptive_before.value) > 0.05 * adaptive_before.value
    rescaled = _move_along_orbit(package, model, _neuron_scalings(package), seed=8)
    assert measure(rescaled, "adaptive").value == pytest.approx(adaptive_before.value, rel=1e-7)


def _neuron_scalings(package) -> list[str]:
    groups = package.GROUPS.items()
    names = [
        n for n, g in groups if g.kind == "scaling" and any("mlp.W_up" in a.target for a in g.acts)
    ]
    assert names, "the ReLU MLP has per-neuron scalings"
    return names


def test_model_sharpness_refuses_a_foreign_model():
    with pytest.raises(TypeError, match="does not come from a package symcomp compiled"):
        model_sharpness(torch.nn.Linear(2, 2), lambda params: params["weight"].sum())


def test_pairs_are_the_full_gl_gauges_found_from_the_action_forms():
    """GPT-2: both per-head gauges; Llama: its query-key gauge commutes with RoPE (a subgroup),
    so only the value-output gauge is a pair; no translation, scaling or rotation is."""
    from generated.gpt2_small import geometry as gpt2
    from generated.llama_2_7b import geometry as llama

    assert sorted(gpt2.PAIRS) == ["qk_gauge", "vo_gauge"]
    assert gpt2.PAIRS["vo_gauge"]["layers.*.attn.W_O"] == ("H", True)  # B^-1 W_O: H = W_Oᵀ
    assert sorted(llama.PAIRS) == ["vo_gauge"]
    assert "qk_gauge" in Path(llama.__file__).read_text().split('"""')[1]  # named as not quotiented


def test_zero_biases_are_held_with_a_warning_and_the_geodesic_value_stays_finite(package):
    from symcomp_runtime.sharpness import DegeneratePointWarning

    model = _model(package)
    with torch.no_grad():  # a fresh transformers model: every bias zero, b_Q and b_K included
        for name, p in model.named_parameters():
            if name.endswith(("b_Q", "b_K", "b_V", "b_O", "b_up", "b_down", ".bias")):
                p.zero_()
    tokens = _tokens(package)
    with pytest.warns(DegeneratePointWarning, match=r"exactly zero \(in .*attn\.b_O"):
        out = model_sharpness(model, lm_loss(model, tokens), rho=0.05, steps=4)
    # b_Q and b_K sit in a GL(k) pair, not in the elementwise ball: they move (and were once
    # divided by, which made every gradient nan and the value silently 0.0)
    assert math.isfinite(out.value) and out.value > 1e-6


def test_a_loss_that_is_not_finite_is_refused():
    theta = torch.ones(3, dtype=torch.float64)
    with pytest.raises(ValueError, match="not finite"):
        sharpness(lambda v: (v / 0).sum(), theta, measure="adaptive", steps=2)
