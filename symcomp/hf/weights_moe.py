"""Checkpoint names of the mixture-of-experts families (Mixtral), for :mod:`.weights`.

transformers 5 stores a layer's experts fused, as 3-D tensors (MixtralExperts):

- ``mlp.experts.gate_up_proj`` (E, 2 f, d): expert e's gate rows ``[:f]`` then its up rows
  ``[f:]`` (``linear(x, gate_up_proj[e]).chunk(2)``: gate first), each an ``nn.Linear`` weight
  (out, in);
- ``mlp.experts.down_proj`` (E, d, f);
- ``mlp.gate.weight`` (E, d): the router (MixtralTopKRouter), no bias.

Checkpoints written by transformers 4 keep one module per expert under ``block_sparse_moe``:
``experts.{e}.w1`` (gate), ``w3`` (up), ``w2`` (down), ``gate`` (the router); transformers 5's
``save_pretrained`` still writes this layout. Both are read; the fused layout is written, unless
the names asked for are the per-expert ones (``symcomp export`` writes a checkpoint's own).

A row's ``{e}`` stands for the expert index and is expanded for the spec's number of experts
before matching. Transforms: ``experts_gate_up.gate.{e}`` / ``.up.{e}`` (half of expert e of the
fused gate_up_proj, transposed) and ``experts_down.down.{e}`` (expert e of down_proj, transposed).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

Row = tuple[str, str, str]

_MIXTRAL_EXPERTS: list[Row] = [
    ("model.layers.{i}.mlp.gate.weight", "layers.{i}.mlp.W_router", "transpose"),
    (
        "model.layers.{i}.mlp.experts.gate_up_proj",
        "layers.{i}.mlp.experts.{e}.W_gate",
        "experts_gate_up.gate.{e}",
    ),
    (
        "model.layers.{i}.mlp.experts.gate_up_proj",
        "layers.{i}.mlp.experts.{e}.W_up",
        "experts_gate_up.up.{e}",
    ),
    (
        "model.layers.{i}.mlp.experts.down_proj",
        "layers.{i}.mlp.experts.{e}.W_down",
        "experts_down.down.{e}",
    ),
]

# transformers 4's per-expert layout: read, never written
_MIXTRAL_PER_EXPERT: list[Row] = [
    ("model.layers.{i}.block_sparse_moe.gate.weight", "layers.{i}.mlp.W_router", "transpose"),
    (
        "model.layers.{i}.block_sparse_moe.experts.{e}.w1.weight",
        "layers.{i}.mlp.experts.{e}.W_gate",
        "transpose",
    ),
    (
        "model.layers.{i}.block_sparse_moe.experts.{e}.w3.weight",
        "layers.{i}.mlp.experts.{e}.W_up",
        "transpose",
    ),
    (
        "model.layers.{i}.block_sparse_moe.experts.{e}.w2.weight",
        "layers.{i}.mlp.experts.{e}.W_down",
        "transpose",
    ),
]


def mixtral_table(llama_like: list[Row]) -> list[Row]:
    """Llama's rows less its dense MLP, then the router and the fused experts."""
    return [r for r in llama_like if ".mlp." not in r[1]] + _MIXTRAL_EXPERTS


READ_ONLY_TABLES: dict[str, list[Row]] = {"mixtral": _MIXTRAL_PER_EXPERT}
"""model_type -> further rows that older checkpoints use: read, never written."""


def expand_experts(rows: list[Row], experts: int) -> list[Row]:
    """Each row with ``{e}`` once per expert; without experts, the rows that have no ``{e}``."""
    out: list[Row] = []
    for row in rows:
        if "{e}" not in row[1]:
            out.append(row)
            continue
        out += [tuple(part.replace("{e}", str(e)) for part in row) for e in range(experts)]  # type: ignore[misc]
    return out


def is_experts(kind: str) -> bool:
    return kind in ("experts_gate_up", "experts_down")


def to_ours(kind: str, part: str, hf: Tensor) -> Tensor:
    """Our (in, out) weight of one expert from a fused experts tensor."""
    half, _, e = part.partition(".")
    weight = hf[int(e)]  # (out, in)
    if kind == "experts_gate_up":
        gate, up = weight.chunk(2, dim=0)
        weight = gate if half == "gate" else up
    return weight.T


def to_hf(kind: str, parts: Mapping[str, Tensor]) -> Tensor:
    """The fused experts tensor from every expert's weights (keys ``gate.{e}``, ``up.{e}``,
    ``down.{e}``)."""
    experts = len({key.partition(".")[2] for key in parts})
    if kind == "experts_gate_up":
        return torch.stack(
            [torch.cat([parts[f"gate.{e}"].T, parts[f"up.{e}"].T]) for e in range(experts)]
        )
    return torch.stack([parts[f"down.{e}"].T for e in range(experts)])
