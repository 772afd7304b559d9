"""The closed form of ``analyze`` (named groups, unread rows, overlaps) against the judge: the
Jacobian nullity of the transformers model of each family's tiny config."""

from __future__ import annotations

import pytest
import sympy

from symcomp.pipeline import analyze
from symcomp.spec import load_spec
from symcomp.symmetry.catalogue import (
    SIZE_SYMBOLS,
    qk_dimension,
    rope_pair_commutant_dims,
)
from tests.conftest import EXAMPLE_SPECS

try:
    import hf_tiny
    from custom_catalogue import load_custom
    from test_hf_nullity import measure
except ImportError:  # tests/ became a package
    from tests import hf_tiny
    from tests.custom_catalogue import load_custom
    from tests.test_hf_nullity import measure


@pytest.mark.parametrize("family", list(hf_tiny.FAMILIES))
def test_closed_form_equals_the_transformers_nullity(family):
    analysis = analyze(hf_tiny.tiny_spec(family), measured=False)
    measured = measure(family)
    assert measured.trustworthy
    assert analysis.redundant == measured.nullity
    assert analysis.redundant == sum(line.dimension for line in analysis.groups)
    assert analysis.reduced_parameters == analysis.parameters - analysis.redundant


def test_design_note_worked_counts_by_closed_form():
    gpt2 = hf_tiny.tiny_spec("gpt2", tied=False)
    llama = hf_tiny.tiny_spec("llama")
    llama_tied = hf_tiny.tiny_spec("llama", tied=True)
    assert [analyze(s, measured=False).redundant for s in (gpt2, llama, llama_tied)] == [
        239,
        112,
        68,
    ]


def test_rope_commutant_is_solved_not_assumed():
    # each rotated pair keeps a complex scalar (2 dims); pairs never mix with anything else
    assert rope_pair_commutant_dims() == (2, 0, 0)
    k, r = SIZE_SYMBOLS["head_width"], SIZE_SYMBOLS["rotary_width"]
    assert sympy.expand(qk_dimension(True) - (r + (k - r) ** 2)) == 0
    assert qk_dimension(False) == k**2


@pytest.mark.parametrize("path", EXAMPLE_SPECS, ids=lambda p: p.stem)
def test_full_size_analysis_needs_no_full_size_matrix(path):
    analysis = analyze(load_spec(path), measured=False)
    assert 0 < analysis.redundant < analysis.parameters
    formula = sympy.sympify(analysis.formula, locals={str(s): s for s in SIZE_SYMBOLS.values()})
    assert formula.free_symbols  # a closed form in the sizes, not a number


def test_each_group_carries_its_action_in_the_spec_language():
    analysis = analyze(hf_tiny.tiny_spec("llama"), measured=False)
    actions = {line.name: dict(line.action) for line in analysis.groups}
    assert actions["qk_gauge"]["layers.*.attn.W_K"] == "W_K A^-T"
    assert actions["residual_rotation"]["embed.W_E"] == "W_E Q"
    assert "Q^T" in actions["residual_rotation"]["layers.*.attn.W_Q"]


# catalogue id -> the names of the derived groups that the custom re-declaration spells out
SAME_AS = {
    "A1": ["qk_gauge"],
    "A1'": ["qk_gauge"],
    "A1'_gqa": ["qk_gauge"],
    "A2_partial_rotary": ["key_bias_shift"],
    "A3_gqa": ["vo_gauge"],
    "A4": ["value_bias_fold"],
    "B5": ["residual_rotation"],
    "B5_layernorm": ["residual_rotation"],
    "B7": ["unembedding_shift"],
    "C1_per_layer": ["mlp_scaling"],
    "C2": ["mlp_scaling"],
}


@pytest.mark.parametrize("group_id", sorted(SAME_AS))
def test_a_catalogue_group_re_declared_as_custom_gives_the_same_count(group_id):
    custom = load_custom(group_id)
    by_name = custom.model_copy(update={"symmetries": SAME_AS[group_id]})
    assert (
        analyze(custom, measured=False).redundant == analyze(by_name, measured=False).redundant > 0
    )
