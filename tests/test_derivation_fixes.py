"""Issue 24, fixes to the derivation and the chart, checked against transformers itself.

- A LayerNorm with a bias whose readers have none (StableLM, GPT-J, Falcon shapes): the readers
  share one shift of the norm bias, and a bias-free W_K or W_V reading it moves like a key or
  value bias would;
- Bloom's embedding LayerNorm: its bias is a stream writer, centred along 1;
- ALiBi: no head permutation (every head has its own slope);
- untied GPT-2 and OPT at sizes the other tests never use: ``reduce --hf`` writes a reduced model
  that reproduces transformers.

Each count is compared with the Jacobian nullity of the transformers model (float64, random
parameters) of the same tiny structure, written here by hand in the spec language.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch
import transformers

from symcomp.ir.graph import build_graph
from symcomp.pipeline import analyze
from symcomp.spec.loader import spec_from_data
from symcomp.symmetry.catalogue import derive_groups
from symcomp.verify.nullity import measure_nullity, randomize_

try:
    import hf_families
    import hf_tiny
except ImportError:  # tests/ became a package
    from tests import hf_families, hf_tiny

V, T = hf_families.V, hf_families.T


def _spec(name: str, **arch):
    base = {
        "kind": "causal_lm",
        "vocab_size": V,
        "max_positions": T,
        "width": 8,
        "layers": 1,
        "norm": {"type": "layernorm", "eps": 0.1},
    }
    return spec_from_data({"name": name, "architecture": {**base, **arch}})


# (spec, transformers config) of each shape
SHAPES = {
    # pre-norm; q, k, v, gate, up without biases, partial rotary
    "stablelm": (
        lambda: _spec(
            "tiny-stablelm",
            block="pre_norm",
            attention={"heads": 2, "bias": False},
            positions={"type": "rope", "base": 10.0, "rotated_fraction": 0.5},
            mlp={"hidden": 12, "activation": "silu", "gated": True, "bias": False},
            embeddings={"tied": False},
        ),
        lambda: hf_families.config(
            "stablelm",
            hidden_size=8,
            intermediate_size=12,
            num_attention_heads=2,
            num_key_value_heads=2,
            hidden_act="silu",
            layer_norm_eps=0.1,
            tie_word_embeddings=False,
            rope_parameters=hf_families.rope(0.5),
            use_qkv_bias=False,
        ),
    ),
    # one shared norm; attention without biases, the MLP and the unembedding with
    "gptj": (
        lambda: _spec(
            "tiny-gptj",
            block="parallel_one_norm",
            attention={"heads": 2, "bias": False},
            positions={
                "type": "rope",
                "base": 10000.0,
                "rotated_fraction": 0.5,
                "pair_layout": "adjacent",
            },
            mlp={"hidden": 12, "activation": "gelu_tanh", "bias": True},
            embeddings={"tied": False, "unembedding_bias": True},
        ),
        lambda: hf_families.config(
            "gptj",
            n_embd=8,
            n_head=2,
            rotary_dim=2,
            n_inner=12,
            layer_norm_epsilon=0.1,
            tie_word_embeddings=False,
            n_positions=T,
            n_layer=1,
        ),
    ),
    # one shared norm, no biases at all, multi-query attention
    "falcon": (
        lambda: _spec(
            "tiny-falcon",
            block="parallel_one_norm",
            attention={"heads": 2, "kv_heads": 1, "bias": False},
            positions={"type": "rope", "base": 10.0},
            mlp={"hidden": 12, "activation": "gelu", "bias": False},
            embeddings={"tied": False},
        ),
        lambda: hf_families.config(
            "falcon",
            hidden_size=8,
            num_attention_heads=2,
            ffn_hidden_size=12,
            layer_norm_epsilon=0.1,
            multi_query=True,
            parallel_attn=True,
            bias=False,
            alibi=False,
            new_decoder_architecture=False,
            tie_word_embeddings=False,
            rope_parameters=hf_families.rope(),
        ),
    ),
    # an embedding LayerNorm, ALiBi, tied embeddings (Bloom's MLP is 4 d wide)
    "bloom": (
        lambda: _spec(
            "tiny-bloom",
            block="pre_norm",
            embedding_norm=True,
            attention={"heads": 2, "bias": True},
            positions={"type": "alibi"},
            mlp={"hidden": 32, "activation": "gelu_tanh", "bias": True},
            embeddings={"tied": True},
        ),
        lambda: hf_families.config(
            "bloom",
            hidden_size=8,
            n_head=2,
            n_layer=1,
            layer_norm_epsilon=0.1,
            tie_word_embeddings=True,
        ),
    ),
}


def _bloom_float64(monkeypatch) -> None:
    """Bloom has no SDPA path: its eager softmax runs in float32, and its GeLU is an
    autograd.Function that forward-mode AD cannot go through. Both in float64, same formulas."""
    import transformers.models.bloom.modeling_bloom as bloom

    class _F:
        def __getattr__(self, name):
            return getattr(torch.nn.functional, name)

        @staticmethod
        def softmax(x, dim=-1, dtype=None):
            return torch.nn.functional.softmax(x, dim=dim)

    monkeypatch.setattr(bloom, "F", _F())
    monkeypatch.setattr(bloom.BloomGelu, "forward", lambda self, x: bloom.bloom_gelu_forward(x))


def _model(name: str, monkeypatch):
    cfg = SHAPES[name][1]()
    if name == "bloom":
        _bloom_float64(monkeypatch)
        model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
    else:
        model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa")
    model = model.to(torch.float64).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.LayerNorm):
            module.eps = 0.1
    randomize_(model, torch.Generator().manual_seed(0))
    return model


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("stablelm", marks=pytest.mark.slow),
        "gptj",
        "falcon",
        "bloom",
    ],
)
def test_count_is_the_nullity_of_transformers(name, monkeypatch):
    spec = SHAPES[name][0]()
    model = _model(name, monkeypatch)
    params = hf_tiny.hf_params(model)
    assert sum(p.numel() for p in params.values()) == analyze(spec).parameters
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        measurement, _ = measure_nullity(
            hf_tiny.logprob_fn(model),
            params,
            vocab=V,
            seq_len=T,
            generator=torch.Generator().manual_seed(7),
        )
    finally:
        torch.set_num_threads(threads)
    assert measurement.trustworthy, measurement.report.summary()
    assert analyze(spec).redundant == measurement.nullity


def test_bias_free_readers_share_one_norm_bias_shift():
    """Falcon's shared norm has four bias-free readers (q, k, v, up): one d-dimensional shift,
    not four."""
    groups = derive_groups(build_graph(SHAPES["falcon"][0]()))
    shifts = [g for g in groups.groups if g.group.name.startswith("norm_bias_centering")]
    assert [g.acts_on for g in shifts] == [
        "layers.*.norm.bias and its readers",
        "final_norm.bias and its readers",
    ]
    assert not any(g.name == "reader_centering" and "W_Q" in g.acts_on for g in groups.groups)


def test_alibi_has_no_head_permutation_and_verify_agrees():
    spec = SHAPES["bloom"][0]()
    names = {g.name for g in derive_groups(build_graph(spec)).groups}
    assert "head_permutation" not in names and "neuron_permutation" in names
    # RoPE treats every head alike: the permutation stays
    assert "head_permutation" in {
        g.name for g in derive_groups(build_graph(SHAPES["gptj"][0]())).groups
    }


# --- untied GPT-2 and OPT at sizes no other test uses ---------------------------------------


def _untied(kind: str, vocab: int) -> transformers.PretrainedConfig:
    common = dict(
        vocab_size=vocab, bos_token_id=None, eos_token_id=None, pad_token_id=None,
        tie_word_embeddings=False,
    )  # fmt: skip
    if kind == "gpt2":
        return transformers.GPT2Config(
            n_positions=5, n_embd=12, n_layer=2, n_head=3, n_inner=20,
            activation_function="gelu_new", layer_norm_epsilon=0.1, **common,
        )  # fmt: skip
    return transformers.OPTConfig(
        hidden_size=12, num_hidden_layers=2, ffn_dim=20, max_position_embeddings=5,
        do_layer_norm_before=True, word_embed_proj_dim=12, num_attention_heads=3,
        activation_function="gelu", enable_bias=True, **common,
    )  # fmt: skip


def _reduce_untied(kind: str, run_cli, tmp_path: Path) -> None:
    vocab = 13  # just above the width: a small vocabulary
    model = transformers.AutoModelForCausalLM.from_config(_untied(kind, vocab))
    model = model.to(torch.float64).eval()
    randomize_(model, torch.Generator().manual_seed(0))
    model.save_pretrained(tmp_path / "ckpt")
    out = tmp_path / f"reduced_untied_{kind}"
    code, stdout, stderr = run_cli("reduce", "--hf", str(tmp_path / "ckpt"), "-o", str(out))
    assert code == 0, stderr + stdout
    assert (out / "reduced.py").exists()
    sys.path.insert(0, str(tmp_path))
    try:
        pkg = importlib.import_module(out.name)
    finally:
        sys.path.remove(str(tmp_path))
    ids = torch.randint(0, vocab, (3, 5), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = torch.log_softmax(model(input_ids=ids).logits, dim=-1)
        for cls in (pkg.Model, pkg.ReducedModel):
            got = cls.from_pretrained(out).log_probs(ids)
            assert float((got - expected).abs().max()) <= 1e-10


def test_untied_gpt2_reduces_at_new_sizes(run_cli, tmp_path):
    _reduce_untied("gpt2", run_cli, tmp_path)


@pytest.mark.slow
def test_untied_opt_reduces_at_new_sizes(run_cli, tmp_path):
    _reduce_untied("opt", run_cli, tmp_path)
