"""Custom groups acting numerically: the catalogue holds, false claims fail, and the orbit's
tangent directions are null directions of the Jacobian of the log-probabilities."""

from __future__ import annotations

import math

import pytest
import torch
from custom_catalogue import (
    _RESIDUAL_ROTATION,
    _VO_GAUGE_NO_BIAS,
    CUSTOM_CATALOGUE,
    HEAD_MIXING,
    TINY,
    load_custom,
)

from symcomp.ir.graph import build_graph
from symcomp.ir.interpreter import interpret
from symcomp.spec import parse_spec
from symcomp.symmetry.action import (
    apply_group,
    lie_algebra_basis,
    random_element,
    rope_rotations,
    units,
    vertical_vectors,
)
from symcomp.verify.generic import generic_point
from symcomp.verify.invariance import TOLERANCE, measure_invariance
from symcomp.verify.nullity import jacobian_of_logprobs, sample_inputs

torch.set_num_threads(1)


def spec_with(spec_file: str, groups: str, replace: tuple[str, str] | None = None):
    base = (TINY / spec_file).read_text(encoding="utf-8").rstrip("\n")
    if replace is not None:
        assert replace[0] in base
        base = base.replace(*replace)
    return parse_spec(base + "\nsymmetries:" + groups)


# --- the catalogue holds -------------------------------------------------------------------

CASES = [
    pytest.param(group_id, index, id=f"{group_id}-{index}")
    for group_id in CUSTOM_CATALOGUE
    for index in range(len(load_custom(group_id).symmetries))
]


@pytest.mark.parametrize(("group_id", "index"), CASES)
def test_catalogue_group_holds(group_id, index):
    spec = load_custom(group_id)
    result = measure_invariance(spec, spec.symmetries[index])
    assert result.holds, f"{group_id} {result.group}: max |d log p| = {result.max_error:.3g}"
    assert result.max_error <= TOLERANCE


# --- false claims are rejected ---------------------------------------------------------------

# B5 transcribed onto post-norm BERT (each reader behind the norm that feeds it; norm biases
# moved as the LayerNorm form needs): the stream is normalized after every add, so no rotation
# of it passes through the gains.
_RESIDUAL_ROTATION_POST_NORM = """
- name: residual_rotation
  group: O
  per: model
  size: width
  fixes: [ones]
  acts:
    embed.W_E: W_E Q
    embed.W_P: W_P Q
    embed.W_T: W_T Q
    embed_norm.bias: bias diag(gain)^-1 Q diag(gain)
    layers.*.attn.W_O: W_O Q
    layers.*.attn.b_O: b_O Q
    layers.*.mlp.W_down: W_down Q
    layers.*.mlp.b_down: b_down Q
    layers.*.attn.W_Q: diag(embed_norm.gain)^-1 Q^T diag(embed_norm.gain) W_Q
    layers.*.attn.W_K: diag(embed_norm.gain)^-1 Q^T diag(embed_norm.gain) W_K
    layers.*.attn.W_V: diag(embed_norm.gain)^-1 Q^T diag(embed_norm.gain) W_V
    layers.*.attn_norm.bias: bias diag(gain)^-1 Q diag(gain)
    layers.*.mlp.W_up: diag(attn_norm.gain)^-1 Q^T diag(attn_norm.gain) W_up
    layers.*.mlp_norm.bias: bias diag(gain)^-1 Q diag(gain)
    head.W_dense: diag(layers.0.mlp_norm.gain)^-1 Q^T diag(layers.0.mlp_norm.gain) W_dense
"""


def _false(spec) -> float:
    result = measure_invariance(spec, spec.symmetries[0])
    assert not result.holds
    return result.max_error


def test_mixing_attention_heads_is_not_a_symmetry():
    assert _false(spec_with("gpt2.yaml", HEAD_MIXING)) > 1e-4


def test_residual_rotation_fails_on_post_norm_bert():
    assert _false(spec_with("bert.yaml", _RESIDUAL_ROTATION_POST_NORM)) > 1e-4


def test_residual_rotation_fails_with_tied_embeddings_and_final_gain():
    # the tied unembedding is W_E^T: the catalogue's B5 without its (now absent) W_U line
    groups = _RESIDUAL_ROTATION.replace(
        "    unembed.W_U: diag(final_norm.gain)^-1 Q^T diag(final_norm.gain) W_U\n", ""
    )
    spec = spec_with(
        "llama.yaml", groups, ("embeddings: {tied: false}", "embeddings: {tied: true}")
    )
    assert spec.architecture.embeddings.tied and spec.architecture.final_norm
    assert _false(spec) > 1e-4


# --- elements and Lie algebras -----------------------------------------------------------------


def test_random_elements_respect_restrictions():
    gen = torch.Generator().manual_seed(0)
    b5 = load_custom("B5_layernorm")
    Q = random_element(b5.symmetries[0], b5.architecture, gen)
    eye, ones = torch.eye(8, dtype=torch.float64), torch.ones(1, 8, dtype=torch.float64)
    assert torch.allclose(Q @ Q.T, eye, atol=1e-12)
    assert torch.allclose(ones @ Q, ones, atol=1e-12)

    a1 = load_custom("A1'")
    group, graph = a1.symmetries[0], build_graph(a1)
    A = random_element(group, a1.architecture, gen, graph)
    R = rope_rotations(a1.architecture, graph)
    assert R.shape == (6, 4, 4)
    assert torch.allclose(R @ A, A @ R, atol=1e-12)
    assert not torch.allclose(A, torch.eye(4, dtype=torch.float64))

    a2 = load_custom("A2_partial_rotary")
    t = random_element(a2.symmetries[0], a2.architecture, gen)
    R = rope_rotations(a2.architecture)
    assert torch.allclose(t @ R, t.expand(6, 1, 4), atol=1e-12)


@pytest.mark.parametrize(
    ("group_id", "dim", "count"),
    [
        ("A1", 16, 2),  # GL(k) per kv head, 1 layer x 2 heads
        ("A1'", 4, 2),  # RoPE commutant: one 2-dim block a I + b J per frequency
        ("A1'_gqa", 4, 2),
        ("A2_partial_rotary", 2, 2),  # the k - r non-rotated dims
        ("A5", 0, 1),
        ("B5", 28, 1),  # O(8)
        ("B5_layernorm", 21, 1),  # O(8) fixing 1: O(7)
        ("C1", 1, 12),
    ],
)
def test_lie_algebra_dimensions(group_id, dim, count):
    spec = load_custom(group_id)
    group = spec.symmetries[0]
    assert lie_algebra_basis(group, spec.architecture, build_graph(spec)).shape[0] == dim
    assert len(units(group, spec.architecture)) == count


# --- vertical vectors are null directions of the Jacobian ------------------------------------


def _llama_vo_gauge():
    return spec_with("llama.yaml", _VO_GAUGE_NO_BIAS)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: load_custom("A1'"), id="A1-llama"),
        pytest.param(_llama_vo_gauge, id="A3-llama"),
        pytest.param(lambda: load_custom("B5"), id="B5-llama"),
        pytest.param(lambda: load_custom("C1"), id="C1-opt"),
    ],
)
def test_vertical_vectors_are_null_directions(make):
    spec = make()
    group, graph = spec.symmetries[0], build_graph(spec)
    arch = spec.architecture
    params = generic_point(graph, 3)
    V = vertical_vectors(group, arch, graph, params)
    dim = lie_algebra_basis(group, arch, graph).shape[0]
    total = sum(p.numel() for p in params.values())
    assert V.shape == (total, dim * len(units(group, arch)))
    norms = V.norm(dim=0)
    assert bool((norms > 1e-6).all())
    assert torch.linalg.matrix_rank(V) == V.shape[1]  # at a generic point the action is free

    ids = sample_inputs(arch.vocab_size, arch.max_positions, 3, torch.Generator().manual_seed(1))
    J = jacobian_of_logprobs(lambda p, x: interpret(graph, p, x), params, ids)
    assert J.shape[1] == total
    ratio = (J @ V).norm(dim=0) / norms
    assert float(ratio.max()) < 1e-9

    # the tangent agrees with a finite difference of the action
    unit, X = units(group, arch)[0], lie_algebra_basis(group, arch, graph)[0]
    base = torch.eye(X.shape[-1], dtype=torch.float64) if X.ndim == 2 else torch.ones(1, X.numel())
    X = X if X.ndim == 2 else X[None, :]
    eps = 1e-6
    plus = apply_group(group, arch, params, {unit: base + eps * X})
    minus = apply_group(group, arch, params, {unit: base - eps * X})
    fd = torch.cat([(plus[n] - minus[n]).reshape(-1) for n in params]) / (2 * eps)
    assert torch.allclose(fd, V[:, 0], atol=1e-7)
    assert math.isclose(float(fd.norm()), float(V[:, 0].norm()), rel_tol=1e-6)
