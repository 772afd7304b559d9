"""The closed form of ``analyze`` (named groups, unread rows, overlaps) against the judge: the
Jacobian nullity of the transformers model of each family's tiny config."""

from __future__ import annotations

import pytest
import sympy
import torch

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


def _deeper(spec, layers: int):
    return spec.model_copy(
        update={"architecture": spec.architecture.model_copy(update={"layers": layers})}
    )


@pytest.mark.parametrize("family", list(hf_tiny.FAMILIES))
def test_one_two_and_three_layers_have_one_formula(family):
    """One layer is first and last at once; in two, every layer after the first is the last. A
    formula read off such a graph was wrong in L (tiny BERT's undercounted by d at L = 2): the
    formula must not depend on the depth it was read at."""
    formulas = {
        layers: sympy.sympify(
            analyze(_deeper(hf_tiny.tiny_spec(family), layers), measured=False).formula
        )
        for layers in (1, 2, 3)
    }
    assert formulas[1] == formulas[2] == formulas[3], formulas


# a Jacobian of 30,000 outputs by 1,500 parameters: 40 to 90 s each; BERT's was the wrong one.
# No random point of the two-layer tiny OPT has every ReLU neuron sometimes on, sometimes off.
_TWO_LAYERS = [
    f if f == "bert" else pytest.param(f, marks=pytest.mark.slow)
    for f in hf_tiny.FAMILIES
    if f != "opt"
]


@pytest.mark.parametrize("family", _TWO_LAYERS)
def test_a_one_layer_formula_counts_the_transformers_model_two_layers_deep(family):
    from symcomp.spec import parameter_count
    from symcomp.spec.params import sizes_of
    from symcomp.verify.nullity import measure_nullity

    spec = hf_tiny.tiny_spec(family)
    symbols = {str(sym): sym for sym in SIZE_SYMBOLS.values()}
    formula = sympy.sympify(analyze(spec, measured=False).formula, locals=symbols)
    arch = _deeper(spec, 2).architecture
    model = hf_tiny.build(family, layers=2)
    params = hf_tiny.hf_params(model)
    assert sum(p.numel() for p in params.values()) == parameter_count(arch)
    measured, _ = measure_nullity(
        hf_tiny.logprob_fn(model),
        params,
        vocab=arch.vocab_size,
        seq_len=arch.max_positions,
        generator=torch.Generator().manual_seed(7),
    )
    assert measured.trustworthy
    values = sizes_of(arch).as_dict()
    sizes = {sym: values[name] for name, sym in SIZE_SYMBOLS.items()}
    assert formula.subs(sizes) == measured.nullity
