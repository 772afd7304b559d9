"""Symbolic proofs (SymPy, minimal instances) that the catalogue groups leave the model unchanged,
and refutations of false claims."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from custom_catalogue import TINY, load_custom

from symcomp.ir.graph import build_graph
from symcomp.spec import CustomGroup
from symcomp.spec.model import Spec
from symcomp.verify.symbolic import minimal_instance, prove_invariance

ROOT = Path(__file__).resolve().parent.parent
ATTN_READERS = {"L0.attn.q", "L0.attn.k", "L0.attn.v"}

# id -> the values where the change made by each of its groups must be seen to vanish
PROVEN: dict[str, set[str]] = {
    "A1": {"L0.attn.scores"},
    "A1'": {"L0.attn.scores"},
    "A1'_mqa": {"L0.attn.scores"},
    "A2": {"L0.attn.probs"},
    "A2_partial_rotary": {"L0.attn.probs"},
    "A3": {"L0.attn_out"},
    "A4": {"L0.attn_out"},
    "A5": {"L0.attn_out"},
    "B1": ATTN_READERS,
    "B1_rms": set(),  # three groups: each settles at its own norm's readers
    "B2": ATTN_READERS,
    "B3": set(),
    "B4": {"final_norm.out"},
    "B5": ATTN_READERS | {"L0.mlp.up", "L0.mlp.gate", "logits"},
    "B6": {"logprobs"},
    "B7": {"logprobs"},
    "C1": {"L0.mlp_out"},
    "C1_per_layer": {"L0.mlp_out"},
    "C2": {"L0.mlp_out"},
    "C3": {"L0.mlp_out"},
}


@pytest.mark.parametrize("group_id", list(PROVEN))
def test_catalogue_group_is_proven(group_id):
    spec = load_custom(group_id)
    for group in spec.symmetries:
        assert isinstance(group, CustomGroup)
        proof = prove_invariance(spec, group, max_seconds=30)
        assert proof.holds, (group_id, proof)
        assert proof.failed_at is None
        assert proof.settled, (group_id, proof)
        assert PROVEN[group_id] <= set(proof.settled), (group_id, proof.settled)


def test_the_minimal_instance_keeps_the_structure():
    qwen = minimal_instance(load_custom("A1'_gqa"))
    assert (qwen.attention.heads, qwen.attention.kv_heads, qwen.attention.head_width) == (4, 2, 2)
    pythia = minimal_instance(load_custom("A2_partial_rotary"))
    assert pythia.width == 3 and build_graph(pythia).sizes.rotary_width == 2
    assert pythia.attention.head_width == 3  # 2 rotated dims, 1 passing through
    opt = minimal_instance(load_custom("C1"))
    assert opt.positions.offset == 2 and opt.vocab_size == 3 and opt.max_positions == 2
    assert minimal_instance(load_custom("B5")).width == 2


def _rotation(acts: dict[str, str], fixes: bool) -> CustomGroup:
    return CustomGroup(
        name="residual_rotation",
        group="O",
        per="model",
        size="width",
        fixes=["ones"] if fixes else [],
        acts=acts,
    )


def test_mixing_two_heads_is_not_a_symmetry():
    group = CustomGroup(
        name="mix_heads",
        group="GL",
        per="layer",
        size="heads * head_width",
        acts={"layers.*.attn.W_Q": "W_Q A", "layers.*.attn.W_K": "W_K A^-T"},
    )
    proof = prove_invariance(load_custom("A1"), group)
    assert not proof.holds
    assert proof.failed_at == "L0.attn.scores"


def test_residual_rotation_of_a_post_norm_model_is_not_a_symmetry():
    spec = load_custom("A1")
    bert = Spec.model_validate(
        {**spec.model_dump(), "architecture": _bert_architecture(), "symmetries": "auto"}
    )
    acts = {
        "embed.W_E": "W_E Q",
        "embed.W_P": "W_P Q",
        "embed.W_T": "W_T Q",
        "layers.*.attn.W_O": "W_O Q",
        "layers.*.attn.b_O": "b_O Q",
        "layers.*.mlp.W_down": "W_down Q",
        "layers.*.mlp.b_down": "b_down Q",
        "layers.*.attn.W_Q": "Q^T W_Q",
        "layers.*.attn.W_K": "Q^T W_K",
        "layers.*.attn.W_V": "Q^T W_V",
        "layers.*.mlp.W_up": "Q^T W_up",
        "head.W_dense": "Q^T W_dense",
    }
    proof = prove_invariance(bert, _rotation(acts, fixes=True))
    assert not proof.holds and proof.failed_at is not None


def _bert_architecture() -> dict:
    return yaml.safe_load((TINY / "bert.yaml").read_text())["architecture"]


def test_residual_rotation_of_a_tied_model_is_not_a_symmetry():
    spec = load_custom("B5")
    arch = spec.architecture
    tied = arch.model_copy(update={"embeddings": arch.embeddings.model_copy(update={"tied": True})})
    group = spec.symmetries[0]
    assert isinstance(group, CustomGroup)
    acts = {k: v for k, v in group.acts.items() if k != "unembed.W_U"}
    proof = prove_invariance(tied, _rotation(acts, fixes=False))
    assert not proof.holds
    assert proof.failed_at is not None


def test_a_negative_scaling_breaks_relu():
    # C1 without positive: true is refuted (s < 0 flips the ReLU), with it it is proven
    spec = load_custom("C1")
    group = spec.symmetries[0]
    assert isinstance(group, CustomGroup)
    proof = prove_invariance(spec, group.model_copy(update={"positive": False}))
    assert not proof.holds and proof.failed_at == "L0.mlp_out"


def _derived(spec_file: str, name: str) -> tuple[Spec, list[CustomGroup]]:
    from symcomp.spec.loader import load_spec
    from symcomp.symmetry.analysis import groups_of, measurement_instance

    spec = load_spec(ROOT / "specs" / spec_file)
    syms = groups_of(build_graph(measurement_instance(spec.architecture)))
    return spec, [gi.group for gi in syms.groups if gi.name == name]


def test_a_group_that_inverts_the_value_map_is_proven_where_that_map_is_square():
    """StableLM's value_bias_centering shifts b_V by t 1 W_O^-1 (W_O square at its sizes, 32
    heads of 64 in a width of 2048): the minimal instance keeps W_O square (one head as wide as
    the stream), W_O enters as L U, and the LayerNorm is seen to remove the shift along 1.
    Before, the proof died on a non-square inverse (verify exited 3)."""
    spec, (group,) = _derived("stablelm-2-1_6b.yaml", "value_bias_centering")
    square = minimal_instance(spec.architecture, group, square_values=True)
    assert square.width == square.attention.kv_heads * square.attention.head_width == 3
    assert build_graph(square).sizes.rotary_width == 2  # partial rotary kept: 2 of 3 dims
    proof = prove_invariance(spec, group, max_seconds=30)
    assert proof.holds and "L0.mlp_norm" in proof.settled, proof


@pytest.mark.parametrize("seed", range(3))
def test_the_concrete_check_does_not_round_through_float32(seed):
    """The interpreter check ran on parameters rounded to float32: the moved ones rounded apart
    from the others by 1e-7, and a true invariance (a reader centering of StableLM's W_V) was
    refuted at seed 0."""
    spec, groups = _derived("stablelm-2-1_6b.yaml", "reader_centering")
    for group in groups:
        proof = prove_invariance(spec, group, seed=seed, max_seconds=30)
        assert proof.holds, (group.name, seed, proof)
