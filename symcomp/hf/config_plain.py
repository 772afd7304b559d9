"""Builders of StarCoder2, GPTBigCode, Phi-3, StableLM, GPT-J, Falcon, MPT and BLOOM (see
:mod:`.config_families`): each maps the family's keys onto the spec, with the defaults of the
transformers 5 configuration and modeling code, and refuses, naming the key and the missing
feature, any value whose function a spec cannot express."""

from __future__ import annotations

import math
from typing import Any

from symcomp.hf.config_pieces import _activation, _attention, _layernorm, _rope, _RopeKeys, _sizes
from symcomp.hf.config_reader import _Config, _never_changes_function, _short

# --- StarCoder2 ------------------------------------------------------------------------------


def _starcoder2(c: _Config) -> dict[str, Any]:
    # Starcoder2 always builds LayerNorms and an ungated MLP (c_fc, act, c_proj): the original
    # training code's norm_type and mlp_type must name those (transformers ignores them).
    c.require("norm_type", "layer_norm", "transformers' Starcoder2 always builds a LayerNorm")
    c.require("mlp_type", "default", "transformers' Starcoder2 always builds an ungated MLP")
    # use_bias switches the biases of q, k, v, o, c_fc and c_proj; the LayerNorms keep theirs.
    bias = c.flag("use_bias", True)
    # Starcoder2Attention sizes heads from hidden_size / num_attention_heads (no head_dim key).
    attention = _attention(
        c, bias=bias, kv_default=2, sliding_window=c.optional_integer("sliding_window", None)
    )
    return {
        "kind": "causal_lm",
        **_sizes(c),
        "block": "pre_norm",
        "norm": _starcoder2_norm(c),
        "attention": attention,
        "positions": _rope(c, _RopeKeys(partial=False)),
        "mlp": {
            "hidden": c.integer("intermediate_size"),
            "activation": _activation(c, "hidden_act", "gelu_pytorch_tanh"),
            "bias": bias,
        },
        "embeddings": {"tied": c.flag("tie_word_embeddings", True)},
    }


def _starcoder2_norm(c: _Config) -> dict[str, Any]:
    """Starcoder2 reads norm_epsilon; released configs may also carry layer_norm_epsilon, which
    transformers never reads for Starcoder2. Where both are set they must agree."""
    norm = _layernorm(c, "norm_epsilon", 1e-5)
    if c.present("layer_norm_epsilon"):
        other = c.number("layer_norm_epsilon")
        if other != norm["eps"]:
            raise c.error(
                "layer_norm_epsilon and norm_epsilon (the one transformers reads for "
                "Starcoder2) differ",
                ("layer_norm_epsilon",),
                found=f"{other!r} and {norm['eps']!r}",
                accepted="equal values, or only norm_epsilon",
            )
    return norm


# --- GPTBigCode ------------------------------------------------------------------------------


def _gpt_bigcode(c: _Config) -> dict[str, Any]:
    c.require(
        "scale_attn_weights",
        True,
        "attention without the 1/sqrt(head width) scale is not supported",
    )
    sizes = _sizes(c, ("n_embd", "hidden_size"), ("n_layer", "num_hidden_layers"), _NPOS)
    heads = c.positive("n_head", "num_attention_heads")
    # multi_query: one key/value head shared by every query head (MQA).
    multi_query = c.flag("multi_query", True)
    return {
        "kind": "causal_lm",
        **sizes,
        "block": "pre_norm",
        "norm": _layernorm(c, "layer_norm_epsilon", 1e-5),
        "attention": {"heads": heads, "kv_heads": 1 if multi_query else heads, "bias": True},
        "positions": {"type": "learned"},
        "mlp": {
            # GPTBigCodeBlock: inner_dim = n_inner if set, else 4 * width.
            "hidden": c.integer("n_inner", default=4 * sizes["width"]),
            "activation": _activation(c, "activation_function", "gelu_pytorch_tanh"),
            "bias": True,
        },
        "embeddings": {"tied": c.flag("tie_word_embeddings", True)},
    }


_NPOS = ("n_positions", "max_position_embeddings")

# --- Phi-3 -----------------------------------------------------------------------------------


def _phi3(c: _Config) -> dict[str, Any]:
    c.require(
        "attention_bias",
        False,
        "transformers' Phi-3 builds no attention biases (attention_bias true is ignored)",
    )
    attention = _attention(c, bias=False, sliding_window=c.optional_integer("sliding_window", None))
    return {
        "kind": "causal_lm",
        **_sizes(c),
        "block": "pre_norm",
        "norm": {"type": "rmsnorm", "eps": c.number("rms_norm_eps", 1e-5)},
        "attention": attention,
        # Phi3RotaryEmbedding rotates int(head_dim * partial_rotary_factor) dims (default 1).
        "positions": _rope(c, _RopeKeys()),
        "mlp": {
            "hidden": c.integer("intermediate_size"),
            "activation": _activation(c, "hidden_act", "silu"),
            "gated": True,
            "bias": False,
        },
        "embeddings": {"tied": c.flag("tie_word_embeddings", False)},
    }


# --- StableLM --------------------------------------------------------------------------------


def _stablelm(c: _Config) -> dict[str, Any]:
    c.require(
        "qk_layernorm",
        False,
        "StableLM's qk_layernorm (a LayerNorm on each query and key head) needs QK-norm, which "
        "the spec language does not have yet",
    )
    # use_parallel_residual: x + attn(ln(x)) + mlp(ln(x)), one input_layernorm for both.
    parallel = c.flag("use_parallel_residual", False)
    # use_qkv_bias: biases on q, k, v; o_proj and the MLP never have one.
    qkv = c.flag("use_qkv_bias", False)
    return {
        "kind": "causal_lm",
        **_sizes(c),
        "block": "parallel_one_norm" if parallel else "pre_norm",
        "norm": _layernorm(c, "layer_norm_eps", 1e-5),
        # StableLmAttention sizes heads from hidden_size / num_attention_heads.
        "attention": {
            "heads": c.integer("num_attention_heads"),
            "kv_heads": c.integer("num_key_value_heads", default=c.integer("num_attention_heads")),
            "bias": {"q": qkv, "k": qkv, "v": qkv, "o": False},
        },
        # StableLmConfig defaults partial_rotary_factor to 0.25.
        "positions": _rope(c, _RopeKeys(default_fraction=0.25)),
        "mlp": {
            "hidden": c.integer("intermediate_size"),
            "activation": _activation(c, "hidden_act", "silu"),
            "gated": True,
            "bias": False,
        },
        "embeddings": {"tied": c.flag("tie_word_embeddings", False)},
    }


# --- GPT-J -----------------------------------------------------------------------------------


def _gptj(c: _Config) -> dict[str, Any]:
    # keys of the original (mesh-transformer-jax) model that transformers' GPT-J never reads: it
    # always rotates and always scales by 1/sqrt(head width), so only those values are accepted.
    c.require("rotary", True, "transformers' GPT-J always applies rotary embeddings")
    c.require(
        "scale_attn_weights",
        True,
        "transformers' GPT-J always scales attention by 1/sqrt(head width)",
    )
    sizes = _sizes(c, ("n_embd", "hidden_size"), ("n_layer", "num_hidden_layers"), _NPOS)
    heads = c.positive("n_head", "num_attention_heads")
    return {
        "kind": "causal_lm",
        **sizes,
        # GPTJBlock: one ln_1 feeds both attention and MLP.
        "block": "parallel_one_norm",
        "norm": _layernorm(c, "layer_norm_epsilon", 1e-5),
        "attention": {"heads": heads, "bias": False},
        "positions": _gptj_rope(c, sizes["width"], heads),
        "mlp": {
            # GPTJBlock: inner_dim = n_inner if set, else 4 * width.
            "hidden": c.integer("n_inner", default=4 * sizes["width"]),
            "activation": _activation(c, "activation_function", "gelu_new"),
            "bias": True,
        },
        # GPTJForCausalLM's lm_head has a bias.
        "embeddings": {"tied": c.flag("tie_word_embeddings", False), "unembedding_bias": True},
    }


def _gptj_rope(c: _Config, width: int, heads: int) -> dict[str, Any]:
    """GPT-J rotates the first rotary_dim dims of each head in adjacent pairs (rotate_every_two),
    base 10000 (fixed in create_sinusoidal_positions)."""
    head_width = width // heads
    # rotary_dim null makes transformers build a table as wide as the model, which only fits a
    # single head: refused with any other value out of range.
    rotary = c.integer("rotary_dim", default=64)
    if not 0 < rotary <= head_width or rotary % 2:
        raise c.error(
            "rotary_dim must be an even number of dims within one head",
            ("rotary_dim",),
            found=str(rotary),
            accepted=f"an even integer from 2 to {head_width} (n_embd / n_head)",
        )
    return {
        "type": "rope",
        "base": 10000.0,
        "rotated_fraction": rotary / head_width,
        "pair_layout": "adjacent",
    }


# --- Falcon ----------------------------------------------------------------------------------


def _falcon(c: _Config) -> dict[str, Any]:
    # FalconConfig defaults max_position_embeddings to 2048 (falcon-7b's config has none).
    sizes = _sizes(c, ("hidden_size", "n_embed"), positions_default=2048)
    heads = c.integer("num_attention_heads")
    # a key of the original RW code that transformers' Falcon never reads: it always adds the
    # residual taken before the norm.
    c.require(
        "apply_residual_connection_post_layernorm",
        False,
        "a residual taken after the norm (apply_residual_connection_post_layernorm) is not "
        "supported (and transformers' Falcon ignores it)",
    )
    new = c.flag("new_decoder_architecture", False)
    multi_query = c.flag("multi_query", True)
    parallel = c.flag("parallel_attn", True)
    # FalconDecoderLayer: new_decoder_architecture defaults num_ln_in_parallel_attn to 2.
    norms = c.integer("num_ln_in_parallel_attn", default=2 if new else 1)
    _falcon_checks(c, new, parallel, norms)
    if new:
        kv = c.integer("num_kv_heads", default=heads)
    else:  # multi_query: one key/value head; otherwise q, k, v interleaved per head
        kv = 1 if multi_query else heads
        given = c.integer("num_kv_heads", default=heads)
        if not multi_query and given != heads:
            # the per-head [h, 3, k] split makes h key/value heads; transformers would then
            # repeat them num_heads / num_kv_heads times and fail
            raise c.error(
                "num_kv_heads differs from num_attention_heads without "
                "new_decoder_architecture or multi_query: transformers' Falcon cannot run it",
                ("num_kv_heads",),
                found=str(given),
                accepted=f"{heads} (num_attention_heads) or null",
            )
    block = (
        "pre_norm"
        if not parallel
        else ("parallel_two_norms" if norms == 2 else "parallel_one_norm")
    )
    bias = c.flag("bias", False)
    return {
        "kind": "causal_lm",
        **sizes,
        "block": block,
        "norm": _layernorm(c, "layer_norm_epsilon", 1e-5),
        # FalconAttention sizes heads from hidden_size / num_attention_heads.
        "attention": {"heads": heads, "kv_heads": kv, "bias": bias},
        "positions": _falcon_positions(c),
        "mlp": {
            "hidden": c.integer("ffn_hidden_size", default=4 * sizes["width"]),
            "activation": _activation(c, "activation", "gelu"),
            "bias": bias,
        },
        "embeddings": {"tied": c.flag("tie_word_embeddings", True)},
    }


def _falcon_positions(c: _Config) -> dict[str, Any]:
    if not c.flag("alibi", False):
        return _rope(c, _RopeKeys(partial=False))
    # FalconModel adds the ALiBi bias to q k^T before the 1/sqrt(head_dim) scale (so the
    # slopes are scaled too) and never applies its rotary embedding. (It rounds slope * position
    # to bfloat16, which is exact for power-of-two head counts: their slopes are powers of 2.)
    for key in ("rope_parameters", "rope_scaling", "rope_theta"):
        c.raw(key)
    return {"type": "alibi", "scaled": True}


def _falcon_checks(c: _Config, new: bool, parallel: bool, norms: int) -> None:
    """The combinations FalconDecoderLayer builds and runs (the others raise in transformers)."""
    if norms not in (1, 2):
        raise c.error(
            "num_ln_in_parallel_attn not supported",
            ("num_ln_in_parallel_attn",),
            found=str(norms),
            accepted="1 or 2",
        )
    if new and not parallel:
        raise c.error(
            "new_decoder_architecture without parallel_attn: transformers' Falcon cannot run it",
            ("parallel_attn",),
            found="false",
            accepted="true (or new_decoder_architecture false)",
        )
    if not new and parallel and norms == 2:
        raise c.error(
            "two parallel norms need new_decoder_architecture: transformers' Falcon cannot run "
            "this combination",
            ("num_ln_in_parallel_attn",),
            found="2",
            accepted="1 or null (or new_decoder_architecture true)",
        )


# --- MPT -------------------------------------------------------------------------------------


def _mpt(c: _Config) -> dict[str, Any]:
    # transformers' MPT always builds: ALiBi (slopes of alibi_bias_max 8), LayerNorms without
    # bias, no linear biases, an MLP of 4 * d_model with exact GELU. Keys that would ask the
    # original MPT for anything else are ignored by transformers, so they are refused here.
    c.require("expansion_ratio", 4, "transformers' MPT always builds an MLP of 4 * d_model")
    c.require("no_bias", True, "transformers' MPT builds no biases (no_bias false is ignored)")
    if c.present("logit_scale"):
        raise c.error(
            "a logit scale is not supported (and transformers' MPT ignores it)",
            ("logit_scale",),
            found=_short(c.data["logit_scale"]),
            accepted="null",
        )
    norm_type = c.text("norm_type", "low_precision_layernorm")
    if norm_type not in ("low_precision_layernorm", "layernorm"):
        raise c.error(
            "norm type not supported (transformers' MPT always builds a LayerNorm)",
            ("norm_type",),
            found=_short(norm_type),
            accepted="low_precision_layernorm, layernorm",
        )
    sizes = _sizes(
        c, ("d_model", "hidden_size"), ("n_layers", "num_hidden_layers"), ("max_seq_len",)
    )
    heads = c.positive("n_heads", "num_attention_heads")
    _mpt_attn_config(c, sizes["width"] // heads)
    return {
        "kind": "causal_lm",
        **sizes,
        "block": "pre_norm",
        "norm": {**_layernorm(c, "layer_norm_epsilon", 1e-5), "bias": False},
        "attention": {"heads": heads, "bias": False},
        "positions": {"type": "alibi"},
        "mlp": {"hidden": 4 * sizes["width"], "activation": "gelu", "bias": False},
        "embeddings": {"tied": c.flag("tie_word_embeddings", True)},
    }


# attn_config keys and the only value whose function transformers' MPT computes (None: any).
_MPT_ATTN: dict[str, tuple[Any, str]] = {
    "attn_type": ("multihead_attention", "multi-query MPT attention is not supported"),
    "clip_qkv": (None, "clipping q, k and v (clip_qkv) is not supported"),
    "prefix_lm": (False, "prefix-LM attention is not supported"),
    "qk_ln": (
        False,
        "MPT's qk_ln (LayerNorms on queries and keys) needs QK-norm, which the "
        "spec language does not have yet (and transformers' MPT ignores it)",
    ),
    "attn_uses_sequence_id": (False, "attention within sequence ids is not supported"),
    "alibi": (True, "transformers' MPT always uses ALiBi (alibi false is ignored)"),
    "alibi_bias_max": (8, "transformers' MPT always uses the ALiBi slopes of alibi_bias_max 8"),
}
# attn_config keys that change nothing: the kernel choice, dropout, and the bookkeeping that a
# saved sub-config carries.
_MPT_ATTN_IGNORED = frozenset({"attn_impl", "attn_pdrop", "model_type", "is_encoder_decoder"})


def _mpt_attn_config(c: _Config, head_width: int) -> None:
    attn = c.get("attn_config", {})
    if not isinstance(attn, dict):
        raise c.error("expected an object", ("attn_config",), found=_short(attn))
    for key, value in attn.items():
        path = ("attn_config", key)
        if value is None or key in _MPT_ATTN_IGNORED or _never_changes_function(key):
            continue
        if key == "softmax_scale":
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isclose(value, head_width**-0.5, rel_tol=1e-12)
            ):
                raise c.error(
                    "an attention scale other than 1/sqrt(head width) is not supported",
                    path,
                    found=_short(value),
                    accepted=f"null or {head_width**-0.5!r}",
                )
            continue
        if key not in _MPT_ATTN:
            raise c.error(
                "attn_config key not known: symcomp cannot tell whether it changes the function",
                path,
                found=_short(value),
                accepted=", ".join(sorted({*_MPT_ATTN, "softmax_scale", *_MPT_ATTN_IGNORED})),
            )
        expected, message = _MPT_ATTN[key]
        if expected is None or type(value) is not type(expected) or value != expected:
            raise c.error(message, path, found=_short(value), accepted=repr(expected))


# --- BLOOM -----------------------------------------------------------------------------------


def _bloom(c: _Config) -> dict[str, Any]:
    c.require(
        "apply_residual_connection_post_layernorm",
        False,
        "a residual taken after the norm (apply_residual_connection_post_layernorm) is not "
        "supported",
    )
    width = c.integer("hidden_size", "n_embed")
    return {
        "kind": "causal_lm",
        "vocab_size": c.integer("vocab_size"),
        # ALiBi sets no limit and BloomConfig has no key for one: seq_length where a config
        # has it, else BLOOM's training context of 2048.
        "max_positions": c.integer("seq_length", default=2048),
        "width": width,
        "layers": c.integer("n_layer", "num_hidden_layers"),
        "block": "pre_norm",
        "norm": _layernorm(c, "layer_norm_epsilon", 1e-5),
        # BloomModel: word_embeddings_layernorm right after the embeddings.
        "embedding_norm": True,
        "attention": {"heads": c.integer("n_head", "num_attention_heads"), "bias": True},
        "positions": {"type": "alibi"},
        # BloomMLP: 4 * hidden_size, bloom_gelu_forward (the tanh approximation, with sqrt(2/pi)
        # written 0.79788456).
        "mlp": {"hidden": 4 * width, "activation": "gelu_tanh_bloom", "bias": True},
        "embeddings": {"tied": c.flag("tie_word_embeddings", True)},
    }


# --- the registry ----------------------------------------------------------------------------

_CAUSAL = frozenset({"is_decoder"})

# GPT2DoubleHeadsModel-style sequence-summary head (a classification head, not the LM).
_SUMMARY = frozenset(
    {"summary_type", "summary_use_proj", "summary_activation", "summary_proj_to_labels"}
)

PLAIN_FAMILIES: dict[str, tuple[Any, frozenset[str]]] = {
    "starcoder2": (_starcoder2, _CAUSAL),
    # attention_softmax_in_fp32 / scale_attention_softmax_in_fp32: the eager softmax's precision
    # only; num_key_value_heads: GPTBigCodeConfig recomputes it from multi_query.
    "gpt_bigcode": (
        _gpt_bigcode,
        _CAUSAL
        | {
            "attention_softmax_in_fp32",
            "scale_attention_softmax_in_fp32",
            "num_key_value_heads",
        }
        | _SUMMARY
        # the inference runner of BigCode's transformers fork (CUDA graphs, a preallocated and
        # padded KV cache, input checks): transformers never reads them, the values are the same
        | {
            "inference_runner",
            "max_batch_size",
            "max_sequence_length",
            "pad_key_length",
            "pre_allocate_kv_cache",
            "validate_runner_input",
        },
    ),
    # original_max_position_embeddings: read by the longrope scaling only, which is refused.
    "phi3": (_phi3, _CAUSAL | {"original_max_position_embeddings"}),
    "stablelm": (_stablelm, _CAUSAL),
    "gptj": (_gptj, _CAUSAL | _SUMMARY),
    # num_key_value_heads: FalconConfig recomputes it from the keys read here.
    "falcon": (_falcon, _CAUSAL | {"num_key_value_heads"}),
    # learned_pos_emb: transformers' MPT never builds a position table; embedding_fraction
    # scales gradients only; init_device: where the weights are first allocated;
    # init_config: the initialisation for training; tokenizer_name: the tokenizer; verbose: logging.
    "mpt": (
        _mpt,
        _CAUSAL
        | {
            "learned_pos_emb",
            "embedding_fraction",
            "init_device",
            "init_config",
            "tokenizer_name",
            "verbose",
        },
    ),
    # pretraining_tp / slow_but_exact: the same matmuls sliced as in tensor-parallel training;
    # the Megatron-DeepSpeed training flags, which transformers' BLOOM never reads: kernel
    # fusions (masked_softmax_fusion, skip_bias_add, skip_bias_add_qkv), the softmax's precision
    # (attention_softmax_in_fp32) and offset_alibi.
    "bloom": (
        _bloom,
        _CAUSAL
        | {
            "pretraining_tp",
            "slow_but_exact",
            "attention_softmax_in_fp32",
            "masked_softmax_fusion",
            "skip_bias_add",
            "skip_bias_add_qkv",
            "offset_alibi",
        },
    ),
}
"""model_type -> (builder, the family's keys that change nothing)."""
