"""The witness: a closed form against the Jacobian nullity of a tiny instance. A formula off by
one in either direction is caught, and so is a group that moves the log-probabilities."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from symcomp.pipeline import build, count, derive
from symcomp.spec import load_spec
from symcomp.symmetry.analysis import measurement_instance
from symcomp.symmetry.catalogue.base import L
from symcomp.verify.witness import HIDDEN, second_instance, witness
from tests.conftest import SPECS

HF_CONFIGS = Path(__file__).parent / "data" / "hf_configs"


@pytest.fixture(scope="module")
def gpt2():
    spec = load_spec(SPECS / "tiny" / "gpt2.yaml")
    tiny = spec.model_copy(update={"architecture": measurement_instance(spec.architecture)})
    syms = derive(build(tiny), tiny)
    return tiny.architecture, syms, count(spec, derive(build(spec), spec)).formula


@pytest.mark.parametrize(("shift", "verdict"), [(0, "exact"), (1, "overcount"), (-1, "undercount")])
def test_a_formula_off_by_one_is_caught(gpt2, shift, verdict):
    arch, syms, formula = gpt2
    w = witness(formula + shift, arch, syms, auto=True)
    assert w.trustworthy and w.verdict == verdict
    assert w.ok == (shift == 0)
    if shift < 0:  # the groups span every null direction: the formula miscounts them
        assert w.outside == 0
        assert any("unexplained: 1 null directions" in line for line in w.lines())


def test_a_missing_group_is_located_by_the_parameters_it_moves(gpt2):
    arch, syms, formula = gpt2
    (vo,) = syms.named("vo_gauge")
    fewer = replace(syms, groups=tuple(gi for gi in syms.groups if gi.name != "vo_gauge"))
    w = witness(formula - vo.total, arch, fewer, auto=True)
    assert w.verdict == "undercount"
    assert w.outside == w.measured - w.derived == 2 * 4 * 4  # GL(k) per head, 2 heads, k = 4
    # b_V moves too, but modulo value_bias_fold it need not
    assert {name for name, _ in w.uncovered} == {"layers.0.attn.W_V", "layers.0.attn.W_O"}


def test_a_listed_subset_is_partial_not_wrong(gpt2):
    arch, syms, formula = gpt2
    w = witness(formula - 1, arch, syms, auto=False)
    assert w.verdict == "partial" and w.ok


def test_the_second_instance_keeps_the_structure():
    for name in ("llama", "mistral", "gemma", "pythia"):
        arch = load_spec(SPECS / "tiny" / f"{name}.yaml").architecture
        first, second = measurement_instance(arch), second_instance(arch)
        assert (second.attention.heads == second.attention.kv_heads) == (
            arch.attention.heads == arch.attention.kv_heads
        )
        assert (second.attention.kv_heads == 1) == (arch.attention.kv_heads == 1)
        assert second.width != first.width and second.layers != first.layers
        assert second.attention.head_width != first.attention.head_width


@pytest.mark.parametrize("path", sorted(SPECS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_example_spec_is_confirmed_by_its_measurement(path):
    from symcomp.pipeline import analyze

    analysis = analyze(load_spec(path))
    (w,) = analysis.measured
    assert analysis.confirmed, w.lines()
    assert w.verdict == "exact" and w.measured == w.derived


def test_a_parallel_block_gets_a_vocabulary_beyond_its_first_mlp():
    # layer 0's MLP of a parallel block reads the current token only: V d must exceed twice its
    # weights, or the instance has null directions of its own (47 for a gated MLP at V = 40)
    phi = load_spec(SPECS / "tiny" / "phi.yaml").architecture
    gated = phi.model_copy(update={"mlp": phi.mlp.model_copy(update={"gated": True})})
    for arch, weights in ((phi, 2), (gated, 3)):
        for inst, f in ((measurement_instance(arch), 12), (second_instance(arch), HIDDEN)):
            assert inst.vocab_size * inst.width >= 2 * weights * inst.width * f
    llama = measurement_instance(load_spec(SPECS / "tiny" / "llama.yaml").architecture)
    assert llama.vocab_size == 2 * llama.width + 4


def _stablelm2(kv_heads: int, head_width: int, width: int = 2048):
    """StableLM 2's full-size spec (b_V, no b_O, a LayerNorm-only stream) with other sizes."""
    from symcomp.hf.config_import import import_hf_config

    spec = import_hf_config(HF_CONFIGS / "stablelm-2-1_6b" / "config.json")
    att = spec.architecture.attention.model_copy(
        update={"kv_heads": kv_heads, "head_width": head_width}
    )
    arch = spec.architecture.model_copy(update={"attention": att, "width": width})
    return spec.model_copy(update={"architecture": arch})


@pytest.mark.parametrize(("kv_heads", "head_width"), [(32, 64), (8, 64), (32, 96)])
def test_the_instances_keep_the_relation_of_the_value_width_to_d(kv_heads, head_width):
    """A4' (value_bias_centering) has one direction per layer when g k = d and none below: an
    instance that turned one relation into the other would witness a different count."""
    arch = _stablelm2(kv_heads, head_width).architecture
    sign = (arch.attention.kv_heads * arch.attention.head_width > arch.width) - (
        arch.attention.kv_heads * arch.attention.head_width < arch.width
    )
    for tiny in (measurement_instance(arch), second_instance(arch)):
        value = tiny.attention.kv_heads * tiny.attention.head_width
        assert (value > tiny.width) - (value < tiny.width) == sign


def test_value_bias_centering_counts_one_per_layer_only_where_g_k_is_d():
    square = derive(build(_stablelm2(32, 64)), _stablelm2(32, 64))
    grouped = derive(build(_stablelm2(8, 64)), _stablelm2(8, 64))
    assert [gi.total for gi in square.named("value_bias_centering")] == [L]
    assert grouped.named("value_bias_centering") == ()


def test_a_value_width_beyond_d_is_refused_not_miscounted():
    from symcomp.errors import DerivationError

    wide = _stablelm2(32, 96)
    with pytest.raises(DerivationError, match="value_bias_centering"):
        derive(build(wide), wide)


def test_a_norm_eps_of_1e_12_is_measured_at_0_1_on_both_instances():
    """At BERT's eps of 1e-12 a LayerNorm is scale invariant to 1e-12: the second instance kept
    it and measured 5 null directions that no group has (`verify bert-base` exited 1)."""
    from symcomp.pipeline import measure

    spec = load_spec(SPECS / "bert-base.yaml")
    assert spec.architecture.norm.eps == 1e-12
    arch = spec.architecture
    assert measurement_instance(arch).norm.eps == second_instance(arch).norm.eps == 0.1
    n = count(spec, derive(build(spec), spec))
    assert all(w.verdict == "exact" for w in measure(spec, n, second=True))
