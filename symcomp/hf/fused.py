"""Fused checkpoint tensors whose parts are picked out by index: one fused axis, a layout that
says which of its entries belong to which part.

A transform name is ``<layout>[_T].<part>``. The fused axis is the first one (an
``nn.Linear`` weight, stored (out, in), or a bias); ``_T`` transposes the picked weight into our
(in, out) layout. The layouts, for ``h`` query heads, ``g`` key/value heads of width ``k``:

``qkv_rows``
    ``[q | k | v]``: h k query entries, then g k key entries, then g k value entries (Phi-3's
    ``qkv_proj``, MPT's ``Wqkv``, GPTBigCode's multi-query ``c_attn``, Falcon's multi-query
    ``query_key_value``).
``qkv_grouped``
    per key/value head, its h / g query heads, then its key head, then its value head:
    ``[g, h / g + 2, k]`` (Falcon's ``new_decoder_architecture``; with g = h this is the
    per-head ``[h, 3, k]`` layout of BLOOM, GPT-NeoX and multi-head GPTBigCode).
``gate_up``
    ``[gate | up]``, two halves (Phi-3's ``gate_up_proj``).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

LAYOUTS = ("qkv_rows", "qkv_grouped", "gate_up")


def is_fused_index(transform: str) -> bool:
    """Whether ``transform`` is one of this module's layouts."""
    return _parse(transform)[0] in LAYOUTS


def _parse(transform: str) -> tuple[str, bool, str]:
    kind, _, part = transform.partition(".")
    transposed = kind.endswith("_T")
    return kind.removesuffix("_T"), transposed, part


def part_indices(
    layout: str, heads: int, kv_heads: int, head_width: int, total: int
) -> dict[str, Tensor]:
    """The entries of the fused axis (of length ``total``) that each part holds, in our order."""
    h, g, k = heads, kv_heads, head_width
    if layout == "gate_up":
        half = total // 2
        return {"gate": torch.arange(half), "up": torch.arange(half, total)}
    if layout == "qkv_rows":
        q, kv = h * k, g * k
        return {
            "q": torch.arange(q),
            "k": torch.arange(q, q + kv),
            "v": torch.arange(q + kv, q + 2 * kv),
        }
    if layout == "qkv_grouped":
        per = h // g
        grid = torch.arange(g * (per + 2) * k).reshape(g, per + 2, k)
        return {
            "q": grid[:, :per].reshape(-1),
            "k": grid[:, per].reshape(-1),
            "v": grid[:, per + 1].reshape(-1),
        }
    raise AssertionError(f"unknown fused layout {layout}")


def fused_to_ours(transform: str, hf: Tensor, heads: int, kv_heads: int, head_width: int) -> Tensor:
    """Our part of the fused transformers tensor ``hf``."""
    layout, transposed, part = _parse(transform)
    index = part_indices(layout, heads, kv_heads, head_width, hf.shape[0])[part]
    picked = hf.index_select(0, index)
    return picked.T if transposed else picked


def fused_to_hf(
    transform: str, parts: Mapping[str, Tensor], heads: int, kv_heads: int, head_width: int
) -> Tensor:
    """The fused transformers tensor holding ``parts`` (our layout, keyed by part)."""
    layout, transposed, _ = _parse(transform)
    rows = {name: (t.T if transposed else t) for name, t in parts.items()}
    total = sum(t.shape[0] for t in rows.values())
    first = next(iter(rows.values()))
    out = first.new_empty((total, *first.shape[1:]))
    for name, index in part_indices(layout, heads, kv_heads, head_width, total).items():
        out.index_copy_(0, index, rows[name])
    return out
