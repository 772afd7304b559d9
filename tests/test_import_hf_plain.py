"""import-hf of StarCoder2, GPTBigCode, Phi-3, StableLM, GPT-J, Falcon, MPT and BLOOM: what
each config key becomes, what is refused (one error naming the key and the missing feature),
and every fused checkpoint layout read and written back against transformers' own forward.

(The full check of one tiny config per family, count included, is tests/test_hf_families.py.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers

from symcomp.errors import ImportHFError
from symcomp.hf import import_hf_config
from symcomp.hf.config_plain import PLAIN_FAMILIES
from symcomp.hf.weights import from_hf_state_dict, to_hf_state_dict
from symcomp.ir.graph import build_graph
from symcomp.ir.interpreter import interpret
from symcomp.spec import parameter_count

try:
    import hf_families
except ImportError:  # tests/ became a package
    from tests import hf_families

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PLAIN = sorted(PLAIN_FAMILIES)


def _config(model_type: str, **kw: Any) -> transformers.PretrainedConfig:
    cfg = hf_families.CONFIGS[model_type]()
    for key, value in kw.items():
        setattr(cfg, key, value)
    return cfg


def _save(cfg: transformers.PretrainedConfig, tmp_path: Path) -> Path:
    cfg.save_pretrained(tmp_path)
    return tmp_path


def _refused(tmp_path: Path, model_type: str, **kw: Any) -> Any:
    """The single problem of the tiny config with ``kw`` written into its config.json."""
    file = _save(_config(model_type), tmp_path) / "config.json"
    file.write_text(json.dumps({**json.loads(file.read_text()), **kw}))
    with pytest.raises(ImportHFError) as info:
        import_hf_config(tmp_path)
    assert len(info.value.problems) == 1
    return info.value.problems[0]


@pytest.mark.parametrize("model_type", PLAIN)
def test_transformers_default_config_imports(model_type: str, tmp_path: Path) -> None:
    config = transformers.AutoConfig.for_model(model_type)
    import_hf_config(_save(config, tmp_path))
    # to_dict() carries every PreTrainedConfig key too: each must be classified
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict(), default=str))
    import_hf_config(tmp_path)


@pytest.mark.parametrize("model_type", PLAIN)
def test_parameter_count_is_transformers(model_type: str, tmp_path: Path) -> None:
    cfg = _config(model_type)
    arch = import_hf_config(_save(cfg, tmp_path)).architecture
    model = transformers.AutoModelForCausalLM.from_config(cfg)
    assert parameter_count(arch) == sum(p.numel() for p in model.parameters())


def test_keys_become_the_architecture(tmp_path: Path) -> None:
    arch = import_hf_config(_save(_config("gpt_bigcode"), tmp_path / "a")).architecture
    assert (arch.attention.kv_heads, arch.positions.type) == (1, "learned")
    arch = import_hf_config(_save(_config("gptj"), tmp_path / "b")).architecture
    assert arch.positions.pair_layout == "adjacent" and arch.positions.rotated_fraction == 0.5
    assert arch.block == "parallel_one_norm" and arch.embeddings.unembedding_bias
    arch = import_hf_config(
        _save(_config("stablelm", use_parallel_residual=True, use_qkv_bias=True), tmp_path / "c")
    ).architecture
    assert arch.block == "parallel_one_norm"
    assert (arch.attention.bias.q, arch.attention.bias.o) == (True, False)
    arch = import_hf_config(_save(_config("mpt"), tmp_path / "d")).architecture
    assert (arch.norm.bias, arch.positions.type, arch.mlp.hidden) == (False, "alibi", 32)
    arch = import_hf_config(_save(_config("bloom"), tmp_path / "e")).architecture
    assert arch.embedding_norm and arch.mlp.activation == "gelu_tanh_bloom"


@pytest.mark.parametrize(
    ("model_type", "kw", "path", "words"),
    [
        ("stablelm", {"qk_layernorm": True}, ("qk_layernorm",), "QK-norm"),
        ("falcon", {"parallel_attn": False}, ("parallel_attn",), "cannot run"),
        ("phi3", {"rope_parameters": {"rope_type": "longrope", "rope_theta": 10.0}},
         ("rope_parameters", "rope_type"), "RoPE type not supported"),
        ("gptj", {"rotary_dim": 3}, ("rotary_dim",), "even"),
        ("gptj", {"n_head": 0}, ("n_head",), "positive"),
        ("mpt", {"n_heads": 0}, ("n_heads",), "positive"),
        ("smollm3", {"layer_types": [{"a": 1}]}, ("layer_types",), "layer types"),
        ("gemma2", {"layer_types": [["full_attention"]]}, ("layer_types",), "layer types"),
        ("bloom", {"apply_residual_connection_post_layernorm": True},
         ("apply_residual_connection_post_layernorm",), "residual taken after the norm"),
        ("mpt", {"no_bias": False}, ("no_bias",), "no biases"),
        ("mpt", {"logit_scale": 2.0}, ("logit_scale",), "logit scale"),
        ("gpt_bigcode", {"scale_attn_weights": False}, ("scale_attn_weights",), "scale"),
        ("starcoder2", {"foo": 1}, ("foo",), "key not known"),
    ],
)  # fmt: skip
def test_refused(tmp_path: Path, model_type: str, kw: dict, path: tuple, words: str) -> None:
    problem = _refused(tmp_path, model_type, **kw)
    assert problem.key_path == path and words in problem.message


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [("qk_ln", True, "QK-norm"), ("clip_qkv", 6.0, "clip_qkv"), ("alibi", False, "ALiBi")],
)
def test_mpt_attn_config_refused(tmp_path: Path, key: str, value: Any, words: str) -> None:
    cfg = _config("mpt")
    setattr(cfg.attn_config, key, value)
    with pytest.raises(ImportHFError) as info:
        import_hf_config(_save(cfg, tmp_path))
    problem = info.value.problems[0]
    assert problem.key_path == ("attn_config", key) and words in problem.message


def test_refusal_exits_2(tmp_path: Path, run_cli) -> None:
    code, _, stderr = run_cli(
        "import-hf", str(_save(_config("stablelm", qk_layernorm=True), tmp_path))
    )
    assert code == 2 and "qk_layernorm" in stderr and "Traceback" not in stderr


# Every fused layout (and every layout switch): the interpreter, fed the checkpoint through the
# name table, reproduces transformers; and the table writes the checkpoint back bit for bit.
LAYOUTS = [
    ("gpt_bigcode", {"multi_query": True}),
    ("gpt_bigcode", {"multi_query": False}),
    ("phi3", {}),
    ("falcon", {}),  # new_decoder_architecture, 2 key/value heads of 2 queries, two norms
    ("falcon", {"new_decoder_architecture": False, "multi_query": True, "bias": True,
                "num_ln_in_parallel_attn": None}),
    ("falcon", {"new_decoder_architecture": False, "multi_query": False, "num_kv_heads": 4,
                "parallel_attn": False, "bias": True, "num_ln_in_parallel_attn": None}),
    ("falcon", {"num_ln_in_parallel_attn": 1}),
    ("falcon", {"alibi": True, "new_decoder_architecture": False, "multi_query": False,
                "num_kv_heads": 4, "parallel_attn": False, "bias": True,
                "num_ln_in_parallel_attn": None}),  # falcon-rw: ALiBi, scaled slopes
    ("mpt", {}),
    ("bloom", {}),
    ("stablelm", {"use_parallel_residual": True, "use_qkv_bias": True}),
]  # fmt: skip


@pytest.mark.parametrize(("model_type", "kw"), LAYOUTS)
def test_checkpoint_layouts(model_type: str, kw: dict[str, Any], tmp_path: Path) -> None:
    cfg = _config(model_type, **kw)
    model = hf_families.patch_float64_(hf_families.build(cfg))
    spec = import_hf_config(_save(cfg, tmp_path))
    state = model.state_dict()
    params = from_hf_state_dict(spec, state, model_type)
    back = to_hf_state_dict(spec, params, model_type, state.keys())
    assert back.keys() == state.keys()
    assert all(torch.equal(back[k], state[k]) for k in state)
    ids = torch.randint(
        0, hf_families.V, (2, hf_families.T), generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        expected = torch.log_softmax(model(input_ids=ids).logits, dim=-1)
        got = interpret(build_graph(spec), params, ids)
    assert float((got - expected).abs().max()) <= hf_families.TOL
