"""One regression test per class of failure the fuzzing found (issue 26), each through the CLI:
the input is refused with exit 2 and a message naming the key (or accepted), within seconds,
never a traceback or a hang. ``run_cli`` from ``tests/fuzzing.py`` runs ``symcomp --debug``, so
an exception escaping the CLI fails the test instead of becoming exit 3."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from symcomp.lang import ExprError, evaluate_scalar, parse_expr
from symcomp.spec import load_spec, parameter_count, parameter_shapes
from tests.fuzzing import run_cli

ROOT = Path(__file__).resolve().parents[1]
GPT2 = (ROOT / "specs" / "gpt2-small.yaml").read_text(encoding="utf-8")
GPT2_CONFIG = json.loads((ROOT / "tests/data/hf_configs/gpt2/config.json").read_text())


def _refused(tmp_path: Path, text: str | bytes, *, command: str = "check", name="spec.yaml"):
    """The CLI's error line for ``text``; fails unless the input is refused cleanly."""
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    outcome = run_cli([command, str(path)])
    assert outcome.kind == "clean error", outcome
    assert str(path) in outcome.detail
    return outcome.detail


def _config(tmp_path: Path, **changes) -> str:
    return _refused(
        tmp_path, json.dumps({**GPT2_CONFIG, **changes}), command="import-hf", name="config.json"
    )


# 1. nesting deeper than the loaders allow


def test_deeply_nested_yaml_and_json_are_refused(tmp_path):
    deep = "[" * 5000 + "]" * 5000
    assert "nested more than 64 levels" in _refused(tmp_path, f"name: x\narchitecture: {deep}\n")
    config = '{"model_type": "gpt2", "x": ' + deep + "}"
    assert "nested more than 64 levels" in _refused(
        tmp_path, config, command="import-hf", name="config.json"
    )


# 2. and 3. aliases: one that contains itself, and expansion bombs


def test_an_alias_that_contains_itself_is_refused(tmp_path):
    assert "contains it (a cycle)" in _refused(tmp_path, "name: &a [1, *a]\n")


def test_billion_laughs_is_refused_quickly(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    assert "more than 100,000 values" in _refused(tmp_path, "\n".join(lines) + "\n")


def test_aliases_of_ordinary_size_still_work(tmp_path):
    text = GPT2.replace("norm: {type: layernorm, eps: 1.0e-5}", "norm: &n {type: layernorm}")
    path = tmp_path / "spec.yaml"
    path.write_text(text.replace("symmetries: auto", "description: *n\nsymmetries: auto"))
    assert "description" in _refused(tmp_path, path.read_text())  # a mapping, not a string
    path.write_text(GPT2.replace("eps: 1.0e-5", "eps: &e 1.0e-5"))
    assert run_cli(["check", str(path)]).kind == "accepted"


# 4. huge sizes: counts in closed form, the graph bounded


def test_the_largest_accepted_sizes_are_checked_quickly(tmp_path):
    text = GPT2.replace("vocab_size: 50257", f"vocab_size: {2**31 - 1}")
    text = text.replace("width: 768", f"width: {2**31 - 1}").replace("heads: 12", "heads: 1")
    path = tmp_path / "spec.yaml"
    path.write_text(text.replace("layers: 12", "layers: 2048"))
    assert run_cli(["check", str(path)]).kind == "accepted"  # within run_cli's 10 s


@pytest.mark.parametrize("spec", sorted((ROOT / "specs").rglob("*.yaml")), ids=lambda p: p.stem)
def test_the_closed_form_count_is_the_sum_over_the_parameters(spec):
    arch = load_spec(spec).architecture
    shapes = parameter_shapes(arch)
    assert parameter_count(arch) == sum(math.prod(shape) for shape in shapes.values())


@pytest.mark.parametrize("layers", [2**31 - 1, 2**31, 10**30])
def test_huge_layer_counts_are_refused_naming_the_key(tmp_path, layers):
    detail = _refused(tmp_path, GPT2.replace("layers: 12", f"layers: {layers}"))
    assert "architecture.layers" in detail


# 5. expressions that would overflow the stack or the floats


@pytest.mark.parametrize(
    "text",
    [
        "(" * 5000 + "width" + ")" * 5000,  # long
        "(" * 100 + "width" + ")" * 100,  # nested parentheses
        "-" * 100 + "width",  # unary minus
        "sqrt(" * 100 + "width" + ")" * 100,  # calls
        "+".join(["width"] * 500),  # a long sum: a deep tree
        "width" + "^T" * 500,  # postfix chain
        "width^width^width",  # overflow
        "1e308 * 1e308",  # inf
    ],
)
def test_expressions_too_deep_or_not_finite_are_expr_errors(text):
    with pytest.raises(ExprError):
        evaluate_scalar(parse_expr(text), {"width": 768.0})


def test_expression_limits_leave_real_expressions_alone():
    assert evaluate_scalar(parse_expr("+".join(["width"] * 60)), {"width": 2.0}) == 120.0


# 6. a list or a mapping where a scalar belongs


def test_a_list_for_a_scalar_is_refused_naming_the_key(tmp_path):
    detail = _refused(tmp_path, GPT2.replace("activation: gelu_tanh", "activation: [gelu]"))
    assert "architecture.mlp.activation" in detail


@pytest.mark.parametrize("model_type", [{"a": 1}, ["gpt2"], 7])
def test_a_model_type_that_is_not_a_string_is_refused(tmp_path, model_type):
    assert "model_type" in _config(tmp_path, model_type=model_type)


# 7. a custom group's layers


@pytest.mark.parametrize(("layers", "says"), [("[]", "too few items"), ("[0, -12]", "twice")])
def test_a_custom_groups_layer_list_must_name_distinct_layers(tmp_path, layers, says):
    group = (
        "symmetries:\n- name: s\n  group: scaling\n  per: neuron\n  size: 1\n"
        f"  layers: {layers}\n  acts:\n"
        "    layers.*.mlp.W_up: W_up s\n    layers.*.mlp.W_down: s^-1 W_down\n"
    )
    detail = _refused(tmp_path, GPT2.replace("symmetries: auto\n", group))
    assert "symmetries[0].layers" in detail and says in detail


# 9. non-finite numbers


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "1e400"])
def test_non_finite_numbers_are_refused(tmp_path, value):
    detail = _refused(tmp_path, GPT2.replace("eps: 1.0e-5", f"eps: {value}"))
    assert "architecture.norm.eps" in detail


@pytest.mark.parametrize("text", ["NaN", "Infinity", "1e400"])
def test_non_finite_numbers_in_a_config_are_refused(tmp_path, text):
    raw = json.dumps(GPT2_CONFIG).replace(
        '"layer_norm_epsilon": 1e-05', f'"layer_norm_epsilon": {text}'
    )
    assert text in raw or "1e400" in raw
    detail = _refused(tmp_path, raw, command="import-hf", name="config.json")
    assert "layer_norm_epsilon" in detail or "not a JSON number" in detail


# 10. YAML 1.2 scalars


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("heads: 12", "heads: 1:30", "architecture.attention.heads"),  # not base 60
        ("tied: true", "tied: yes", "architecture.embeddings.tied"),  # not a boolean
        ("eps: 1.0e-5", "eps: 1_0", "architecture.norm.eps"),  # not 10
    ],
)
def test_yaml_1_1_scalars_are_strings(tmp_path, old, new, key):
    assert key in _refused(tmp_path, GPT2.replace(old, new))


def test_yaml_1_2_numbers_read_as_written(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(GPT2.replace("layers: 12", "layers: 012").replace("eps: 1.0e-5", "eps: 1e-5"))
    arch = load_spec(path).architecture
    assert arch.layers == 12 and arch.norm.eps == 1e-5  # 012 is not octal 10


# 11. a closed pipe


def test_a_closed_pipe_ends_quietly():
    script = f"{sys.executable} -m symcomp schema | head -c 1 > /dev/null; exit ${{PIPESTATUS[0]}}"
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == ""


# 12. import-hf's sizes


@pytest.mark.parametrize("key", ["vocab_size", "n_layer", "n_embd", "n_positions"])
def test_import_hf_refuses_absurd_sizes_naming_the_key(tmp_path, key):
    assert key in _config(tmp_path, **{key: 10**30})


def test_import_hf_refuses_a_size_its_spec_cannot_hold(tmp_path):
    assert "n_layer" in _config(tmp_path, n_layer=2**20)


# the contract


def test_debug_shows_the_traceback_of_an_internal_error(run_cli, monkeypatch):
    from symcomp import cli

    def crash(args):
        raise KeyError("a bug")

    monkeypatch.setattr(cli, "cmd_schema", crash)
    monkeypatch.delenv("SYMCOMP_DEBUG", raising=False)
    code, _, err = run_cli("schema")
    assert code == 3 and "--debug" in err and "issue tracker" in err
    with pytest.raises(KeyError):
        run_cli("--debug", "schema")


@pytest.mark.parametrize("family", ["gemma2-9b", "mistral-7b-v0.1", "smollm3-3b"])
def test_import_hf_refuses_a_depth_before_building_lists_per_layer(tmp_path, family):
    """Found by the long fuzz run: these families list a kind per layer (sliding, NoPE), so a
    layer count of 2^31 - 1 once took 7 GB and minutes before the spec refused it."""
    config = json.loads((ROOT / "tests/data/hf_configs" / family / "config.json").read_text())
    config["num_hidden_layers"] = 2**31 - 1
    detail = _refused(tmp_path, json.dumps(config), command="import-hf", name="config.json")
    assert "num_hidden_layers: too many layers" in detail
