"""Custom symmetry groups: the whole catalogue re-declared, and errors that point at the key."""

from __future__ import annotations

import pytest
import yaml
from custom_catalogue import CUSTOM_CATALOGUE, TINY, load_custom, spec_text

from symcomp.errors import SpecError
from symcomp.spec import CustomGroup, parse_spec
from symcomp.spec.model import CATALOGUE_GROUPS


@pytest.mark.parametrize("group_id", sorted(CUSTOM_CATALOGUE))
def test_catalogue_group_loads_as_custom_group(group_id):
    spec = load_custom(group_id)
    declared = yaml.safe_load(CUSTOM_CATALOGUE[group_id][1])
    assert isinstance(spec.symmetries, list)
    assert [g.name for g in spec.symmetries] == [g["name"] for g in declared]
    assert all(isinstance(g, CustomGroup) for g in spec.symmetries)
    assert [g.acts for g in spec.symmetries] == [g["acts"] for g in declared]


def test_catalogue_covers_the_design_note():
    ids = {group_id.split("_")[0].rstrip("'") for group_id in CUSTOM_CATALOGUE}
    expected = {f"A{i}" for i in range(1, 6)} | {f"B{i}" for i in range(1, 8)}
    assert ids == expected | {"C1", "C2", "C3"}
    assert "A1'" in CUSTOM_CATALOGUE
    assert load_custom("A1'").symmetries[0].commutes_with == ["rope"]


def test_custom_groups_mix_with_catalogue_names():
    text = spec_text("A4").replace("symmetries:", "symmetries:\n- qk_gauge\n- vo_gauge", 1)
    spec = parse_spec(text)
    assert spec.symmetries[:2] == ["qk_gauge", "vo_gauge"]
    assert set(spec.symmetries[:2]) <= set(CATALOGUE_GROUPS)


# --- errors -------------------------------------------------------------------------------

BASE = (TINY / "gpt2.yaml").read_text(encoding="utf-8").rstrip("\n") + "\nsymmetries:\n"

GROUP = """\
- name: g
  group: GL
  per: kv_head
  size: head_width
  acts:
    layers.*.attn.W_Q: W_Q A
    layers.*.attn.W_K: W_K A^-T
"""


def fail(groups: str) -> tuple[SpecError, str]:
    text = BASE + groups
    with pytest.raises(SpecError) as info:
        parse_spec(text)
    return info.value, text


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_the_base_group_is_valid():
    assert parse_spec(BASE + GROUP).symmetries[0].name == "g"


def test_unknown_parameter():
    err, text = fail(GROUP.replace("attn.W_K:", "attn.W_X:"))
    p = err.first
    assert p.key_path == ("symmetries", 0, "acts", "layers.*.attn.W_X")
    assert p.location.line == line_of(text, "W_X:")
    assert p.found == "'layers.*.attn.W_X'"
    assert "layers.*.attn.W_K" in p.accepted and "embed.W_E" in p.accepted
    assert "layers.0." not in p.accepted


def test_star_stands_for_the_layer_index_only():
    err, _ = fail(GROUP.replace("layers.*.attn.W_K:", "embed.*:"))
    assert err.first.key_path == ("symmetries", 0, "acts", "embed.*")


def test_unknown_name_in_an_expression():
    err, text = fail(GROUP.replace("W_K A^-T", "W_K B^-T"))
    p = err.first
    assert p.key_path == ("symmetries", 0, "acts", "layers.*.attn.W_K")
    assert p.location.line == line_of(text, "W_K B^-T")
    assert "unknown name 'B'" in p.message and "character 5" in p.message
    assert p.accepted.startswith("A, W_K,") and "attn_norm.gain" in p.accepted


def test_bad_syntax():
    err, text = fail(GROUP.replace("W_Q A", "W_Q A)"))
    p = err.first
    assert p.key_path == ("symmetries", 0, "acts", "layers.*.attn.W_Q")
    assert p.location.line == line_of(text, "W_Q A)")
    assert "bad action expression" in p.message and "character 6" in p.message
    assert p.found == "'W_Q A)'"


def test_unknown_function():
    err, _ = fail(GROUP.replace("W_Q A", "W_Q diagonal(A)"))
    assert "unknown function 'diagonal'" in err.first.message
    assert "kron" in err.first.accepted


def test_product_shape_mismatch():
    err, text = fail(GROUP.replace("W_Q A", "A W_Q"))
    p = err.first
    assert p.key_path == ("symmetries", 0, "acts", "layers.*.attn.W_Q")
    assert p.location.line == line_of(text, "A W_Q")
    assert "matrix product of 4 x 4 and 8 x 4" in p.message


def test_result_shape_mismatch_names_the_slice():
    err, _ = fail(GROUP.replace("W_Q A", "W_Q A^T ones(head_width)^T ones(width)"))
    p = err.first
    assert p.key_path == ("symmetries", 0, "acts", "layers.*.attn.W_Q")
    assert (p.found, p.accepted) == ("8 x 8", "8 x 4")
    assert "one query head's block under per: kv_head" in p.message


def test_whole_parameters_per_layer():
    # per: layer sees W_Q whole (8 x 8), so a head-sized element no longer fits.
    err, _ = fail(GROUP.replace("per: kv_head", "per: layer"))
    assert "matrix product of 8 x 8 and 4 x 4" in err.first.message


@pytest.mark.parametrize(
    ("action", "shape"),
    [("W_up s", None), ("W_up^T s", "1 x 8"), ("s^-1 W_down", None), ("W_down s^T", None)],
)
def test_neuron_slices(action, shape):
    key = "layers.*.mlp.W_down" if "W_down" in action else "layers.*.mlp.W_up"
    group = f"""\
- name: n
  group: scaling
  per: neuron
  size: 1
  acts:
    {key}: {action}
"""
    if shape is None:
        parse_spec(BASE + group)
        return
    err, _ = fail(group)
    assert err.first.found == shape and err.first.accepted == "8 x 1"


@pytest.mark.parametrize(
    ("size", "fragment"),
    [
        ("head_width / 3", "not a positive integer"),
        ("0", "not a positive integer"),
        ("depth", "unknown name 'depth'"),
        ("head_width +", "expected a number"),
        ("eye(2)", "not allowed in a size expression"),
    ],
)
def test_bad_size(size, fragment):
    err, text = fail(GROUP.replace("size: head_width", f"size: {size}"))
    p = err.first
    assert p.key_path == ("symmetries", 0, "size")
    assert p.location.line == line_of(text, "  size: ")
    assert fragment in p.message


def test_duplicate_group_names():
    err, _ = fail(GROUP + GROUP)
    p = err.first
    assert p.key_path == ("symmetries", 1, "name")
    assert p.location.line == (BASE + GROUP).count("\n") + 1
    assert "duplicate group name" in p.message and p.accepted.endswith("symmetries[0]")


def test_duplicate_catalogue_names():
    err, _ = fail("- qk_gauge\n- qk_gauge\n")
    assert err.first.key_path == ("symmetries", 1)


def test_layers_out_of_range():
    err, text = fail(GROUP.replace("  acts:", "  layers: [0, 1]\n  acts:"))
    p = err.first
    assert p.key_path == ("symmetries", 0, "layers", 1)
    assert p.location.line == line_of(text, "layers: [0, 1]")
    assert (p.found, p.accepted) == ("1", "-1 to 0 (negative: from the end)")


def test_commutes_with_rope_needs_rope():
    err, text = fail(GROUP.replace("  acts:", "  commutes_with: [rope]\n  acts:"))
    p = err.first
    assert p.key_path == ("symmetries", 0, "commutes_with", 0)
    assert p.location.line == line_of(text, "commutes_with")
    assert "learned" in p.found


def test_parameter_with_two_actions():
    err, _ = fail(GROUP + "    layers.0.attn.W_Q: W_Q A\n")
    p = err.first
    assert p.key_path == ("symmetries", 0, "acts", "layers.0.attn.W_Q")
    assert "already has an action" in p.message


def test_unused_element():
    err, _ = fail(GROUP.replace("W_Q A", "W_Q").replace("W_K A^-T", "W_K"))
    assert err.first.key_path == ("symmetries", 0, "acts")
    assert "appears in no action" in err.first.message


def test_element_may_not_shadow_a_size():
    err, _ = fail(GROUP.replace("  acts:", "  element: width\n  acts:"))
    assert err.first.key_path == ("symmetries", 0, "element")


def test_relative_and_global_names_resolve():
    group = """\
- name: r
  group: translation
  per: layer
  size: width
  acts:
    layers.*.attn.b_O: b_O + t diag(attn_norm.gain) + layers.*.mlp.b_down + ones(vocab) embed.W_E
    final_norm.bias: bias + t + gain + layers.0.attn.b_O
"""
    parse_spec(BASE + group)
    # a sibling's short name resolves only beside it, not from another module
    err, _ = fail(group.replace("+ gain +", "+ b_O +"))
    assert err.first.key_path == ("symmetries", 0, "acts", "final_norm.bias")


def test_split_names_in_a_whole_parameter_action_have_the_block_shape():
    a4 = CUSTOM_CATALOGUE["A4"][1].lstrip("\n")
    parse_spec(BASE + a4)  # per kv_head: W_O in b_O's action is one k x d block
    err, _ = fail(a4.replace("per: kv_head", "per: layer"))
    by_key = {p.key_path[-1]: p.message for p in err.problems}
    assert "sum of 1 x 8 and 1 x 4" in by_key["layers.*.attn.b_V"]
    assert "matrix product of 1 x 4 and 8 x 8" in by_key["layers.*.attn.b_O"]


def test_fixes_ones_needs_a_matrix_group():
    groups = GROUP.replace("group: GL", "group: translation").replace(
        "  acts:", "  fixes: [ones]\n  acts:"
    )
    err, _ = fail(groups.replace("W_Q A\n", "W_Q\n").replace("W_K A^-T", "W_K + t"))
    assert err.first.key_path == ("symmetries", 0, "fixes")


def test_positive_needs_a_scaling_group():
    err, _ = fail(GROUP.replace("  acts:", "  positive: true\n  acts:"))
    assert err.first.key_path == ("symmetries", 0, "positive")
    assert "scaling" in err.first.accepted
