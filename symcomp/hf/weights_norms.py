"""Checkpoint names of the families of :mod:`.config_norms` (qwen3, olmo2, granite, gemma2,
cohere), merged into :data:`symcomp.hf.weights.NAME_TABLES`."""

from __future__ import annotations

Row = tuple[str, str, str]

_QK_NORMS: list[Row] = [
    ("model.layers.{i}.self_attn.q_norm.weight", "layers.{i}.attn.q_norm.gain", "copy"),
    ("model.layers.{i}.self_attn.k_norm.weight", "layers.{i}.attn.k_norm.gain", "copy"),
]


def name_tables(llama_like: list[Row]) -> dict[str, list[Row]]:
    """model_type -> rows (transformers pattern, our pattern, transform)."""
    return {
        "qwen3": llama_like + _QK_NORMS,
        "granite": llama_like,
        "olmo2": [_olmo2_row(row) for row in llama_like if "input_layernorm" not in row[0]]
        + _QK_NORMS
        + [_POST_FF],
        "cohere": [_cohere_row(row) for row in llama_like if "post_attention" not in row[0]],
        "gemma2": [_gemma2_row(row) for row in llama_like] + [_POST_FF, _PRE_FF],
    }


_PRE_FF: Row = (
    "model.layers.{i}.pre_feedforward_layernorm.weight",
    "layers.{i}.mlp_norm.gain",
    "copy",
)


def _gemma2_row(row: Row) -> Row:
    # a sandwich: post_attention_layernorm normalizes the attention output
    if "post_attention_layernorm" in row[0]:
        return (row[0], "layers.{i}.attn_out_norm.gain", row[2])
    return row


def _cohere_row(row: Row) -> Row:
    # one input_layernorm feeds attention and MLP (a parallel block with one norm)
    if "input_layernorm" in row[0]:
        return (row[0], "layers.{i}.norm.gain", row[2])
    return row


def _olmo2_row(row: Row) -> Row:
    # OLMo2's post_attention_layernorm normalizes the attention output (no norm before the MLP)
    if "post_attention_layernorm" in row[0]:
        return (row[0], "layers.{i}.attn_out_norm.gain", row[2])
    return row


_POST_FF: Row = (
    "model.layers.{i}.post_feedforward_layernorm.weight",
    "layers.{i}.mlp_out_norm.gain",
    "copy",
)

FAMILIES = ("qwen3", "granite", "olmo2", "cohere", "gemma2")
BUFFERS: dict[str, list[str]] = {family: [] for family in FAMILIES}
BUFFERS["gemma2"] = [r"model\.embed_tokens\.embed_scale"]
BASE_PREFIX: dict[str, str] = {family: "model." for family in FAMILIES}
