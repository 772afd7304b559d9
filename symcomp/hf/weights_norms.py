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
    }


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

BUFFERS: dict[str, list[str]] = {"qwen3": [], "granite": [], "olmo2": []}
BASE_PREFIX: dict[str, str] = {"qwen3": "model.", "granite": "model.", "olmo2": "model."}
