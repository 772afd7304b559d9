"""The families with QK-norms, sandwich and sublayer-output norms, soft-capping, scalar
multipliers and per-layer attention windows (issue 24, "norms"): qwen3, olmo2, granite, gemma2,
cohere. Each builder follows the transformers 5 configuration and modeling code of its family
(``transformers/models/<family>/{configuration,modeling}_<family>.py``)."""

from __future__ import annotations

from typing import Any

from symcomp.hf.config_pieces import _attention, _rope, _RopeKeys
from symcomp.hf.config_reader import _Config


def layer_windows(
    c: _Config, window: int | None, default_types: list[str]
) -> tuple[int | None, list[int] | None]:
    """The sliding window and the layers that use it, from ``layer_types`` (or the family's
    default list): (None, None) when no layer slides, (window, None) when every layer does."""
    layers = c.integer("num_hidden_layers")
    types = c.layer_types(default_types)
    if len(types) != layers:
        raise c.error(
            "layer_types must name one type per layer",
            ("layer_types",),
            found=f"{len(types)} types for {layers} layers",
            accepted=f"a list of {layers}",
        )
    sliding = [i for i, t in enumerate(types) if t == "sliding_attention"]
    if window is None or not sliding:
        return None, None
    return window, (None if len(sliding) == layers else sliding)


def _window_attention(c: _Config, attention: dict[str, Any], window, types) -> dict[str, Any]:
    window, layers = layer_windows(c, window, types)
    attention["sliding_window"] = window
    if layers is not None:
        attention["sliding_layers"] = layers
    return attention


def _gated_mlp(c: _Config, bias: bool = False) -> dict[str, Any]:
    return {
        "hidden": c.integer("intermediate_size"),
        "activation": _act(c, "hidden_act", "silu"),
        "gated": True,
        "bias": bias,
    }


def _act(c: _Config, key: str, default: str) -> str:
    from symcomp.hf.config_pieces import _activation

    return _activation(c, key, default)


def _qwen3(c: _Config) -> dict[str, Any]:
    # Qwen3Attention: q_norm / k_norm (RMSNorm over head_dim, one gain shared by the heads)
    # before RoPE; attention_bias on q, k, v and o alike. Qwen3Config sets sliding_window to
    # None without use_sliding_window; layer_types default: sliding from max_window_layers on.
    layers = c.integer("num_hidden_layers")
    window = None
    if c.flag("use_sliding_window", False) and c.raw("sliding_window", 4096) is not None:
        window = c.integer("sliding_window", default=4096)
    first = c.integer("max_window_layers", default=28)
    types = [
        "sliding_attention" if window is not None and i >= first else "full_attention"
        for i in range(layers)
    ]
    if c.flag("attention_bias", False):
        raise c.error(
            "attention biases with QK-norm are not supported",
            ("attention_bias",),
            found="true",
            accepted="false",
        )
    attention = _attention(c, bias=False)
    attention["qk_norm"] = "per_head"
    return {
        "kind": "causal_lm",
        "vocab_size": c.integer("vocab_size"),
        "max_positions": c.integer("max_position_embeddings"),
        "width": c.integer("hidden_size"),
        "layers": layers,
        "block": "pre_norm",
        "norm": {"type": "rmsnorm", "eps": c.number("rms_norm_eps", 1e-6)},
        "attention": _window_attention(c, attention, window, types),
        "positions": _rope(c, _RopeKeys(partial=False)),
        "mlp": _gated_mlp(c),
        "embeddings": {"tied": c.flag("tie_word_embeddings", False)},
    }


def _granite(c: _Config) -> dict[str, Any]:
    # GraniteModel: embeddings times embedding_multiplier; GraniteAttention: logits times
    # attention_multiplier (not head_dim^-0.5); each sublayer's output times
    # residual_multiplier; GraniteForCausalLM: logits divided by logits_scaling.
    attention = _attention(c, bias=c.flag("attention_bias", False))
    attention["scale"] = c.number("attention_multiplier", 1.0)
    return {
        "kind": "causal_lm",
        "vocab_size": c.integer("vocab_size"),
        "max_positions": c.integer("max_position_embeddings"),
        "width": c.integer("hidden_size"),
        "layers": c.integer("num_hidden_layers"),
        "block": "pre_norm",
        "residual_scale": c.number("residual_multiplier", 1.0),
        "norm": {"type": "rmsnorm", "eps": c.number("rms_norm_eps", 1e-6)},
        "attention": attention,
        "positions": _rope(c, _RopeKeys(partial=False)),
        "mlp": _gated_mlp(c, bias=c.flag("mlp_bias", False)),
        "embeddings": {
            "tied": c.flag("tie_word_embeddings", False),
            "scale": c.number("embedding_multiplier", 1.0),
            "logit_scale": 1.0 / c.number("logits_scaling", 1.0),
        },
    }


def _olmo2(c: _Config) -> dict[str, Any]:
    # Olmo2DecoderLayer: x + post_attention_layernorm(attn(x)), then x +
    # post_feedforward_layernorm(mlp(x)), no norm before a sublayer; Olmo2Attention: q_norm and
    # k_norm (RMSNorm over all heads' features) on the projections, before RoPE.
    if c.flag("attention_bias", False):
        raise c.error(
            "attention biases with QK-norm are not supported",
            ("attention_bias",),
            found="true",
            accepted="false",
        )
    attention = _attention(c, bias=False)
    attention["qk_norm"] = "full_width"
    return {
        "kind": "causal_lm",
        "vocab_size": c.integer("vocab_size"),
        "max_positions": c.integer("max_position_embeddings"),
        "width": c.integer("hidden_size"),
        "layers": c.integer("num_hidden_layers"),
        "block": "post_sublayer_norm",
        "norm": {"type": "rmsnorm", "eps": c.number("rms_norm_eps", 1e-5)},
        "attention": attention,
        "positions": _rope(c, _RopeKeys(partial=False)),
        "mlp": _gated_mlp(c),
        "embeddings": {"tied": c.flag("tie_word_embeddings", False)},
    }


def _cohere(c: _Config) -> dict[str, Any]:
    # CohereDecoderLayer: x + attn(n(x)) + mlp(n(x)) with one CohereLayerNorm (mean-subtracted,
    # weight only); rotate_half pairs (2i, 2i + 1); CohereForCausalLM: logits * logit_scale.
    c.require(
        "use_qk_norm",
        False,
        "Cohere's QK-norm (a LayerNorm per head with each head's own gain) is not supported",
    )
    rope = _rope(c, _RopeKeys(partial=False))
    rope["pair_layout"] = "adjacent"
    scale = c.raw("logit_scale", 0.0625)
    return {
        "kind": "causal_lm",
        "vocab_size": c.integer("vocab_size"),
        "max_positions": c.integer("max_position_embeddings"),
        "width": c.integer("hidden_size"),
        "layers": c.integer("num_hidden_layers"),
        "block": "parallel_one_norm",
        "norm": {"type": "layernorm", "eps": c.number("layer_norm_eps", 1e-5), "bias": False},
        "attention": _attention(c, bias=c.flag("attention_bias", False)),
        "positions": rope,
        "mlp": _gated_mlp(c),
        "embeddings": {
            "tied": c.flag("tie_word_embeddings", True),
            # logits * None would fail in transformers: null is refused as a non-number
            "logit_scale": c.number("logit_scale", 0.0625) if scale is not None else 1.0,
        },
    }


def _gemma2(c: _Config) -> dict[str, Any]:
    # Gemma2DecoderLayer: x + post_attention_layernorm(attn(input_layernorm(x))), then x +
    # post_feedforward_layernorm(mlp(pre_feedforward_layernorm(x))); Gemma2RMSNorm times
    # (1 + w); embeddings times sqrt(hidden_size); logits q k^T * query_pre_attn_scalar^-0.5,
    # soft-capped by attn_logit_softcapping; final logits soft-capped by
    # final_logit_softcapping; layer_types default: sliding on even layers.
    c.require(
        "use_bidirectional_attention", False, "bidirectional Gemma2 attention is not supported"
    )
    layers = c.integer("num_hidden_layers")
    attention = _attention(
        c, bias=c.flag("attention_bias", False), kv_default=4, head_dim_default=256
    )
    attention["scale"] = c.number("query_pre_attn_scalar", 256) ** -0.5
    attention["softcap"] = _optional_number(c, "attn_logit_softcapping", 50.0)
    window = (
        None if c.raw("sliding_window", 4096) is None else c.integer("sliding_window", default=4096)
    )
    types = ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(layers)]
    return {
        "kind": "causal_lm",
        "vocab_size": c.integer("vocab_size"),
        "max_positions": c.integer("max_position_embeddings"),
        "width": c.integer("hidden_size"),
        "layers": layers,
        "block": "sandwich",
        "norm": {"type": "rmsnorm", "eps": c.number("rms_norm_eps", 1e-6), "gain": "one_plus_w"},
        "attention": _window_attention(c, attention, window, types),
        "positions": _rope(c, _RopeKeys(partial=False)),
        "mlp": {
            "hidden": c.integer("intermediate_size"),
            "activation": _gemma2_activation(c),
            "gated": True,
            "bias": False,
        },
        "embeddings": {
            "tied": c.flag("tie_word_embeddings", True),
            "scale": "sqrt(width)",
            "logit_softcap": _optional_number(c, "final_logit_softcapping", 30.0),
        },
    }


def _gemma2_activation(c: _Config) -> str:
    """Gemma2MLP reads hidden_activation; released configs also carry hidden_act, which no
    transformers version reads for Gemma 2. Where both are set they must agree."""
    current = _act(c, "hidden_activation", "gelu_pytorch_tanh")
    if c.present("hidden_act"):
        other = _act(c, "hidden_act", "gelu_pytorch_tanh")
        if other != current:
            raise c.error(
                "hidden_act and hidden_activation (the one transformers reads for Gemma 2) give "
                "different activations",
                ("hidden_act",),
                found=f"{other} and {current}",
                accepted="values naming the same activation",
            )
    return current


def _optional_number(c: _Config, key: str, default: float) -> float | None:
    """A number, or None where the config says null (no soft-capping)."""
    if c.present(key) and c.raw(key) is None:
        return None
    return c.number(key, default)


BUILDERS = {
    "gemma2": _gemma2,
    "qwen3": _qwen3,
    "granite": _granite,
    "olmo2": _olmo2,
    "cohere": _cohere,
}
