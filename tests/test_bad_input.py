"""Bad input gives one clear message (file:line:column, key path, found, accepted), exit 2,
no traceback, and no output file."""

from __future__ import annotations

import subprocess
import sys

import pytest

from symcomp.errors import SpecError
from symcomp.spec import load_spec, parse_spec
from tests.conftest import SPECS

TINY_LLAMA = (SPECS / "tiny" / "llama.yaml").read_text()
TINY_PHI = (SPECS / "tiny" / "phi.yaml").read_text()


def _error(text: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        parse_spec(text, "spec.yaml")
    return info.value


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_missing_file(tmp_path):
    with pytest.raises(SpecError, match="file not found") as info:
        load_spec(tmp_path / "nope.yaml")
    assert info.value.first.location.file.endswith("nope.yaml")


def test_malformed_yaml_points_at_line_and_column():
    err = _error("name: x\narchitecture: {kind: causal_lm\nwidth: 3\n")
    assert "malformed YAML" in err.first.message
    assert err.first.location.line == 3


def test_unknown_key_names_its_line_and_the_accepted_keys():
    text = TINY_LLAMA.replace("  width: 8\n", "  width: 8\n  widht: 8\n")
    err = _error(text)
    p = err.first
    assert p.message == "unknown key (did you mean 'width'?)"
    assert p.key_path == ("architecture", "widht")
    assert p.location.line == _line_of(text, "widht")
    assert p.location.column == 3
    assert "width" in p.accepted and "vocab_size" in p.accepted


def test_unknown_key_inside_a_tagged_union():
    text = TINY_LLAMA.replace("{type: rope, base: 10.0}", "{type: rope, base: 10.0, theta: 3}")
    p = _error(text).first
    assert p.key_path == ("architecture", "positions", "theta")
    assert "rotated_fraction" in p.accepted and "pair_layout" in p.accepted


def test_wrong_type_says_what_was_found():
    text = TINY_LLAMA.replace("width: 8", "width: eight")
    p = _error(text).first
    assert p.key_path == ("architecture", "width")
    assert p.found == "'eight'"
    assert p.location.line == _line_of(text, "width: eight")


def test_missing_required_key():
    text = TINY_LLAMA.replace("  layers: 1\n", "")
    p = _error(text).first
    assert p.key_path == ("architecture", "layers")
    assert p.message == "required key is missing"


def test_heads_must_divide_width_when_head_width_is_implied():
    text = TINY_LLAMA.replace("heads: 2,", "heads: 3,")
    p = _error(text).first
    assert p.key_path == ("architecture", "attention", "heads")
    assert "divide" in p.message and p.location.line == _line_of(text, "heads: 3")
    # ...but an explicit head width makes it legal.
    parse_spec(text.replace("heads: 3,", "heads: 3, head_width: 4,"))


def test_kv_heads_must_divide_heads():
    text = TINY_LLAMA.replace("heads: 2,", "heads: 2, kv_heads: 3,")
    p = _error(text).first
    assert p.key_path == ("architecture", "attention", "kv_heads")


def test_rotated_width_must_be_even():
    text = TINY_PHI.replace("rotated_fraction: 0.5", "rotated_fraction: 0.25")
    p = _error(text).first
    assert p.key_path == ("architecture", "positions", "rotated_fraction")
    assert "-> 1" in p.found


def test_unknown_activation_lists_the_accepted_ones():
    text = TINY_LLAMA.replace("activation: swiglu", "activation: mish")
    p = _error(text).first
    assert p.key_path == ("architecture", "mlp", "activation")
    for name in ("relu", "gelu", "gelu_tanh", "silu", "swiglu", "geglu"):
        assert name in p.accepted


def test_unknown_catalogue_group():
    text = TINY_LLAMA + "symmetries: [qk_gauge, head_mixing]\n"
    p = _error(text).first
    assert p.key_path == ("symmetries", 1)
    assert "residual_rotation" in p.accepted


def test_contradictory_gated_shorthand():
    text = TINY_LLAMA.replace("activation: swiglu", "activation: swiglu, gated: false")
    assert _error(text).first.key_path == ("architecture", "mlp", "gated")


def test_several_problems_are_all_reported():
    text = TINY_LLAMA.replace("width: 8", "width: -8").replace("layers: 1", "layers: x")
    paths = {p.key_path for p in _error(text).problems}
    assert {("architecture", "width"), ("architecture", "layers")} <= paths


def test_yaml_tags_cannot_construct_objects():
    err = _error("!!python/object/apply:os.system ['echo hi']\n")
    assert "tag" in str(err)


def test_cli_check_exits_2_with_one_clean_message(run_cli, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY_LLAMA.replace("width: 8", "width: eight"))
    code, _, err = run_cli("check", str(bad))
    assert code == 2
    assert "Traceback" not in err
    assert f"{bad}:{_line_of(bad.read_text(), 'width: eight')}:" in err
    assert "architecture.width" in err


def test_cli_check_prints_a_summary(run_cli):
    code, out, _ = run_cli("check", str(SPECS / "gpt2-small.yaml"))
    assert code == 0
    assert "124,439,808" in out and "pre_norm" in out


def test_real_script_has_no_traceback_on_missing_file(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "symcomp.cli", "check", str(tmp_path / "missing.yaml")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "file not found" in result.stderr
