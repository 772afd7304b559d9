"""The families that :func:`.config_import.import_hf_config` supports: one builder per
``model_type`` that maps the config's keys onto the spec's architecture, with transformers'
defaults for absent keys, and ``FAMILIES``, each builder with the family's keys that change
nothing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from symcomp.hf import config_norms
from symcomp.hf.config_moe import MIXTRAL_IGNORED, _mixtral
from symcomp.hf.config_pieces import (
    ACTIVATIONS,
    _activation,
    _attention,
    _layernorm,
    _rope,
    _RopeKeys,
    _sizes,
)
from symcomp.hf.config_plain import PLAIN_FAMILIES
from symcomp.hf.config_reader import _Config, _short

# --- the families ----------------------------------------------------------------------------


def _gpt2(c: _Config) -> dict[str, Any]:
    c.require(
        "scale_attn_weights",
        True,
        "attention without the 1/sqrt(head width) scale is not supported",
    )
    c.require(
        "scale_attn_by_inverse_layer_idx",
        False,
        "a per-layer attention scale 1/(layer + 1) is not supported",
    )
    sizes = _sizes(c, ("n_embd", "hidden_size"), ("n_layer", "num_hidden_layers"), _GPT2_POS)
    _gpt2_n_ctx(c, sizes["max_positions"])
    return {
        "kind": "causal_lm",
        **sizes,
        "block": "pre_norm",
        "norm": _layernorm(c, "layer_norm_epsilon", 1e-5),
        "attention": {"heads": c.integer("n_head", "num_attention_heads"), "bias": True},
        "positions": {"type": "learned"},
        "mlp": {
            # GPT2Block: inner_dim = n_inner if set, else 4 * width.
            "hidden": c.integer("n_inner", default=4 * sizes["width"]),
            "activation": _activation(c, "activation_function", "gelu_new"),
            "bias": True,
        },
        "embeddings": {"tied": c.flag("tie_word_embeddings", True)},
    }


_GPT2_POS = ("n_positions", "max_position_embeddings")


def _gpt2_n_ctx(c: _Config, positions: int) -> None:
    # n_ctx is a legacy twin of n_positions that current transformers no longer reads; older
    # versions sized the causal mask with it, so a different value is refused.
    n_ctx = c.get("n_ctx", positions)
    if n_ctx != positions:
        raise c.error(
            "n_ctx differs from n_positions",
            ("n_ctx",),
            found=_short(n_ctx),
            accepted=str(positions),
        )


def _bert(c: _Config) -> dict[str, Any]:
    c.require("is_decoder", False, "BERT as a causal decoder is not supported (masked LM only)")
    c.require(
        "position_embedding_type", "absolute", "relative position embeddings are not supported"
    )
    activation = _activation(c, "hidden_act", "gelu")
    return {
        "kind": "masked_lm",
        **_sizes(c),
        "block": "post_norm",
        "norm": _layernorm(c, "layer_norm_eps", 1e-12),
        "embedding_norm": True,
        "final_norm": False,
        "attention": {"heads": c.integer("num_attention_heads"), "bias": True},
        "positions": {"type": "learned"},
        "mlp": {"hidden": c.integer("intermediate_size"), "activation": activation, "bias": True},
        "embeddings": {
            "tied": c.flag("tie_word_embeddings", True),
            "unembedding_bias": True,
            "token_types": c.integer("type_vocab_size", default=2),
        },
        # BertPredictionHeadTransform: dense, ACT2FN[hidden_act], LayerNorm(layer_norm_eps).
        "prediction_head": {"activation": activation},
    }


# Llama, Mistral, Qwen2, Gemma and SmolLM3 rotate the whole head.
_WHOLE_HEAD = _RopeKeys(partial=False)


def _llama_like(
    c: _Config,
    *,
    attention: dict[str, Any],
    mlp_bias: bool,
    tied_default: bool = False,
    norm: dict[str, Any] | None = None,
    activation: str | None = None,
    rope: _RopeKeys = _WHOLE_HEAD,
) -> dict[str, Any]:
    """Pre-RMSNorm decoder with a gated MLP: act(x W_gate) * (x W_up), then W_down."""
    return {
        "kind": "causal_lm",
        **_sizes(c),
        "block": "pre_norm",
        "norm": norm or {"type": "rmsnorm", "eps": c.number("rms_norm_eps", 1e-6)},
        "attention": attention,
        "positions": _rope(c, rope),
        "mlp": {
            "hidden": c.integer("intermediate_size"),
            "activation": activation or _activation(c, "hidden_act", "silu"),
            "gated": True,
            "bias": mlp_bias,
        },
        "embeddings": {"tied": c.flag("tie_word_embeddings", tied_default)},
    }


def _llama(c: _Config) -> dict[str, Any]:
    # attention_bias covers q, k, v and o alike; mlp_bias the three MLP projections.
    attention = _attention(c, bias=c.flag("attention_bias", False))
    return _llama_like(c, attention=attention, mlp_bias=c.flag("mlp_bias", False))


def _sliding_window(c: _Config) -> int | None:
    # MistralConfig and Qwen2Config default sliding_window to 4096 when the key is absent; an
    # explicit null means full attention.
    if c.raw("sliding_window", 4096) is None:
        return None
    return c.integer("sliding_window", default=4096)


def _mistral(c: _Config) -> dict[str, Any]:
    attention = _attention(c, bias=False, sliding_window=_sliding_window(c))
    return _llama_like(c, attention=attention, mlp_bias=False)


def _qwen2(c: _Config) -> dict[str, Any]:
    # Qwen2Attention: q, k, v projections with bias, o_proj without.
    bias = {"q": True, "k": True, "v": True, "o": False}
    attention = _attention(c, bias=bias, sliding_window=_qwen2_window(c))
    return _llama_like(c, attention=attention, mlp_bias=False)


def _qwen2_window(c: _Config) -> int | None:
    """Qwen2's window applies only with use_sliding_window, and only to some layers.

    Layers are 'sliding_attention' from index max_window_layers on, unless layer_types lists
    them. A spec has one window for every layer, so a mix of both kinds is refused.
    """
    use = c.flag("use_sliding_window", False)
    window = _sliding_window(c)
    max_window_layers = c.integer("max_window_layers", default=28)
    layers = c.integer("num_hidden_layers")
    types = c.layer_types(
        ["sliding_attention" if i >= max_window_layers else "full_attention" for i in range(layers)]
    )
    if not use or window is None:
        return None  # Qwen2Config sets sliding_window to None without use_sliding_window
    kinds = set(types)
    if len(kinds) > 1:
        raise c.error(
            "a sliding window on some layers only is not supported",
            ("layer_types",) if c.present("layer_types") else ("max_window_layers",),
            found=_short(types),
            accepted="every layer sliding (max_window_layers 0) or none",
        )
    return window if kinds == {"sliding_attention"} else None


def _gpt_neox(c: _Config) -> dict[str, Any]:
    # use_parallel_residual: x + attn(ln1(x)) + mlp(ln2(x)); otherwise two pre-norm residuals.
    parallel = c.flag("use_parallel_residual", True)
    # GPT-NeoX keeps its RoPE settings as rotary_emb_base and rotary_pct (default 0.25).
    rope = _RopeKeys(theta=("rotary_emb_base",), fraction=("rotary_pct",), default_fraction=0.25)
    return {
        "kind": "causal_lm",
        **_sizes(c),
        "block": "parallel_two_norms" if parallel else "pre_norm",
        "norm": _layernorm(c, "layer_norm_eps", 1e-5),
        # attention_bias covers the fused query_key_value and the dense output projection.
        "attention": {
            "heads": c.integer("num_attention_heads"),
            "bias": c.flag("attention_bias", True),
        },
        "positions": _rope(c, rope),
        "mlp": {
            "hidden": c.integer("intermediate_size"),
            "activation": _activation(c, "hidden_act", "gelu"),
            "bias": True,
        },
        "embeddings": {"tied": c.flag("tie_word_embeddings", False)},
    }


def _phi(c: _Config) -> dict[str, Any]:
    c.require(
        "qk_layernorm", False, "Phi's qk_layernorm (norms on queries and keys) is not supported"
    )
    return {
        "kind": "causal_lm",
        **_sizes(c),
        # PhiDecoderLayer: one input_layernorm feeds both attention and MLP.
        "block": "parallel_one_norm",
        "norm": _layernorm(c, "layer_norm_eps", 1e-5),
        "attention": _attention(c, bias=True),
        # PhiConfig defaults partial_rotary_factor to 0.5 when absent.
        "positions": _rope(c, _RopeKeys(default_fraction=0.5)),
        "mlp": {
            "hidden": c.integer("intermediate_size"),
            "activation": _activation(c, "hidden_act", "gelu_new"),
            "bias": True,
        },
        # PhiForCausalLM's lm_head has a bias.
        "embeddings": {"tied": c.flag("tie_word_embeddings", False), "unembedding_bias": True},
    }


def _opt(c: _Config) -> dict[str, Any]:
    sizes = _sizes(c)
    _opt_checks(c, sizes["width"])
    pre = c.flag("do_layer_norm_before", True)
    # OPTDecoder builds final_layer_norm only for pre-norm models without _remove_final_layer_norm.
    final = c.flag("_remove_final_layer_norm", False) is False and pre
    # enable_bias switches the attention and MLP biases; the LayerNorms keep theirs.
    bias = c.flag("enable_bias", True)
    return {
        "kind": "causal_lm",
        **sizes,
        "block": "pre_norm" if pre else "post_norm",
        # OPT builds nn.LayerNorm without an eps argument: PyTorch's 1e-5, with no config key.
        "norm": {"type": "layernorm", "eps": 1e-5},
        "final_norm": final,
        "attention": {"heads": c.integer("num_attention_heads"), "bias": bias},
        # OPTLearnedPositionalEmbedding reads row position + 2; rows 0 and 1 are never read.
        "positions": {"type": "learned", "offset": 2},
        "mlp": {
            "hidden": c.integer("ffn_dim"),
            "activation": _activation(c, "activation_function", "relu"),
            "bias": bias,
        },
        "embeddings": {"tied": c.flag("tie_word_embeddings", True)},
    }


def _opt_checks(c: _Config, width: int) -> None:
    proj = c.integer("word_embed_proj_dim", default=width)
    if proj != width:
        raise c.error(
            "word_embed_proj_dim differs from hidden_size: the projections into and out of a "
            "narrower embedding are not supported",
            ("word_embed_proj_dim",),
            found=str(proj),
            accepted=f"{width} (hidden_size) or null",
        )
    c.require(
        "layer_norm_elementwise_affine",
        True,
        "LayerNorms without a gain and bias are not supported",
    )


def _gemma(c: _Config) -> dict[str, Any]:
    c.require(
        "use_bidirectional_attention", False, "bidirectional Gemma attention is not supported"
    )
    # GemmaConfig's defaults: 16 key/value heads and head_dim 256 (not width / heads).
    attention = _attention(
        c, bias=c.flag("attention_bias", False), kv_default=16, head_dim_default=256
    )
    # GemmaRMSNorm multiplies by (1 + weight).
    norm = {"type": "rmsnorm", "eps": c.number("rms_norm_eps", 1e-6), "gain": "one_plus_w"}
    arch = _llama_like(
        c,
        attention=attention,
        mlp_bias=False,
        tied_default=True,
        norm=norm,
        activation=_gemma_activation(c),
    )
    # GemmaModel multiplies the token embeddings by sqrt(hidden_size).
    arch["embeddings"]["scale"] = "sqrt(width)"
    return arch


# Gemma's checkpoints write hidden_act "gelu" but were trained with the tanh approximation;
# transformers 5 maps it to gelu_pytorch_tanh (GemmaConfig.__post_init__).
_GEMMA_ACTIVATIONS = {**ACTIVATIONS, "gelu": "gelu_tanh"}


def _gemma_activation(c: _Config) -> str:
    """transformers 5 reads hidden_act; transformers 4 read hidden_activation. They must agree."""
    current = _activation(c, "hidden_act", "gelu_pytorch_tanh", _GEMMA_ACTIVATIONS)
    if c.present("hidden_activation"):
        legacy = _activation(c, "hidden_activation", "gelu_pytorch_tanh")
        if legacy != current:
            raise c.error(
                "hidden_activation (read by transformers 4) and hidden_act (read by "
                "transformers 5) give different activations",
                ("hidden_activation",),
                found=f"{legacy} and {current}",
                accepted="values naming the same activation",
            )
    return current


def _nemotron(c: _Config) -> dict[str, Any]:
    # NemotronLayerNorm1P: F.layer_norm with weight + 1 and a bias; NemotronMLP: up, act, down
    # (not gated); NemotronConfig defaults partial_rotary_factor to 0.5; attention_bias covers
    # q, k, v and o alike.
    return {
        "kind": "causal_lm",
        **_sizes(c),
        "block": "pre_norm",
        "norm": {**_layernorm(c, "norm_eps", 1e-5), "gain": "one_plus_w"},
        "attention": _attention(c, bias=c.flag("attention_bias", False)),
        "positions": _rope(c, _RopeKeys(default_fraction=0.5)),
        "mlp": {
            "hidden": c.integer("intermediate_size"),
            "activation": _activation(c, "hidden_act", "relu2"),
            "bias": c.flag("mlp_bias", False),
        },
        "embeddings": {"tied": c.flag("tie_word_embeddings", False)},
    }


def _xglm(c: _Config) -> dict[str, Any]:
    sizes = _sizes(c, ("d_model", "hidden_size"), ("num_layers", "num_hidden_layers"))
    _xglm_padding_row(c, sizes["max_positions"])
    return {
        "kind": "causal_lm",
        **sizes,
        "block": "pre_norm",
        # XGLM builds nn.LayerNorm without an eps argument: PyTorch's 1e-5, with no config key.
        "norm": {"type": "layernorm", "eps": 1e-5},
        "attention": {"heads": c.integer("attention_heads", "num_attention_heads"), "bias": True},
        # XGLMSinusoidalPositionalEmbedding: position p reads row p + 2 of a fixed table.
        "positions": {"type": "sinusoidal", "base": 10000.0, "offset": _XGLM_OFFSET},
        "mlp": {
            "hidden": c.integer("ffn_dim"),
            "activation": _activation(c, "activation_function", "gelu"),
            "bias": True,
        },
        "embeddings": {
            "tied": c.flag("tie_word_embeddings", True),
            # XGLMScaledWordEmbedding multiplies by sqrt(d_model) when scale_embedding is set.
            "scale": "sqrt(width)" if c.flag("scale_embedding", True) else 1.0,
        },
    }


_XGLM_OFFSET = 2


def _xglm_padding_row(c: _Config, positions: int) -> None:
    """XGLM zeroes the sinusoid row pad_token_id: an error where a position reads that row."""
    pad = c.optional_integer("pad_token_id", 1)
    if pad is not None and _XGLM_OFFSET <= pad < _XGLM_OFFSET + positions:
        raise c.error(
            "XGLM zeroes the sinusoid row pad_token_id, which a position reads: a table with "
            "one zeroed row is not supported",
            ("pad_token_id",),
            found=str(pad),
            accepted=f"null or an id below {_XGLM_OFFSET} or from {_XGLM_OFFSET + positions} on",
        )


def _smollm3(c: _Config) -> dict[str, Any]:
    nope = _smollm3_nope_layers(c, c.integer("num_hidden_layers"))
    _smollm3_no_window(c, nope)
    attention = _attention(c, bias=c.flag("attention_bias", False))
    arch = _llama_like(
        c,
        attention=attention,
        mlp_bias=c.flag("mlp_bias", False),
        tied_default=True,
        # SmolLM3Config.default_theta; SmolLM3 rotates the whole head.
        rope=_RopeKeys(partial=False, default_theta=2000000.0),
    )
    arch["positions"]["nope_layers"] = nope
    return arch


def _smollm3_nope_layers(c: _Config, layers: int) -> list[int]:
    """SmolLM3Attention rotates where no_rope_layers[i] is 1; by default every layer but each
    no_rope_layer_interval-th (default 4)."""
    if not c.present("no_rope_layers"):
        interval = c.integer("no_rope_layer_interval", default=4)
        return [i for i in range(layers) if (i + 1) % interval == 0]
    flags = c.get("no_rope_layers")
    valid = isinstance(flags, list) and all(f in (0, 1) and not isinstance(f, float) for f in flags)
    if not valid or len(flags) != layers:
        raise c.error(
            "no_rope_layers must hold one 0 or 1 per layer (1: the layer uses RoPE)",
            ("no_rope_layers",),
            found=_short(flags),
            accepted=f"a list of {layers} values 0 or 1",
        )
    c.get("no_rope_layer_interval")  # read: unused when no_rope_layers is given
    return [i for i, flag in enumerate(flags) if not flag]


def _smollm3_no_window(c: _Config, nope: list[int]) -> None:
    """SmolLM3 slides its window on the NoPE layers only (with use_sliding_window), or on the
    layers layer_types names: a window on some layers only is not expressible."""
    use = c.flag("use_sliding_window", False)
    window = c.optional_integer("sliding_window", None)
    if c.get("layer_types") is None:
        sliding = use and window is not None and bool(nope)
        key = "use_sliding_window"
    else:
        sliding, key = "sliding_attention" in c.layer_types([]), "layer_types"
    if sliding:
        raise c.error(
            "a sliding window on some layers only is not supported (a per-layer attention window)",
            (key,),
            found=_short(c.get(key)),
            accepted="no sliding layers (use_sliding_window false)",
        )


def _roberta(c: _Config) -> dict[str, Any]:
    c.require("is_decoder", False, "RoBERTa as a causal decoder is not supported (masked LM only)")
    # transformers 4 wrote position_embedding_type; 5 has only absolute positions
    c.require(
        "position_embedding_type", "absolute", "relative position embeddings are not supported"
    )
    # RobertaConfig defaults pad_token_id to 1; an explicit null leaves the model without one
    pad = None if c.raw("pad_token_id", 1) is None else c.integer("pad_token_id", default=1)
    if pad is None:
        raise c.error(
            "RoBERTa counts positions from pad_token_id: it needs one",
            ("pad_token_id",),
            found="null",
            accepted="a token id",
        )
    # create_position_ids_from_input_ids: position rows from pad + 1 on, padding reads row pad
    table = c.integer("max_position_embeddings")
    if table <= pad + 1:
        raise c.error(
            "the position table has no row for a token (rows up to pad_token_id + 1 are reserved)",
            ("max_position_embeddings",),
            found=str(table),
            accepted=f"more than {pad + 1}",
        )
    arch = _bert(c)
    arch["max_positions"] = table - (pad + 1)
    arch["positions"] = {"type": "learned", "offset": pad + 1, "padding_token": pad}
    # RobertaLMHead: dense, gelu (fixed, not hidden_act), layer_norm, decoder
    arch["prediction_head"] = {"activation": "gelu"}
    return arch


@dataclass(frozen=True)
class Family:
    """How to import one model_type: a builder and the family's keys that change nothing."""

    build: Callable[[_Config], dict[str, Any]]
    ignored: frozenset[str] = frozenset()


# Decoder-only families never read is_decoder: their attention is always causal.
_CAUSAL = frozenset({"is_decoder"})

FAMILIES: dict[str, Family] = {
    # summary_*: GPT2DoubleHeadsModel's classification head only; reorder_and_upcast_attn
    # computes the same scaled scores in float32 (precision only, not a different function).
    "gpt2": Family(
        _gpt2,
        _CAUSAL
        | {
            "summary_type",
            "summary_use_proj",
            "summary_activation",
            "summary_proj_to_labels",
            "reorder_and_upcast_attn",
        },
    ),
    "bert": Family(_bert),
    # pretraining_tp: transformers 4 sliced the same matmuls for tensor parallelism (same
    # function); transformers 5 no longer reads it.
    "llama": Family(_llama, _CAUSAL | {"pretraining_tp"}),
    "mistral": Family(_mistral, _CAUSAL),
    "qwen2": Family(_qwen2, _CAUSAL),
    "gpt_neox": Family(_gpt_neox, _CAUSAL),
    "phi": Family(_phi, _CAUSAL),
    # layerdrop skips layers during training only.
    "opt": Family(_opt, _CAUSAL | {"layerdrop"}),
    "gemma": Family(_gemma, _CAUSAL),
    # section norms (symcomp.hf.config_norms)
    "qwen3": Family(config_norms.BUILDERS["qwen3"], _CAUSAL),
    "granite": Family(config_norms.BUILDERS["granite"], _CAUSAL),
    "olmo2": Family(config_norms.BUILDERS["olmo2"], _CAUSAL),
    "cohere": Family(config_norms.BUILDERS["cohere"], _CAUSAL),
    # sliding_window_size: an older twin of sliding_window that transformers no longer reads;
    # cache_implementation: the KV cache generate() allocates (a generation setting).
    "gemma2": Family(
        config_norms.BUILDERS["gemma2"],
        _CAUSAL | {"sliding_window_size", "cache_implementation"},
    ),
    "mixtral": Family(_mixtral, _CAUSAL | MIXTRAL_IGNORED),
    "nemotron": Family(_nemotron, _CAUSAL),
    # layerdrop skips layers during training only; decoder_start_token_id is a token id.
    "xglm": Family(_xglm, _CAUSAL | {"layerdrop"}),
    # max_window_layers: a Qwen2 key SmolLM3Config does not have and its modeling never reads
    # (layer_types, or use_sliding_window on the NoPE layers, decides which layers slide).
    "smollm3": Family(_smollm3, _CAUSAL | {"pretraining_tp", "max_window_layers"}),
    "roberta": Family(_roberta),
    **{name: Family(build, ignored) for name, (build, ignored) in PLAIN_FAMILIES.items()},
}
