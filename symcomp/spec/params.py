"""The parameters an architecture holds, by name and shape, and the sizes expressions may use.

Shapes follow the row-vector convention of the design notes: a linear map is ``x W + b`` with
``W`` of shape (in, out). A tied unembedding is not a separate parameter: it is ``embed.W_E``
read transposed, so it is counted once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from symcomp.lang import evaluate_scalar, parse_expr
from symcomp.spec.model import Architecture, LearnedPositions, RotaryPositions


@dataclass(frozen=True)
class Sizes:
    """The integer sizes of an architecture, by the names that expressions use."""

    width: int
    layers: int
    heads: int
    kv_heads: int
    head_width: int
    hidden: int
    vocab: int
    positions: int
    rotary_width: int

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def rotary_width(arch: Architecture) -> int:
    """Rotated dims per head: int(head_width * fraction), as transformers computes it."""
    if not isinstance(arch.positions, RotaryPositions):
        return 0
    assert arch.attention.head_width is not None, "head width is filled in by the loader"
    return int(arch.attention.head_width * arch.positions.rotated_fraction)


def sizes_of(arch: Architecture) -> Sizes:
    att = arch.attention
    assert att.head_width is not None, "head width is filled in by the loader"
    return Sizes(
        width=arch.width,
        layers=arch.layers,
        heads=att.heads,
        kv_heads=att.kv_heads,
        head_width=att.head_width,
        hidden=arch.mlp.hidden,
        vocab=arch.vocab_size,
        positions=arch.max_positions,
        rotary_width=rotary_width(arch),
    )


def evaluate_size_expression(value: float | int | str, arch: Architecture) -> float:
    """A number, or a string in the architecture's sizes (``sqrt(width)``), as a float."""
    if not isinstance(value, str):
        return float(value)
    return evaluate_scalar(parse_expr(value), sizes_of(arch).as_dict())


def _norm(prefix: str, arch: Architecture, d: int) -> dict[str, tuple[int, ...]]:
    out = {f"{prefix}.gain": (d,)}
    if arch.norm.bias:
        out[f"{prefix}.bias"] = (d,)
    return out


def block_norm_names(arch: Architecture) -> tuple[str, ...]:
    """The norms inside one block, by local name."""
    if arch.block == "parallel_one_norm":
        return ("norm",)
    if arch.block == "sandwich":
        return ("attn_norm", "attn_out_norm", "mlp_norm", "mlp_out_norm")
    if arch.block == "post_sublayer_norm":
        return ("attn_out_norm", "mlp_out_norm")
    return ("attn_norm", "mlp_norm")


def qk_norm_widths(arch: Architecture) -> tuple[int, int] | None:
    """The widths of the query and key norms' gains, or None without QK-norm."""
    s = sizes_of(arch)
    if arch.attention.qk_norm == "per_head":
        return s.head_width, s.head_width
    if arch.attention.qk_norm == "full_width":
        return s.heads * s.head_width, s.kv_heads * s.head_width
    return None


def layer_parameter_shapes(arch: Architecture) -> dict[str, tuple[int, ...]]:
    """Shapes of one block's parameters, by local name (``attn.W_Q``, ``mlp_norm.gain``, ...)."""
    out = _attention_shapes(arch)
    d, f = arch.width, arch.mlp.hidden
    experts = arch.mlp.experts
    if experts is None:
        out.update(_mlp_shapes(arch, "mlp.", d, f))
        return out
    out["mlp.W_router"] = (d, experts.count)
    for e in range(experts.count):
        out.update(_mlp_shapes(arch, f"mlp.experts.{e}.", d, f))
    return out


def _attention_shapes(arch: Architecture) -> dict[str, tuple[int, ...]]:
    """One block's parameters outside its MLP: the norms and the attention."""
    s = sizes_of(arch)
    d, h, g, k = s.width, s.heads, s.kv_heads, s.head_width
    bias = arch.attention.bias
    out: dict[str, tuple[int, ...]] = {}
    for name in block_norm_names(arch):
        out.update(_norm(name, arch, d))
    for proj, cols, has_bias in (("Q", h * k, bias.q), ("K", g * k, bias.k), ("V", g * k, bias.v)):
        out[f"attn.W_{proj}"] = (d, cols)
        if has_bias:
            out[f"attn.b_{proj}"] = (cols,)
    qk_norm = qk_norm_widths(arch)
    if qk_norm is not None:
        out["attn.q_norm.gain"] = (qk_norm[0],)
        out["attn.k_norm.gain"] = (qk_norm[1],)
    out["attn.W_O"] = (h * k, d)
    if bias.o:
        out["attn.b_O"] = (d,)
    return out


def _mlp_shapes(arch: Architecture, prefix: str, d: int, f: int) -> dict[str, tuple[int, ...]]:
    """One MLP's parameters (the dense MLP, or one expert of a mixture), by local name."""
    out: dict[str, tuple[int, ...]] = {}
    branches = ("up", "gate") if arch.mlp.gated else ("up",)
    for branch in branches:
        out[f"{prefix}W_{branch}"] = (d, f)
        if arch.mlp.bias:
            out[f"{prefix}b_{branch}"] = (f,)
    out[f"{prefix}W_down"] = (f, d)
    if arch.mlp.bias:
        out[f"{prefix}b_down"] = (d,)
    return out


def parameter_shapes(arch: Architecture) -> dict[str, tuple[int, ...]]:
    """Every parameter of the model, in forward order, with its shape."""
    before, after = _outer_shapes(arch)
    out = dict(before)
    layer = layer_parameter_shapes(arch)
    for i in range(arch.layers):
        out.update({f"layers.{i}.{name}": shape for name, shape in layer.items()})
    out.update(after)
    return out


def _outer_shapes(
    arch: Architecture,
) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
    """The parameters before the blocks (embeddings) and after them (final norm, head)."""
    s = sizes_of(arch)
    d = s.width
    out: dict[str, tuple[int, ...]] = {"embed.W_E": (s.vocab, d)}
    if isinstance(arch.positions, LearnedPositions):
        out["embed.W_P"] = (s.positions + arch.positions.offset, d)
    if arch.embeddings.token_types:
        out["embed.W_T"] = (arch.embeddings.token_types, d)
    if arch.embedding_norm:
        out.update(_norm("embed_norm", arch, d))
    before, out = out, {}
    if arch.final_norm:
        out.update(_norm("final_norm", arch, d))
    if arch.prediction_head is not None:
        out["head.W_dense"] = (d, d)
        out["head.b_dense"] = (d,)
        out.update(_norm("head_norm", arch, d))
    if not arch.embeddings.tied:
        out["unembed.W_U"] = (d, s.vocab)
    if arch.embeddings.unembedding_bias:
        out["unembed.b_U"] = (s.vocab,)
    return before, out


def _size(shapes: dict[str, tuple[int, ...]]) -> int:
    return sum(math.prod(shape) for shape in shapes.values())


def layer_parameter_count(arch: Architecture) -> int:
    """The scalar parameters of one block, in closed form (no walk over the experts)."""
    d, f = arch.width, arch.mlp.hidden
    mlp = _size(_mlp_shapes(arch, "mlp.", d, f))
    experts = arch.mlp.experts
    if experts is not None:
        mlp = d * experts.count + experts.count * mlp
    return _size(_attention_shapes(arch)) + mlp


def parameter_count(arch: Architecture) -> int:
    """Total number of scalar parameters, in closed form in the sizes (time and memory do not
    grow with the layer or expert count); a tied tensor counts once."""
    before, after = _outer_shapes(arch)
    return _size(before) + arch.layers * layer_parameter_count(arch) + _size(after)
