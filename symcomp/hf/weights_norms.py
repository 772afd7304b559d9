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
    return {"qwen3": llama_like + _QK_NORMS, "granite": llama_like}


BUFFERS: dict[str, list[str]] = {"qwen3": [], "granite": []}
BASE_PREFIX: dict[str, str] = {"qwen3": "model.", "granite": "model."}
