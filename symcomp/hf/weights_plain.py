"""Checkpoint name tables of StarCoder2, GPTBigCode, Phi-3, StableLM, GPT-J, Falcon, MPT and
BLOOM (rows as in :mod:`.weights`; the fused layouts ``qkv_rows``, ``qkv_grouped`` and
``gate_up`` are :mod:`.fused`'s).

A table may place one tensor in alternative parameters (Falcon's ``input_layernorm`` is the one
norm of a parallel block or the attention norm of a sequential one): the spec's parameters pick
the one that exists.
"""

from __future__ import annotations

Row = tuple[str, str, str]  # (transformers pattern, our pattern, transform name)


def _linear(hf: str, ours: str, *, bias: bool = True) -> list[Row]:
    """An ``nn.Linear`` ``hf`` (weight and, if ``bias``, bias) holding ``ours`` W_x / b_x."""
    prefix, _, name = ours.rpartition(".")
    rows = [(f"{hf}.weight", f"{prefix}.W_{name}", "transpose")]
    if bias:
        rows.append((f"{hf}.bias", f"{prefix}.b_{name}", "copy"))
    return rows


def _norm(hf: str, ours: str) -> list[Row]:
    return [(f"{hf}.weight", f"{ours}.gain", "copy"), (f"{hf}.bias", f"{ours}.bias", "copy")]


def _fused_qkv(hf: str, layout: str, *, bias: bool = True) -> list[Row]:
    rows = [(f"{hf}.weight", f"layers.{{i}}.attn.W_{p.upper()}", f"{layout}_T.{p}") for p in "qkv"]
    if bias:
        rows += [(f"{hf}.bias", f"layers.{{i}}.attn.b_{p.upper()}", f"{layout}.{p}") for p in "qkv"]
    return rows


_L = "model.layers.{i}"

STARCODER2: list[Row] = [
    ("model.embed_tokens.weight", "embed.W_E", "copy"),
    *_norm(f"{_L}.input_layernorm", "layers.{i}.attn_norm"),
    *_linear(f"{_L}.self_attn.q_proj", "layers.{i}.attn.Q"),
    *_linear(f"{_L}.self_attn.k_proj", "layers.{i}.attn.K"),
    *_linear(f"{_L}.self_attn.v_proj", "layers.{i}.attn.V"),
    *_linear(f"{_L}.self_attn.o_proj", "layers.{i}.attn.O"),
    *_norm(f"{_L}.post_attention_layernorm", "layers.{i}.mlp_norm"),
    *_linear(f"{_L}.mlp.c_fc", "layers.{i}.mlp.up"),
    *_linear(f"{_L}.mlp.c_proj", "layers.{i}.mlp.down"),
    *_norm("model.norm", "final_norm"),
    ("lm_head.weight", "unembed.W_U", "transpose"),
]

_H = "transformer.h.{i}"

GPT_BIGCODE: list[Row] = [
    ("transformer.wte.weight", "embed.W_E", "copy"),
    ("transformer.wpe.weight", "embed.W_P", "copy"),
    *_norm(f"{_H}.ln_1", "layers.{i}.attn_norm"),
    # multi_query: [q | k | v], which is [g, h / g + 2, k] with g = 1; multi-head: per head
    # [h, 3, k], the same with g = h
    *_fused_qkv(f"{_H}.attn.c_attn", "qkv_grouped"),
    *_linear(f"{_H}.attn.c_proj", "layers.{i}.attn.O"),
    *_norm(f"{_H}.ln_2", "layers.{i}.mlp_norm"),
    *_linear(f"{_H}.mlp.c_fc", "layers.{i}.mlp.up"),
    *_linear(f"{_H}.mlp.c_proj", "layers.{i}.mlp.down"),
    *_norm("transformer.ln_f", "final_norm"),
    ("lm_head.weight", "unembed.W_U", "transpose"),
]

PHI3: list[Row] = [
    ("model.embed_tokens.weight", "embed.W_E", "copy"),
    ("model.layers.{i}.input_layernorm.weight", "layers.{i}.attn_norm.gain", "copy"),
    *_fused_qkv(f"{_L}.self_attn.qkv_proj", "qkv_rows", bias=False),
    *_linear(f"{_L}.self_attn.o_proj", "layers.{i}.attn.O", bias=False),
    ("model.layers.{i}.post_attention_layernorm.weight", "layers.{i}.mlp_norm.gain", "copy"),
    (f"{_L}.mlp.gate_up_proj.weight", "layers.{i}.mlp.W_gate", "gate_up_T.gate"),
    (f"{_L}.mlp.gate_up_proj.weight", "layers.{i}.mlp.W_up", "gate_up_T.up"),
    *_linear(f"{_L}.mlp.down_proj", "layers.{i}.mlp.down", bias=False),
    ("model.norm.weight", "final_norm.gain", "copy"),
    ("lm_head.weight", "unembed.W_U", "transpose"),
]

STABLELM: list[Row] = [
    ("model.embed_tokens.weight", "embed.W_E", "copy"),
    # the one norm of a parallel block, or the attention norm of a sequential one
    *_norm(f"{_L}.input_layernorm", "layers.{i}.norm"),
    *_norm(f"{_L}.input_layernorm", "layers.{i}.attn_norm"),
    *_linear(f"{_L}.self_attn.q_proj", "layers.{i}.attn.Q"),
    *_linear(f"{_L}.self_attn.k_proj", "layers.{i}.attn.K"),
    *_linear(f"{_L}.self_attn.v_proj", "layers.{i}.attn.V"),
    *_linear(f"{_L}.self_attn.o_proj", "layers.{i}.attn.O", bias=False),
    *_norm(f"{_L}.post_attention_layernorm", "layers.{i}.mlp_norm"),
    *_linear(f"{_L}.mlp.gate_proj", "layers.{i}.mlp.gate", bias=False),
    *_linear(f"{_L}.mlp.up_proj", "layers.{i}.mlp.up", bias=False),
    *_linear(f"{_L}.mlp.down_proj", "layers.{i}.mlp.down", bias=False),
    *_norm("model.norm", "final_norm"),
    ("lm_head.weight", "unembed.W_U", "transpose"),
]

GPTJ: list[Row] = [
    ("transformer.wte.weight", "embed.W_E", "copy"),
    *_norm(f"{_H}.ln_1", "layers.{i}.norm"),
    *_linear(f"{_H}.attn.q_proj", "layers.{i}.attn.Q", bias=False),
    *_linear(f"{_H}.attn.k_proj", "layers.{i}.attn.K", bias=False),
    *_linear(f"{_H}.attn.v_proj", "layers.{i}.attn.V", bias=False),
    *_linear(f"{_H}.attn.out_proj", "layers.{i}.attn.O", bias=False),
    *_linear(f"{_H}.mlp.fc_in", "layers.{i}.mlp.up"),
    *_linear(f"{_H}.mlp.fc_out", "layers.{i}.mlp.down"),
    *_norm("transformer.ln_f", "final_norm"),
    ("lm_head.weight", "unembed.W_U", "transpose"),
    ("lm_head.bias", "unembed.b_U", "copy"),
]

FALCON: list[Row] = [
    ("transformer.word_embeddings.weight", "embed.W_E", "copy"),
    # the one norm of a parallel block, or the attention norm of a sequential one
    *_norm(f"{_H}.input_layernorm", "layers.{i}.norm"),
    *_norm(f"{_H}.input_layernorm", "layers.{i}.attn_norm"),
    *_norm(f"{_H}.post_attention_layernorm", "layers.{i}.mlp_norm"),
    *_norm(f"{_H}.ln_attn", "layers.{i}.attn_norm"),
    *_norm(f"{_H}.ln_mlp", "layers.{i}.mlp_norm"),
    # new_decoder_architecture: [g, h / g + 2, k]; multi_query: [q | k | v] (g = 1); otherwise
    # per head [h, 3, k] (g = h)
    *_fused_qkv(f"{_H}.self_attention.query_key_value", "qkv_grouped"),
    *_linear(f"{_H}.self_attention.dense", "layers.{i}.attn.O"),
    *_linear(f"{_H}.mlp.dense_h_to_4h", "layers.{i}.mlp.up"),
    *_linear(f"{_H}.mlp.dense_4h_to_h", "layers.{i}.mlp.down"),
    *_norm("transformer.ln_f", "final_norm"),
    ("lm_head.weight", "unembed.W_U", "transpose"),
]

_B = "transformer.blocks.{i}"

MPT: list[Row] = [
    ("transformer.wte.weight", "embed.W_E", "copy"),
    (f"{_B}.norm_1.weight", "layers.{i}.attn_norm.gain", "copy"),
    *_fused_qkv(f"{_B}.attn.Wqkv", "qkv_rows", bias=False),
    *_linear(f"{_B}.attn.out_proj", "layers.{i}.attn.O", bias=False),
    (f"{_B}.norm_2.weight", "layers.{i}.mlp_norm.gain", "copy"),
    *_linear(f"{_B}.ffn.up_proj", "layers.{i}.mlp.up", bias=False),
    *_linear(f"{_B}.ffn.down_proj", "layers.{i}.mlp.down", bias=False),
    ("transformer.norm_f.weight", "final_norm.gain", "copy"),
    ("lm_head.weight", "unembed.W_U", "transpose"),
]

BLOOM: list[Row] = [
    ("transformer.word_embeddings.weight", "embed.W_E", "copy"),
    *_norm("transformer.word_embeddings_layernorm", "embed_norm"),
    *_norm(f"{_H}.input_layernorm", "layers.{i}.attn_norm"),
    # per head [h, 3, k]: qkv_grouped with g = h
    *_fused_qkv(f"{_H}.self_attention.query_key_value", "qkv_grouped"),
    *_linear(f"{_H}.self_attention.dense", "layers.{i}.attn.O"),
    *_norm(f"{_H}.post_attention_layernorm", "layers.{i}.mlp_norm"),
    *_linear(f"{_H}.mlp.dense_h_to_4h", "layers.{i}.mlp.up"),
    *_linear(f"{_H}.mlp.dense_4h_to_h", "layers.{i}.mlp.down"),
    *_norm("transformer.ln_f", "final_norm"),
    ("lm_head.weight", "unembed.W_U", "transpose"),
]

PLAIN_TABLES: dict[str, list[Row]] = {
    "starcoder2": STARCODER2,
    "gpt_bigcode": GPT_BIGCODE,
    "phi3": PHI3,
    "stablelm": STABLELM,
    "gptj": GPTJ,
    "falcon": FALCON,
    "mpt": MPT,
    "bloom": BLOOM,
}
"""model_type -> rows (transformers pattern, our pattern, transform)."""

PLAIN_BUFFERS: dict[str, list[str]] = {
    "starcoder2": [],
    "phi3": [],
    "stablelm": [],
    "falcon": [],
    "mpt": [],
    "bloom": [],
    "gptj": [r"transformer\.h\.\d+\.attn\.bias", r"transformer\.h\.\d+\.attn\.masked_bias"],
    "gpt_bigcode": [r"transformer\.h\.\d+\.attn\.bias", r"transformer\.h\.\d+\.attn\.masked_bias"],
}

PLAIN_BASE_PREFIX: dict[str, str] = {
    "starcoder2": "model.",
    "phi3": "model.",
    "stablelm": "model.",
    "gptj": "transformer.",
    "falcon": "transformer.",
    "mpt": "transformer.",
    "bloom": "transformer.",
    "gpt_bigcode": "transformer.",
}
