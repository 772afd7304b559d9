"""Importing Hugging Face config.json files: ``symcomp.hf.import_hf_config``.

Three kinds of check:

- hand-written copies of published configs (both RoPE layouts: the hub's top-level keys and
  transformers 5's ``rope_parameters``) import to the example specs of ``specs/``;
- tiny configs written by transformers itself import to the architecture expected, and the
  transformers model built from the same config has exactly the spec's parameter count;
- bad input fails with a SpecError naming the file, line, column and key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import transformers
from torch import nn

from symcomp.errors import SpecError
from symcomp.hf import import_hf_config
from symcomp.hf.config_families import FAMILIES
from symcomp.hf.config_import import default_name
from symcomp.spec import load_spec, parameter_count
from symcomp.spec.model import Architecture

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "hf_configs"
SPECS = ROOT / "specs"

# data directory -> example spec it must import to
PUBLISHED: dict[str, str] = {
    "gpt2": "gpt2-small",
    "bert-base-uncased": "bert-base",
    "llama-2-7b": "llama-2-7b",
    "llama-2-7b-v5": "llama-2-7b",
    "mistral-7b-v0.1": "mistral-7b",
    "mistral-7b-v0.1-v5": "mistral-7b",
    "phi-2": "phi-2",
    "phi-2-v5": "phi-2",
    "pythia-160m": "pythia-160m",
    "pythia-160m-v5": "pythia-160m",
    "opt-125m": "opt-125m",
    "gemma-2b": "gemma-2b",
    "gemma-2b-v5": "gemma-2b",
}
ROPE_CONFIGS = ("llama-2-7b", "mistral-7b-v0.1", "phi-2", "pythia-160m", "gemma-2b")


def _read(name: str) -> dict[str, Any]:
    return json.loads((DATA / name / "config.json").read_text())


def _write(tmp_path: Path, config: dict[str, Any], name: str = "config.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(config, indent=2))
    return path


def _error(path: Path | str) -> SpecError:
    with pytest.raises(SpecError) as info:
        import_hf_config(path)
    return info.value


# --- published configs -----------------------------------------------------------------------


@pytest.mark.parametrize(("config_dir", "spec"), PUBLISHED.items())
def test_published_config_imports_to_example_spec(config_dir: str, spec: str) -> None:
    imported = import_hf_config(DATA / config_dir)
    assert imported.architecture == load_spec(SPECS / f"{spec}.yaml").architecture
    assert imported.name == config_dir
    assert imported.symmetries == "auto"


@pytest.mark.parametrize("config_dir", ROPE_CONFIGS)
def test_both_rope_layouts_are_covered(config_dir: str) -> None:
    hub, v5 = _read(config_dir), _read(f"{config_dir}-v5")
    assert "rope_parameters" not in hub
    assert {"rope_theta", "rotary_emb_base"} & set(hub)
    assert "rope_parameters" in v5
    assert not {"rope_theta", "rotary_emb_base", "rotary_pct", "partial_rotary_factor"} & set(v5)


def test_file_path_and_name() -> None:
    spec = import_hf_config(DATA / "gpt2" / "config.json", name="my-gpt2")
    assert spec.name == "my-gpt2"
    assert import_hf_config(str(DATA / "gpt2" / "config.json")).name == "gpt2"


def test_default_name_is_sanitized(tmp_path: Path) -> None:
    assert default_name(tmp_path / "Llama 2 (7B)!" / "config.json") == "Llama-2-7B-"
    assert default_name(tmp_path / "_x" / "config.json") == "x"
    assert default_name(tmp_path / "phi-2.json") == "phi-2"
    path = _write(tmp_path, _read("gpt2"), "__.json")
    assert import_hf_config(path).name == "imported"


def test_bad_explicit_name_is_reported(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="name"):
        import_hf_config(DATA / "gpt2", name="-bad name")


# --- tiny configs written by transformers ----------------------------------------------------

D, F, V, T, EPS, BASE = 8, 12, 11, 6, 0.1, 10.0


def _rope(fraction: float = 1.0, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"rope_type": "default", "rope_theta": BASE, **extra}
    if fraction != 1.0:
        out["partial_rotary_factor"] = fraction
    return out


_LLAMA_LIKE = dict(
    vocab_size=V, hidden_size=D, intermediate_size=F, num_hidden_layers=1,
    max_position_embeddings=T, rms_norm_eps=EPS, rope_parameters=_rope(),
)  # fmt: skip

# model_type -> (config class, keyword arguments), mirroring specs/tiny/<family>.yaml
TINY: dict[str, tuple[type, dict[str, Any]]] = {
    "gpt2": (transformers.GPT2Config, dict(
        vocab_size=V, n_positions=T, n_embd=D, n_layer=1, n_head=2, n_inner=F,
        activation_function="gelu_new", layer_norm_epsilon=EPS, tie_word_embeddings=True,
    )),
    "bert": (transformers.BertConfig, dict(
        vocab_size=V, hidden_size=D, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=F, hidden_act="gelu", max_position_embeddings=T, type_vocab_size=2,
        layer_norm_eps=EPS,
    )),
    "llama": (transformers.LlamaConfig, dict(
        _LLAMA_LIKE, num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=False,
    )),
    "mistral": (transformers.MistralConfig, dict(
        _LLAMA_LIKE, num_attention_heads=4, num_key_value_heads=2, head_dim=4, sliding_window=3,
    )),
    # Qwen2Config has no head_dim field, but Qwen2Attention reads one with getattr.
    "qwen2": (transformers.Qwen2Config, dict(
        _LLAMA_LIKE, num_attention_heads=4, num_key_value_heads=2, head_dim=4,
    )),
    "gpt_neox": (transformers.GPTNeoXConfig, dict(
        vocab_size=V, hidden_size=D, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=F, hidden_act="gelu", max_position_embeddings=T, layer_norm_eps=EPS,
        rope_parameters=_rope(0.5),
    )),
    "phi": (transformers.PhiConfig, dict(
        vocab_size=V, hidden_size=D, intermediate_size=F, num_hidden_layers=1,
        num_attention_heads=2, hidden_act="gelu_new", max_position_embeddings=T,
        layer_norm_eps=EPS, rope_parameters=_rope(0.5),
    )),
    "opt": (transformers.OPTConfig, dict(
        vocab_size=V, hidden_size=D, num_hidden_layers=1, ffn_dim=F, max_position_embeddings=T,
        num_attention_heads=2, activation_function="relu",
    )),
    "gemma": (transformers.GemmaConfig, dict(
        _LLAMA_LIKE, num_attention_heads=2, num_key_value_heads=1, head_dim=4,
    )),
}  # fmt: skip

TINY_SPEC = {"gpt_neox": "pythia"}  # model_type -> specs/tiny file stem, where they differ


def _tiny(model_type: str, **overrides: Any) -> transformers.PreTrainedConfig:
    cls, kwargs = TINY[model_type]
    # the vocabulary follows the tiny spec (parallel blocks use a larger one, see there)
    spec = load_spec(SPECS / "tiny" / f"{TINY_SPEC.get(model_type, model_type)}.yaml")
    return cls(**{**kwargs, "vocab_size": spec.architecture.vocab_size, **overrides})


def _save(config: transformers.PreTrainedConfig, tmp_path: Path) -> Path:
    config.save_pretrained(tmp_path)
    return tmp_path


def _hf_parameter_count(config: transformers.PreTrainedConfig) -> int:
    if config.model_type == "bert":
        model: nn.Module = transformers.BertForMaskedLM(config)
    else:
        model = transformers.AutoModelForCausalLM.from_config(config)
    count = sum(p.numel() for p in model.parameters())  # shared tensors are yielded once
    if config.model_type == "bert" and not config.tie_word_embeddings:
        # transformers 5 ties cls.predictions.bias to decoder.bias only along with the weights:
        # untied, it is a second bias that forward never reads.
        predictions = model.cls.predictions
        assert predictions.bias is not predictions.decoder.bias
        count -= predictions.bias.numel()
    return count


def _import_tiny(tmp_path: Path, model_type: str, **overrides: Any) -> Architecture:
    config = _tiny(model_type, **overrides)
    arch = import_hf_config(_save(config, tmp_path)).architecture
    assert parameter_count(arch) == _hf_parameter_count(config)
    return arch


def test_every_family_has_a_tiny_config() -> None:
    # the families of issue 24 register theirs in hf_families (checked against transformers)
    try:
        import hf_families
    except ImportError:  # tests/ became a package
        from tests import hf_families
    assert set(TINY) | set(hf_families.CONFIGS) >= set(FAMILIES)
    assert set(TINY) <= set(FAMILIES)


@pytest.mark.parametrize("model_type", TINY)
def test_tiny_config_imports_to_tiny_spec(model_type: str, tmp_path: Path) -> None:
    arch = _import_tiny(tmp_path, model_type)
    expected = load_spec(SPECS / "tiny" / f"{TINY_SPEC.get(model_type, model_type)}.yaml")
    want = expected.architecture
    if model_type == "opt":  # OPT's LayerNorms use PyTorch's eps 1e-5 whatever the config says
        want = want.model_copy(update={"norm": want.norm.model_copy(update={"eps": 1e-5})})
    assert arch == want


@pytest.mark.parametrize("model_type", TINY)
def test_tiny_config_to_json_file_imports(model_type: str, tmp_path: Path) -> None:
    config = _tiny(model_type)
    config.to_json_file(tmp_path / "config.json")
    assert (
        import_hf_config(tmp_path).architecture
        == import_hf_config(_save(config, tmp_path / "saved")).architecture
    )


@pytest.mark.parametrize("model_type", TINY)
def test_transformers_default_config_imports(model_type: str, tmp_path: Path) -> None:
    config = TINY[model_type][0]()
    import_hf_config(_save(config, tmp_path))
    # to_dict() also carries every PreTrainedConfig key: each must be classified
    _write(tmp_path, config.to_dict())
    import_hf_config(tmp_path)


def test_llama_biases_tying_gqa(tmp_path: Path) -> None:
    arch = _import_tiny(
        tmp_path, "llama", attention_bias=True, mlp_bias=True, tie_word_embeddings=True,
        num_attention_heads=4, num_key_value_heads=1, head_dim=6,
    )  # fmt: skip
    att = arch.attention
    assert (att.heads, att.kv_heads, att.head_width) == (4, 1, 6)
    assert att.bias.q and att.bias.k and att.bias.v and att.bias.o
    assert arch.mlp.bias and arch.mlp.gated and arch.mlp.activation == "silu"
    assert arch.embeddings.tied


def test_llama_linear_rope_scaling(tmp_path: Path) -> None:
    arch = _import_tiny(tmp_path, "llama", rope_parameters=_rope(rope_type="linear", factor=2.0))
    assert arch.positions.type == "rope"
    assert arch.positions.scaling is not None
    assert (arch.positions.scaling.type, arch.positions.scaling.factor) == ("linear", 2.0)


def test_mistral_without_sliding_window(tmp_path: Path) -> None:
    assert _import_tiny(tmp_path, "mistral", sliding_window=None).attention.sliding_window is None


def test_qwen2_sliding_window_only_when_used(tmp_path: Path) -> None:
    arch = _import_tiny(tmp_path / "a", "qwen2", sliding_window=3)
    assert arch.attention.sliding_window is None  # use_sliding_window defaults to false
    kw = dict(use_sliding_window=True, sliding_window=3)
    arch = _import_tiny(tmp_path / "b", "qwen2", max_window_layers=0, **kw)
    assert arch.attention.sliding_window == 3
    arch = _import_tiny(tmp_path / "c", "qwen2", max_window_layers=1, **kw)
    assert arch.attention.sliding_window is None  # no layer index reaches max_window_layers


def test_qwen2_sliding_window_on_some_layers_is_refused(tmp_path: Path) -> None:
    config = _tiny(
        "qwen2", num_hidden_layers=2, use_sliding_window=True, sliding_window=3,
        max_window_layers=1,
    )  # fmt: skip
    error = _error(_save(config, tmp_path))
    assert "some layers only" in str(error)
    assert error.first.key_path == ("layer_types",)


def test_gpt_neox_sequential_residual_and_no_attention_bias(tmp_path: Path) -> None:
    arch = _import_tiny(tmp_path, "gpt_neox", use_parallel_residual=False, attention_bias=False)
    assert arch.block == "pre_norm"
    assert not arch.attention.bias.q and not arch.attention.bias.o
    assert arch.mlp.bias


def test_gpt_neox_rotary_pct_default(tmp_path: Path) -> None:
    config = _read("pythia-160m")
    del config["rotary_pct"]
    assert (
        import_hf_config(_write(tmp_path, config)).architecture.positions.rotated_fraction == 0.25
    )


def test_phi_default_partial_rotary_factor_and_tying(tmp_path: Path) -> None:
    config = _read("phi-2")
    del config["partial_rotary_factor"]
    config["tie_word_embeddings"] = True
    arch = import_hf_config(_write(tmp_path, config)).architecture
    assert arch.positions.rotated_fraction == 0.5
    assert arch.embeddings.tied and arch.embeddings.unembedding_bias


def test_opt_post_norm_without_biases(tmp_path: Path) -> None:
    arch = _import_tiny(tmp_path, "opt", do_layer_norm_before=False, enable_bias=False)
    assert arch.block == "post_norm" and not arch.final_norm
    assert not arch.attention.bias.q and not arch.mlp.bias
    assert arch.norm.bias  # enable_bias leaves the LayerNorms alone


def test_opt_removed_final_norm(tmp_path: Path) -> None:
    config = _tiny("opt")
    config._remove_final_layer_norm = True
    assert not _import_tiny_config(config, tmp_path).final_norm


def _import_tiny_config(config: transformers.PreTrainedConfig, tmp_path: Path) -> Architecture:
    arch = import_hf_config(_save(config, tmp_path)).architecture
    assert parameter_count(arch) == _hf_parameter_count(config)
    return arch


def test_gpt2_default_inner_width_and_untied(tmp_path: Path) -> None:
    arch = _import_tiny(tmp_path, "gpt2", n_inner=None, tie_word_embeddings=False)
    assert arch.mlp.hidden == 4 * D
    assert not arch.embeddings.tied


def test_bert_untied_relu(tmp_path: Path) -> None:
    arch = _import_tiny(tmp_path, "bert", tie_word_embeddings=False, hidden_act="relu")
    assert arch.kind == "masked_lm" and not arch.embeddings.tied
    assert arch.mlp.activation == "relu"
    assert arch.prediction_head is not None and arch.prediction_head.activation == "relu"


def test_gemma_attention_bias_and_legacy_gelu(tmp_path: Path) -> None:
    arch = _import_tiny(tmp_path, "gemma", attention_bias=True)
    assert arch.attention.bias.q and arch.attention.bias.o
    config = _read("gemma-2b")
    del config["hidden_activation"]  # hidden_act "gelu" alone still means the tanh form
    arch = import_hf_config(_write(tmp_path, config)).architecture
    assert arch.mlp.activation == "gelu_tanh" and arch.mlp.gated
    assert arch.norm.gain == "one_plus_w" and arch.embeddings.scale == "sqrt(width)"


def test_gemma_defaults_head_dim_256(tmp_path: Path) -> None:
    config = _read("gemma-2b")
    del config["head_dim"]
    assert import_hf_config(_write(tmp_path, config)).architecture.attention.head_width == 256


def test_activation_mapping(tmp_path: Path) -> None:
    for name, expected in [("gelu", "gelu"), ("gelu_pytorch_tanh", "gelu_tanh"), ("relu", "relu")]:
        config = {**_read("gpt2"), "activation_function": name}
        arch = import_hf_config(_write(tmp_path, config)).architecture
        assert arch.mlp.activation == expected


def test_reorder_and_upcast_attn_is_accepted(tmp_path: Path) -> None:
    config = {**_read("gpt2"), "reorder_and_upcast_attn": True}
    assert import_hf_config(_write(tmp_path, config)).architecture.mlp.hidden == 3072


def test_null_values_are_defaults(tmp_path: Path) -> None:
    config = {**_read("llama-2-7b"), "num_key_value_heads": None, "some_future_key": None}
    assert import_hf_config(_write(tmp_path, config)).architecture.attention.kv_heads == 32


# --- bad input -------------------------------------------------------------------------------


def _bad(tmp_path: Path, base: str, **changes: Any) -> SpecError:
    config = _read(base)
    config.update(changes)
    return _error(_write(tmp_path, {k: v for k, v in config.items() if v is not ...}))


def test_unsupported_model_type(tmp_path: Path) -> None:
    error = _bad(tmp_path, "gpt2", model_type="t5")
    problem = error.first
    assert problem.key_path == ("model_type",)
    assert "unsupported model_type" in problem.message and problem.found == "'t5'"
    assert problem.accepted is not None
    assert all(family in problem.accepted for family in FAMILIES)
    assert problem.location.file == str(tmp_path / "config.json")
    assert problem.location.line is not None and problem.location.column is not None


def test_missing_model_type(tmp_path: Path) -> None:
    assert _bad(tmp_path, "gpt2", model_type=...).first.key_path == ("model_type",)


@pytest.mark.parametrize(
    "rope",
    [
        {"rope_scaling": {"type": "dynamic", "factor": 2.0}},
        {"rope_scaling": {"rope_type": "llama3", "factor": 8.0}},
        {"rope_theta": ..., "rope_parameters": {"rope_type": "yarn", "factor": 4.0}},
    ],
)
def test_unsupported_rope_type(tmp_path: Path, rope: dict[str, Any]) -> None:
    problem = _bad(tmp_path, "llama-2-7b", **rope).first
    key = next(k for k in rope if rope[k] is not ...)
    kind = "type" if "type" in rope[key] else "rope_type"
    assert problem.key_path == (key, kind)
    assert "RoPE type not supported" in problem.message
    assert problem.found == repr(rope[key][kind]) and problem.accepted == "default, linear"
    assert problem.location.line is not None


def test_unsupported_rope_setting(tmp_path: Path) -> None:
    rope = {"rope_theta": 1e4, "rope_type": "default", "mrope_section": [1, 2]}
    problem = _bad(tmp_path, "llama-2-7b", rope_theta=..., rope_parameters=rope).first
    assert problem.key_path == ("rope_parameters", "mrope_section")


def test_conflicting_rope_theta(tmp_path: Path) -> None:
    problem = _bad(tmp_path, "llama-2-7b", rope_parameters={"rope_theta": 5e5}).first
    assert "disagree" in problem.message and problem.key_path == ("rope_theta",)


def test_partial_rotary_factor_on_llama(tmp_path: Path) -> None:
    problem = _bad(tmp_path, "llama-2-7b", partial_rotary_factor=0.5).first
    assert problem.key_path == ("partial_rotary_factor",)
    assert "llama" in problem.message


def test_qk_layernorm(tmp_path: Path) -> None:
    problem = _bad(tmp_path, "phi-2", qk_layernorm=True).first
    assert problem.key_path == ("qk_layernorm",)
    assert "qk_layernorm" in problem.message and problem.found == "True"


@pytest.mark.parametrize(
    ("base", "key", "value", "words"),
    [
        ("gpt2", "scale_attn_by_inverse_layer_idx", True, "per-layer attention scale"),
        ("gpt2", "scale_attn_weights", False, "scale"),
        ("gpt2", "n_ctx", 512, "n_ctx"),
        ("gpt2", "add_cross_attention", True, "cross-attention"),
        ("bert-base-uncased", "position_embedding_type", "relative_key", "relative"),
        ("bert-base-uncased", "is_decoder", True, "decoder"),
        ("opt-125m", "word_embed_proj_dim", 512, "word_embed_proj_dim"),
        ("opt-125m", "layer_norm_elementwise_affine", False, "gain"),
        ("gemma-2b", "use_bidirectional_attention", True, "bidirectional"),
        ("gemma-2b", "hidden_activation", "gelu", "different activations"),
        ("llama-2-7b", "hidden_act", "relu6", "activation not supported"),
        ("llama-2-7b", "pruned_heads", {"0": [1]}, "pruned"),
        ("llama-2-7b", "hidden_size", "4096", "expected an integer"),
        ("llama-2-7b", "hidden_size", ..., "required key is missing"),
        ("pythia-160m", "rope_theta", 10000.0, "key not known"),
        ("mistral-7b-v0.1", "quantization_config", {"bits": 4}, "key not known"),
    ],
)
def test_unsupported_values(tmp_path: Path, base: str, key: str, value: Any, words: str) -> None:
    problem = _bad(tmp_path, base, **{key: value}).first
    assert problem.key_path == (key,)
    assert words in problem.message


def test_every_unknown_key_is_listed(tmp_path: Path) -> None:
    error = _bad(tmp_path, "llama-2-7b", foo=1, bar="x")
    assert [p.key_path for p in error.problems] == [("foo",), ("bar",)]


def test_spec_rules_point_into_the_config(tmp_path: Path) -> None:
    problem = _bad(tmp_path, "mistral-7b-v0.1", num_key_value_heads=5).first
    assert problem.key_path == ("num_key_value_heads",)
    assert "architecture.attention.kv_heads" in problem.message
    text = (tmp_path / "config.json").read_text().splitlines()
    assert problem.location.line is not None and problem.location.column is not None
    line = text[problem.location.line - 1]
    assert line[problem.location.column - 1 :].startswith("5")


def test_malformed_json(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{\n  "model_type": "gpt2",\n  "n_embd": ,\n}\n')
    problem = _error(path).first
    assert "malformed JSON" in problem.message
    assert (problem.location.file, problem.location.line, problem.location.column) == (
        str(path),
        3,
        13,
    )
    assert str(_error(path)).startswith(f"{path}:3:13: malformed JSON")


def test_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("[1, 2]\n")
    assert "JSON object" in _error(path).first.message


def test_missing_file(tmp_path: Path) -> None:
    problem = _error(tmp_path / "nope" / "config.json").first
    assert problem.message == "file not found"
    assert problem.location.file == str(tmp_path / "nope" / "config.json")


def test_directory_without_config(tmp_path: Path) -> None:
    problem = _error(tmp_path).first
    assert "no config.json" in problem.message
    assert problem.location.file == str(tmp_path)


def test_importer_does_not_import_transformers() -> None:
    for file in (ROOT / "symcomp" / "hf").glob("config_*.py"):
        source = file.read_text()
        assert "import transformers" not in source and "from transformers" not in source, file
