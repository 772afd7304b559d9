"""Map transformers checkpoints onto symcomp's parameter names, and back.

One explicit name table per family (``model_type`` in ``config.json``): each row says which
transformers tensor holds which of our parameters (see :mod:`symcomp.spec.params`: row vectors,
a linear map is ``x W + b`` with ``W`` of shape (in, out)) and how its layout changes:

``copy``
    same layout (embedding tables, norm gains and biases, linear biases, GPT-2's ``Conv1D``
    weights, which are already (in, out)).
``transpose``
    ``nn.Linear`` weights, stored (out, in).
``qkv_cols.q`` / ``.k`` / ``.v``
    GPT-2's fused ``c_attn``: the last axis is ``[q | k | v]``.
``qkv_per_head_T.q`` / ... and ``qkv_per_head.q`` / ...
    GPT-NeoX's fused ``query_key_value`` (``nn.Linear``): its output axis is laid out per head as
    ``[heads, 3, head_size]``; the weight is then transposed, the bias is not.

``{i}`` in a pattern stands for the layer index. A tied unembedding (``lm_head.weight`` sharing
the embedding) is ``embed.W_E``, placed once: the row for ``unembed.W_U`` then only checks that
the checkpoint's copy is equal. Buffers (causal masks, rotary ``inv_freq``, BERT's
``position_ids``) are not parameters and are skipped. Gemma stores its norm gain as ``w`` (used
as ``1 + w``); our ``*.gain`` holds the stored ``w`` too (``gain: one_plus_w``), so it is copied.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from symcomp.errors import SpecError
from symcomp.hf import weights_moe, weights_norms
from symcomp.hf.fused import fused_to_hf, fused_to_ours, is_fused_index
from symcomp.hf.weights_plain import PLAIN_BASE_PREFIX, PLAIN_BUFFERS, PLAIN_TABLES
from symcomp.spec.model import Spec
from symcomp.spec.params import parameter_shapes, sizes_of

# --- the name tables -------------------------------------------------------------------------

Row = tuple[str, str, str]  # (transformers pattern, our pattern, transform name)

_LLAMA_LIKE: list[Row] = [
    ("model.embed_tokens.weight", "embed.W_E", "copy"),
    ("model.layers.{i}.input_layernorm.weight", "layers.{i}.attn_norm.gain", "copy"),
    ("model.layers.{i}.self_attn.q_proj.weight", "layers.{i}.attn.W_Q", "transpose"),
    ("model.layers.{i}.self_attn.q_proj.bias", "layers.{i}.attn.b_Q", "copy"),
    ("model.layers.{i}.self_attn.k_proj.weight", "layers.{i}.attn.W_K", "transpose"),
    ("model.layers.{i}.self_attn.k_proj.bias", "layers.{i}.attn.b_K", "copy"),
    ("model.layers.{i}.self_attn.v_proj.weight", "layers.{i}.attn.W_V", "transpose"),
    ("model.layers.{i}.self_attn.v_proj.bias", "layers.{i}.attn.b_V", "copy"),
    ("model.layers.{i}.self_attn.o_proj.weight", "layers.{i}.attn.W_O", "transpose"),
    ("model.layers.{i}.self_attn.o_proj.bias", "layers.{i}.attn.b_O", "copy"),
    ("model.layers.{i}.post_attention_layernorm.weight", "layers.{i}.mlp_norm.gain", "copy"),
    ("model.layers.{i}.mlp.gate_proj.weight", "layers.{i}.mlp.W_gate", "transpose"),
    ("model.layers.{i}.mlp.gate_proj.bias", "layers.{i}.mlp.b_gate", "copy"),
    ("model.layers.{i}.mlp.up_proj.weight", "layers.{i}.mlp.W_up", "transpose"),
    ("model.layers.{i}.mlp.up_proj.bias", "layers.{i}.mlp.b_up", "copy"),
    ("model.layers.{i}.mlp.down_proj.weight", "layers.{i}.mlp.W_down", "transpose"),
    ("model.layers.{i}.mlp.down_proj.bias", "layers.{i}.mlp.b_down", "copy"),
    ("model.norm.weight", "final_norm.gain", "copy"),
    ("lm_head.weight", "unembed.W_U", "transpose"),
]

# Llama's names with LayerNorm biases (Nemotron's LayerNorm1P).
_LLAMA_LIKE_NORM_BIASES: list[Row] = [
    *_LLAMA_LIKE,
    ("model.layers.{i}.input_layernorm.bias", "layers.{i}.attn_norm.bias", "copy"),
    ("model.layers.{i}.post_attention_layernorm.bias", "layers.{i}.mlp_norm.bias", "copy"),
    ("model.norm.bias", "final_norm.bias", "copy"),
]

NAME_TABLES: dict[str, list[Row]] = {
    "gpt2": [
        ("transformer.wte.weight", "embed.W_E", "copy"),
        ("transformer.wpe.weight", "embed.W_P", "copy"),
        ("transformer.h.{i}.ln_1.weight", "layers.{i}.attn_norm.gain", "copy"),
        ("transformer.h.{i}.ln_1.bias", "layers.{i}.attn_norm.bias", "copy"),
        ("transformer.h.{i}.attn.c_attn.weight", "layers.{i}.attn.W_Q", "qkv_cols.q"),
        ("transformer.h.{i}.attn.c_attn.weight", "layers.{i}.attn.W_K", "qkv_cols.k"),
        ("transformer.h.{i}.attn.c_attn.weight", "layers.{i}.attn.W_V", "qkv_cols.v"),
        ("transformer.h.{i}.attn.c_attn.bias", "layers.{i}.attn.b_Q", "qkv_cols.q"),
        ("transformer.h.{i}.attn.c_attn.bias", "layers.{i}.attn.b_K", "qkv_cols.k"),
        ("transformer.h.{i}.attn.c_attn.bias", "layers.{i}.attn.b_V", "qkv_cols.v"),
        ("transformer.h.{i}.attn.c_proj.weight", "layers.{i}.attn.W_O", "copy"),
        ("transformer.h.{i}.attn.c_proj.bias", "layers.{i}.attn.b_O", "copy"),
        ("transformer.h.{i}.ln_2.weight", "layers.{i}.mlp_norm.gain", "copy"),
        ("transformer.h.{i}.ln_2.bias", "layers.{i}.mlp_norm.bias", "copy"),
        ("transformer.h.{i}.mlp.c_fc.weight", "layers.{i}.mlp.W_up", "copy"),
        ("transformer.h.{i}.mlp.c_fc.bias", "layers.{i}.mlp.b_up", "copy"),
        ("transformer.h.{i}.mlp.c_proj.weight", "layers.{i}.mlp.W_down", "copy"),
        ("transformer.h.{i}.mlp.c_proj.bias", "layers.{i}.mlp.b_down", "copy"),
        ("transformer.ln_f.weight", "final_norm.gain", "copy"),
        ("transformer.ln_f.bias", "final_norm.bias", "copy"),
        ("lm_head.weight", "unembed.W_U", "transpose"),
    ],
    "bert": [
        ("bert.embeddings.word_embeddings.weight", "embed.W_E", "copy"),
        ("bert.embeddings.position_embeddings.weight", "embed.W_P", "copy"),
        ("bert.embeddings.token_type_embeddings.weight", "embed.W_T", "copy"),
        ("bert.embeddings.LayerNorm.weight", "embed_norm.gain", "copy"),
        ("bert.embeddings.LayerNorm.bias", "embed_norm.bias", "copy"),
        ("bert.encoder.layer.{i}.attention.self.query.weight", "layers.{i}.attn.W_Q", "transpose"),
        ("bert.encoder.layer.{i}.attention.self.query.bias", "layers.{i}.attn.b_Q", "copy"),
        ("bert.encoder.layer.{i}.attention.self.key.weight", "layers.{i}.attn.W_K", "transpose"),
        ("bert.encoder.layer.{i}.attention.self.key.bias", "layers.{i}.attn.b_K", "copy"),
        ("bert.encoder.layer.{i}.attention.self.value.weight", "layers.{i}.attn.W_V", "transpose"),
        ("bert.encoder.layer.{i}.attention.self.value.bias", "layers.{i}.attn.b_V", "copy"),
        (
            "bert.encoder.layer.{i}.attention.output.dense.weight",
            "layers.{i}.attn.W_O",
            "transpose",
        ),
        ("bert.encoder.layer.{i}.attention.output.dense.bias", "layers.{i}.attn.b_O", "copy"),
        (
            "bert.encoder.layer.{i}.attention.output.LayerNorm.weight",
            "layers.{i}.attn_norm.gain",
            "copy",
        ),
        (
            "bert.encoder.layer.{i}.attention.output.LayerNorm.bias",
            "layers.{i}.attn_norm.bias",
            "copy",
        ),
        ("bert.encoder.layer.{i}.intermediate.dense.weight", "layers.{i}.mlp.W_up", "transpose"),
        ("bert.encoder.layer.{i}.intermediate.dense.bias", "layers.{i}.mlp.b_up", "copy"),
        ("bert.encoder.layer.{i}.output.dense.weight", "layers.{i}.mlp.W_down", "transpose"),
        ("bert.encoder.layer.{i}.output.dense.bias", "layers.{i}.mlp.b_down", "copy"),
        ("bert.encoder.layer.{i}.output.LayerNorm.weight", "layers.{i}.mlp_norm.gain", "copy"),
        ("bert.encoder.layer.{i}.output.LayerNorm.bias", "layers.{i}.mlp_norm.bias", "copy"),
        ("cls.predictions.transform.dense.weight", "head.W_dense", "transpose"),
        ("cls.predictions.transform.dense.bias", "head.b_dense", "copy"),
        ("cls.predictions.transform.LayerNorm.weight", "head_norm.gain", "copy"),
        ("cls.predictions.transform.LayerNorm.bias", "head_norm.bias", "copy"),
        ("cls.predictions.bias", "unembed.b_U", "copy"),
        ("cls.predictions.decoder.weight", "unembed.W_U", "transpose"),
        ("cls.predictions.decoder.bias", "unembed.b_U", "copy"),
    ],
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "mixtral": weights_moe.mixtral_table(_LLAMA_LIKE),
    "qwen2": _LLAMA_LIKE,
    "gemma": _LLAMA_LIKE,
    "nemotron": _LLAMA_LIKE_NORM_BIASES,
    "smollm3": _LLAMA_LIKE,
    "gpt_neox": [
        ("gpt_neox.embed_in.weight", "embed.W_E", "copy"),
        ("gpt_neox.layers.{i}.input_layernorm.weight", "layers.{i}.attn_norm.gain", "copy"),
        ("gpt_neox.layers.{i}.input_layernorm.bias", "layers.{i}.attn_norm.bias", "copy"),
        (
            "gpt_neox.layers.{i}.post_attention_layernorm.weight",
            "layers.{i}.mlp_norm.gain",
            "copy",
        ),
        ("gpt_neox.layers.{i}.post_attention_layernorm.bias", "layers.{i}.mlp_norm.bias", "copy"),
        (
            "gpt_neox.layers.{i}.attention.query_key_value.weight",
            "layers.{i}.attn.W_Q",
            "qkv_per_head_T.q",
        ),
        (
            "gpt_neox.layers.{i}.attention.query_key_value.weight",
            "layers.{i}.attn.W_K",
            "qkv_per_head_T.k",
        ),
        (
            "gpt_neox.layers.{i}.attention.query_key_value.weight",
            "layers.{i}.attn.W_V",
            "qkv_per_head_T.v",
        ),
        (
            "gpt_neox.layers.{i}.attention.query_key_value.bias",
            "layers.{i}.attn.b_Q",
            "qkv_per_head.q",
        ),
        (
            "gpt_neox.layers.{i}.attention.query_key_value.bias",
            "layers.{i}.attn.b_K",
            "qkv_per_head.k",
        ),
        (
            "gpt_neox.layers.{i}.attention.query_key_value.bias",
            "layers.{i}.attn.b_V",
            "qkv_per_head.v",
        ),
        ("gpt_neox.layers.{i}.attention.dense.weight", "layers.{i}.attn.W_O", "transpose"),
        ("gpt_neox.layers.{i}.attention.dense.bias", "layers.{i}.attn.b_O", "copy"),
        ("gpt_neox.layers.{i}.mlp.dense_h_to_4h.weight", "layers.{i}.mlp.W_up", "transpose"),
        ("gpt_neox.layers.{i}.mlp.dense_h_to_4h.bias", "layers.{i}.mlp.b_up", "copy"),
        ("gpt_neox.layers.{i}.mlp.dense_4h_to_h.weight", "layers.{i}.mlp.W_down", "transpose"),
        ("gpt_neox.layers.{i}.mlp.dense_4h_to_h.bias", "layers.{i}.mlp.b_down", "copy"),
        ("gpt_neox.final_layer_norm.weight", "final_norm.gain", "copy"),
        ("gpt_neox.final_layer_norm.bias", "final_norm.bias", "copy"),
        ("lm_head.weight", "unembed.W_U", "transpose"),
    ],
    "phi": [
        ("model.embed_tokens.weight", "embed.W_E", "copy"),
        ("model.layers.{i}.input_layernorm.weight", "layers.{i}.norm.gain", "copy"),
        ("model.layers.{i}.input_layernorm.bias", "layers.{i}.norm.bias", "copy"),
        ("model.layers.{i}.self_attn.q_proj.weight", "layers.{i}.attn.W_Q", "transpose"),
        ("model.layers.{i}.self_attn.q_proj.bias", "layers.{i}.attn.b_Q", "copy"),
        ("model.layers.{i}.self_attn.k_proj.weight", "layers.{i}.attn.W_K", "transpose"),
        ("model.layers.{i}.self_attn.k_proj.bias", "layers.{i}.attn.b_K", "copy"),
        ("model.layers.{i}.self_attn.v_proj.weight", "layers.{i}.attn.W_V", "transpose"),
        ("model.layers.{i}.self_attn.v_proj.bias", "layers.{i}.attn.b_V", "copy"),
        ("model.layers.{i}.self_attn.dense.weight", "layers.{i}.attn.W_O", "transpose"),
        ("model.layers.{i}.self_attn.dense.bias", "layers.{i}.attn.b_O", "copy"),
        ("model.layers.{i}.mlp.fc1.weight", "layers.{i}.mlp.W_up", "transpose"),
        ("model.layers.{i}.mlp.fc1.bias", "layers.{i}.mlp.b_up", "copy"),
        ("model.layers.{i}.mlp.fc2.weight", "layers.{i}.mlp.W_down", "transpose"),
        ("model.layers.{i}.mlp.fc2.bias", "layers.{i}.mlp.b_down", "copy"),
        ("model.final_layernorm.weight", "final_norm.gain", "copy"),
        ("model.final_layernorm.bias", "final_norm.bias", "copy"),
        ("lm_head.weight", "unembed.W_U", "transpose"),
        ("lm_head.bias", "unembed.b_U", "copy"),
    ],
    "xglm": [
        ("model.embed_tokens.weight", "embed.W_E", "copy"),
        ("model.layers.{i}.self_attn_layer_norm.weight", "layers.{i}.attn_norm.gain", "copy"),
        ("model.layers.{i}.self_attn_layer_norm.bias", "layers.{i}.attn_norm.bias", "copy"),
        ("model.layers.{i}.self_attn.q_proj.weight", "layers.{i}.attn.W_Q", "transpose"),
        ("model.layers.{i}.self_attn.q_proj.bias", "layers.{i}.attn.b_Q", "copy"),
        ("model.layers.{i}.self_attn.k_proj.weight", "layers.{i}.attn.W_K", "transpose"),
        ("model.layers.{i}.self_attn.k_proj.bias", "layers.{i}.attn.b_K", "copy"),
        ("model.layers.{i}.self_attn.v_proj.weight", "layers.{i}.attn.W_V", "transpose"),
        ("model.layers.{i}.self_attn.v_proj.bias", "layers.{i}.attn.b_V", "copy"),
        ("model.layers.{i}.self_attn.out_proj.weight", "layers.{i}.attn.W_O", "transpose"),
        ("model.layers.{i}.self_attn.out_proj.bias", "layers.{i}.attn.b_O", "copy"),
        ("model.layers.{i}.final_layer_norm.weight", "layers.{i}.mlp_norm.gain", "copy"),
        ("model.layers.{i}.final_layer_norm.bias", "layers.{i}.mlp_norm.bias", "copy"),
        ("model.layers.{i}.fc1.weight", "layers.{i}.mlp.W_up", "transpose"),
        ("model.layers.{i}.fc1.bias", "layers.{i}.mlp.b_up", "copy"),
        ("model.layers.{i}.fc2.weight", "layers.{i}.mlp.W_down", "transpose"),
        ("model.layers.{i}.fc2.bias", "layers.{i}.mlp.b_down", "copy"),
        ("model.layer_norm.weight", "final_norm.gain", "copy"),
        ("model.layer_norm.bias", "final_norm.bias", "copy"),
        ("lm_head.weight", "unembed.W_U", "transpose"),
    ],
    "opt": [
        ("model.decoder.embed_tokens.weight", "embed.W_E", "copy"),
        ("model.decoder.embed_positions.weight", "embed.W_P", "copy"),
        (
            "model.decoder.layers.{i}.self_attn_layer_norm.weight",
            "layers.{i}.attn_norm.gain",
            "copy",
        ),
        ("model.decoder.layers.{i}.self_attn_layer_norm.bias", "layers.{i}.attn_norm.bias", "copy"),
        ("model.decoder.layers.{i}.self_attn.q_proj.weight", "layers.{i}.attn.W_Q", "transpose"),
        ("model.decoder.layers.{i}.self_attn.q_proj.bias", "layers.{i}.attn.b_Q", "copy"),
        ("model.decoder.layers.{i}.self_attn.k_proj.weight", "layers.{i}.attn.W_K", "transpose"),
        ("model.decoder.layers.{i}.self_attn.k_proj.bias", "layers.{i}.attn.b_K", "copy"),
        ("model.decoder.layers.{i}.self_attn.v_proj.weight", "layers.{i}.attn.W_V", "transpose"),
        ("model.decoder.layers.{i}.self_attn.v_proj.bias", "layers.{i}.attn.b_V", "copy"),
        ("model.decoder.layers.{i}.self_attn.out_proj.weight", "layers.{i}.attn.W_O", "transpose"),
        ("model.decoder.layers.{i}.self_attn.out_proj.bias", "layers.{i}.attn.b_O", "copy"),
        ("model.decoder.layers.{i}.final_layer_norm.weight", "layers.{i}.mlp_norm.gain", "copy"),
        ("model.decoder.layers.{i}.final_layer_norm.bias", "layers.{i}.mlp_norm.bias", "copy"),
        ("model.decoder.layers.{i}.fc1.weight", "layers.{i}.mlp.W_up", "transpose"),
        ("model.decoder.layers.{i}.fc1.bias", "layers.{i}.mlp.b_up", "copy"),
        ("model.decoder.layers.{i}.fc2.weight", "layers.{i}.mlp.W_down", "transpose"),
        ("model.decoder.layers.{i}.fc2.bias", "layers.{i}.mlp.b_down", "copy"),
        ("model.decoder.final_layer_norm.weight", "final_norm.gain", "copy"),
        ("model.decoder.final_layer_norm.bias", "final_norm.bias", "copy"),
        ("lm_head.weight", "unembed.W_U", "transpose"),
    ],
}
"""model_type -> rows (transformers pattern, our pattern, transform)."""
NAME_TABLES.update(weights_norms.name_tables(_LLAMA_LIKE))

# RoBERTa: BERT's names under roberta., with RobertaLMHead's for the prediction head.
_ROBERTA_NAMES = (
    ("bert.", "roberta."),
    ("cls.predictions.transform.dense.", "lm_head.dense."),
    ("cls.predictions.transform.LayerNorm.", "lm_head.layer_norm."),
    ("cls.predictions.decoder.", "lm_head.decoder."),
    ("cls.predictions.bias", "lm_head.bias"),
)


def _renamed(rows: list[Row], names: tuple[tuple[str, str], ...]) -> list[Row]:
    out = []
    for hf, ours, transform in rows:
        for old, new in names:
            if hf.startswith(old):
                hf = new + hf[len(old) :]
                break
        out.append((hf, ours, transform))
    return out


NAME_TABLES["roberta"] = _renamed(NAME_TABLES["bert"], _ROBERTA_NAMES)

NAME_TABLES.update(PLAIN_TABLES)

# Tensors that checkpoints may hold but that are not parameters (regular expressions).
_COMMON_BUFFERS = [r".*\.rotary_emb\.inv_freq", r".*\.inv_freq", r".*\.original_inv_freq"]
BUFFERS: dict[str, list[str]] = {
    "gpt2": [r"transformer\.h\.\d+\.attn\.bias", r"transformer\.h\.\d+\.attn\.masked_bias"],
    "bert": [r"bert\.embeddings\.position_ids", r"bert\.embeddings\.token_type_ids"],
    "gpt_neox": [
        r"gpt_neox\.layers\.\d+\.attention\.bias",
        r"gpt_neox\.layers\.\d+\.attention\.masked_bias",
    ],
    "opt": [],
    "llama": [],
    "mistral": [],
    "mixtral": [],
    "qwen2": [],
    "phi": [],
    "gemma": [r"model\.embed_tokens\.embed_scale"],
    **weights_norms.BUFFERS,
    "nemotron": [],
    "smollm3": [],
    "xglm": [r"model\.embed_positions\.weights"],
    "roberta": [r"roberta\.embeddings\.position_ids", r"roberta\.embeddings\.token_type_ids"],
    **PLAIN_BUFFERS,
}


# Names that checkpoints on the Hub use for the same tensors: older names, and the base model's
# names without the prefix of the ...ForCausalLM wrapper (GPT-2's hub files say ``h.0.attn...``).
ALIASES: dict[str, dict[str, str]] = {"gpt_neox": {"embed_out.weight": "lm_head.weight"}}
BASE_PREFIX: dict[str, str] = {
    "gpt2": "transformer.",
    "bert": "bert.",
    "llama": "model.",
    "mistral": "model.",
    "mixtral": "model.",
    "qwen2": "model.",
    "gemma": "model.",
    "nemotron": "model.",
    "smollm3": "model.",
    "xglm": "model.",
    "roberta": "roberta.",
    "gpt_neox": "gpt_neox.",
    "phi": "model.",
    "opt": "model.",
    **weights_norms.BASE_PREFIX,
    **PLAIN_BASE_PREFIX,
}


def model_types() -> list[str]:
    """The transformers model types with a name table."""
    return list(NAME_TABLES)


def hf_name_table(model_type: str, experts: int | None = None) -> list[Row]:
    """The name table of ``model_type``: rows (transformers pattern, our pattern, transform),
    ``{i}`` standing for the layer index and ``{e}`` for the expert index of a mixture of
    experts (expanded for ``experts`` experts when given)."""
    rows = list(_table(model_type))
    return rows if experts is None else weights_moe.expand_experts(rows, experts)


def _spec_table(spec: Spec, model_type: str, *, reading: bool = False) -> list[Row]:
    """The rows for ``spec`` (experts expanded), with the read-only rows when ``reading``."""
    rows = list(_table(model_type))
    if reading:
        rows += weights_moe.READ_ONLY_TABLES.get(model_type, [])
    experts = spec.architecture.mlp.experts
    return weights_moe.expand_experts(rows, experts.count if experts else 0)


def _table(model_type: str) -> list[Row]:
    try:
        return NAME_TABLES[model_type]
    except KeyError:
        raise SpecError.at(
            "no weight name table for this model type",
            key_path=("model_type",),
            found=repr(model_type),
            accepted=", ".join(NAME_TABLES),
        ) from None


# --- transforms ------------------------------------------------------------------------------

_PARTS = ("q", "k", "v")


@dataclass(frozen=True)
class _Fused:
    """Where q, k and v sit in a fused projection: widths h*k, g*k, g*k and the head layout."""

    heads: int
    kv_heads: int
    head_width: int

    def widths(self) -> tuple[int, int, int]:
        return (
            self.heads * self.head_width,
            self.kv_heads * self.head_width,
            self.kv_heads * self.head_width,
        )


def _to_ours(transform: str, hf: Tensor, fused: _Fused) -> Tensor:
    if is_fused_index(transform):
        return fused_to_ours(transform, hf, fused.heads, fused.kv_heads, fused.head_width)
    kind, _, part = transform.partition(".")
    if kind == "copy":
        return hf
    if kind == "transpose":
        return hf.T
    if weights_moe.is_experts(kind):
        return weights_moe.to_ours(kind, part, hf)
    j = _PARTS.index(part)
    if kind == "qkv_cols":  # last axis [q | k | v]
        widths = fused.widths()
        start = sum(widths[:j])
        return hf[..., start : start + widths[j]]
    if kind in ("qkv_per_head", "qkv_per_head_T"):  # first axis [heads, 3, head_size]
        h, k = fused.heads, fused.head_width
        per_head = hf.reshape(h, 3, k, *hf.shape[1:])[:, j]
        out = per_head.reshape(h * k, *hf.shape[1:])
        return out.T if kind == "qkv_per_head_T" else out
    raise AssertionError(f"unknown transform {transform}")


def _to_hf(transform: str, parts: Mapping[str, Tensor], fused: _Fused) -> Tensor:
    """Build one transformers tensor from its parts (keyed 'q', 'k', 'v', or '' if unfused)."""
    if is_fused_index(transform):
        return fused_to_hf(transform, parts, fused.heads, fused.kv_heads, fused.head_width)
    kind, _, _ = transform.partition(".")
    if kind == "copy":
        return parts[""]
    if kind == "transpose":
        return parts[""].T
    if weights_moe.is_experts(kind):
        return weights_moe.to_hf(kind, parts)
    q, k, v = (parts[p] for p in _PARTS)
    if kind == "qkv_cols":
        return torch.cat([q, k, v], dim=-1)
    if kind in ("qkv_per_head", "qkv_per_head_T"):
        if kind == "qkv_per_head_T":
            q, k, v = q.T, k.T, v.T
        h, w = fused.heads, fused.head_width
        stacked = torch.stack([t.reshape(h, w, *t.shape[1:]) for t in (q, k, v)], dim=1)
        return stacked.reshape(3 * h * w, *q.shape[1:])
    raise AssertionError(f"unknown transform {transform}")


def _part(transform: str) -> str:
    return transform.partition(".")[2]


# --- matching --------------------------------------------------------------------------------


def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(re.escape(pattern).replace(re.escape("{i}"), r"(?P<i>\d+)") + r"\Z")


def _expand(pattern: str, layers: int) -> list[str]:
    if "{i}" not in pattern:
        return [pattern]
    return [pattern.replace("{i}", str(i)) for i in range(layers)]


def _fused(spec: Spec) -> _Fused:
    s = sizes_of(spec.architecture)
    return _Fused(s.heads, s.kv_heads, s.head_width)


def _error(message: str, tensor: str, **kw: str) -> SpecError:
    return SpecError.at(message, key_path=(tensor,), **kw)


def _shape(t: Tensor | tuple[int, ...]) -> str:
    return str(tuple(t.shape) if isinstance(t, Tensor) else tuple(t))


# --- the two directions ----------------------------------------------------------------------


def from_hf_state_dict(
    spec: Spec, state_dict: Mapping[str, Tensor], model_type: str
) -> dict[str, Tensor]:
    """Our parameters (names and shapes of :func:`parameter_shapes`, in its order) from a
    transformers ``state_dict`` of the family ``model_type``.

    Raises :class:`SpecError` naming the tensor for a tensor that cannot be placed (unknown name,
    a parameter the spec does not have, a wrong shape, a tied copy that differs from the
    embedding, two copies of one parameter that differ) and for a parameter no tensor fills.
    """
    arch = spec.architecture
    shapes = parameter_shapes(arch)
    table = _spec_table(spec, model_type, reading=True)
    compiled = [(_regex(hf), ours, transform) for hf, ours, transform in table]
    buffers = [re.compile(p + r"\Z") for p in _COMMON_BUFFERS + BUFFERS.get(model_type, [])]
    fused = _fused(spec)
    tied = arch.embeddings.tied

    out: dict[str, Tensor] = {}
    source: dict[str, str] = {}
    tied_copies: list[tuple[str, Tensor]] = []
    aliases = ALIASES.get(model_type, {})
    prefix = BASE_PREFIX.get(model_type, "")
    for name, tensor in state_dict.items():
        rows: list[tuple[re.Match[str], str, str]] = []
        for candidate in (aliases.get(name, name), prefix + name):
            if any(b.match(candidate) for b in buffers):
                break
            rows = [(m, ours, tr) for rx, ours, tr in compiled if (m := rx.match(candidate))]
            if rows:
                break
        else:
            raise _error(
                f"cannot place tensor {name!r}: no row of the {model_type} name table matches it",
                name,
                found=_shape(tensor),
            )
        if not rows:  # a buffer, not a parameter
            continue
        placed = [(_ours(m, pattern), tr) for m, pattern, tr in rows]
        # alternative places for one tensor (Falcon's input_layernorm): the spec's pick
        known = [(o, tr) for o, tr in placed if o in shapes or (o == "unembed.W_U" and tied)]
        for ours, transform in known or placed:
            value = _to_ours(transform, tensor.detach(), fused)
            if ours == "unembed.W_U" and tied:
                tied_copies.append((name, value))
                continue
            if ours not in shapes:
                raise _error(
                    f"cannot place tensor {name!r}: the spec has no parameter {ours!r}",
                    name,
                    found=_shape(tensor),
                )
            if tuple(value.shape) != shapes[ours]:
                raise _error(
                    f"tensor {name!r} does not fit {ours!r}",
                    name,
                    found=_shape(value) + " after " + transform,
                    accepted=_shape(shapes[ours]),
                )
            if ours in out:
                if not torch.equal(out[ours], value):
                    raise _error(
                        f"tensors {source[ours]!r} and {name!r} both hold {ours!r} but differ",
                        name,
                    )
                continue
            out[ours] = value.contiguous()
            source[ours] = name

    missing = [ours for ours in shapes if ours not in out]
    if missing:
        hf_names = {ours: hf for hf, ours, _ in _expanded_rows(table, arch.layers)}
        listed = ", ".join(f"{m} (from {hf_names.get(m, '?')!r})" for m in missing)
        raise _error(f"missing tensors for {listed}", missing[0])
    for name, value in tied_copies:
        if not torch.equal(value, out["embed.W_E"].T):
            raise _error(
                f"tensor {name!r} is the unembedding, which the spec ties to the embedding, "
                "but it differs from the embedding",
                name,
            )
    return {ours: out[ours] for ours in shapes}


def _ours(match: re.Match[str], pattern: str) -> str:
    i = match.groupdict().get("i")
    return pattern.replace("{i}", i) if i is not None else pattern


def _expanded_rows(table: Iterable[Row], layers: int) -> list[Row]:
    rows: list[Row] = []
    for hf, ours, transform in table:
        if "{i}" in hf:
            for i in range(layers):
                rows.append((hf.replace("{i}", str(i)), ours.replace("{i}", str(i)), transform))
        else:
            rows.append((hf, ours, transform))
    return rows


def to_hf_state_dict(
    spec: Spec,
    params: Mapping[str, Tensor],
    model_type: str,
    hf_keys: Iterable[str] | None = None,
) -> dict[str, Tensor]:
    """The transformers tensors of ``model_type`` holding ``params`` (our names).

    Without ``hf_keys``: every tensor the name table can fill from ``params``, a tied
    unembedding included (as transformers' ``state_dict`` has it). With ``hf_keys`` (for example
    ``model.state_dict().keys()``): exactly those keys, less the buffers; a key the table cannot
    fill raises :class:`SpecError` naming it.
    """
    return dict(iter_hf_tensors(spec, params, model_type, names=hf_keys))


def iter_hf_tensors(
    spec: Spec,
    params: Mapping[str, Tensor],
    model_type: str,
    *,
    tied_unembedding: bool = True,
    names: Iterable[str] | None = None,
) -> Iterator[tuple[str, Tensor]]:
    """The transformers tensors of ``model_type`` holding ``params`` (our names), one at a time
    (built as they are asked for, so that a writer can stream them).

    Without ``names``: every tensor the name table can fill, in its order;
    ``tied_unembedding=False`` leaves out the copy of a tied embedding (``lm_head.weight``), as
    ``save_pretrained`` does. With ``names`` (a checkpoint's tensor names, or a model's
    ``state_dict`` keys): exactly those, in that order, less the buffers, each under the name
    given (an alias, or without the base model's prefix, is found as on import); where a table
    holds a parameter under alternative names (Falcon's norms), the names say which. Raises
    :class:`SpecError` for a missing, unknown or misshapen parameter and a name the table cannot
    fill, before anything is yielded."""
    arch = spec.architecture
    shapes = parameter_shapes(arch)
    for ours, shape in shapes.items():
        if ours not in params:
            raise _error(f"missing parameter {ours!r}", ours, accepted=_shape(shape))
        if tuple(params[ours].shape) != shape:
            raise _error(
                f"parameter {ours!r} has the wrong shape",
                ours,
                found=_shape(params[ours]),
                accepted=_shape(shape),
            )
    unknown = [name for name in params if name not in shapes]
    if unknown:
        raise _error(f"the spec has no parameter {unknown[0]!r}", unknown[0])

    tied = arch.embeddings.tied

    def source(ours: str) -> Tensor | None:
        if ours == "unembed.W_U" and tied:
            return params["embed.W_E"].T if tied_unembedding or names is not None else None
        return params.get(ours)

    # group the rows by transformers name: a fused tensor has one row per part; a name is
    # filled when every part has a value (the spec may lack a bias; alternative places of one
    # tensor, as Falcon's input_layernorm, are one part that the spec has once)
    groups: dict[str, list[tuple[str, str, Tensor | None]]] = {}
    # (given names may be of a layout that is read, never written: transformers 4's experts)
    table = _spec_table(spec, model_type, reading=names is not None)
    for hf, ours, transform in _expanded_rows(table, arch.layers):
        groups.setdefault(hf, []).append((ours, transform, source(ours)))
    fillable = [
        hf
        for hf, rows in groups.items()
        if {_part(tr) for _, tr, v in rows if v is not None} == {_part(tr) for _, tr, _ in rows}
    ]
    order = fillable if names is None else _named(list(names), set(fillable), model_type)
    return _hf_tensors(order, groups, _fused(spec))


def _named(names: list[str], fillable: set[str], model_type: str) -> list[tuple[str, str]]:
    """(name to write, table name) for each of ``names`` that is not a buffer."""
    buffers = [re.compile(p + r"\Z") for p in _COMMON_BUFFERS + BUFFERS.get(model_type, [])]
    aliases = ALIASES.get(model_type, {})
    prefix = BASE_PREFIX.get(model_type, "")
    out: list[tuple[str, str]] = []
    for key in names:
        for candidate in (aliases.get(key, key), prefix + key):
            if any(b.match(candidate) for b in buffers):
                break
            if candidate in fillable:
                out.append((key, candidate))
                break
        else:
            raise _error(f"cannot fill tensor {key!r} from the spec's parameters", key)
    return out


def _hf_tensors(
    order: list[str] | list[tuple[str, str]],
    groups: Mapping[str, list[tuple[str, str, Tensor | None]]],
    fused: _Fused,
) -> Iterator[tuple[str, Tensor]]:
    for item in order:
        name, hf = item if isinstance(item, tuple) else (item, item)
        rows = groups[hf]
        parts = {_part(tr): value for _, tr, value in rows if value is not None}
        yield name, _to_hf(rows[0][1], parts, fused).contiguous()


def total_numel(params: Mapping[str, Tensor]) -> int:
    """Number of scalars in a parameter dict."""
    return sum(math.prod(t.shape) for t in params.values())
