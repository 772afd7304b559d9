"""The reference interpreter: run a :class:`Graph` in float64, one small function per op kind.

``interpret(graph, params, input_ids) -> log-probs (B, T, V)``. Plain torch, no modules: this is
the ground truth that generated code and symmetry transformations are checked against.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from symcomp.ir.graph import Graph, OpNode
from symcomp.ir.ops import OP_KINDS

Kernel = Callable[..., Tensor]
KERNELS: dict[str, Kernel] = {}


def register(kind: str) -> Callable[[Kernel], Kernel]:
    assert kind in OP_KINDS, f"no op kind {kind!r} in symcomp.ir.ops"

    def deco(fn: Kernel) -> Kernel:
        KERNELS[kind] = fn
        return fn

    return deco


def interpret(graph: Graph, params: Mapping[str, Tensor], input_ids: Tensor) -> Tensor:
    """Log-probabilities (B, T, V) of ``input_ids`` (B, T) under ``params`` (our names)."""
    return evaluate(graph, params, input_ids)[graph.output]


def evaluate(graph: Graph, params: Mapping[str, Tensor], input_ids: Tensor) -> dict[str, Tensor]:
    """Every value of the graph (and every parameter) by name, in float64."""
    missing = set(graph.param) - set(params)
    assert not missing, f"missing parameters: {sorted(missing)}"
    env: dict[str, Tensor] = {name: params[name].to(torch.float64) for name in graph.param}
    env[graph.input] = input_ids
    for op in graph.ops:
        out = KERNELS[op.kind](op, **{i.slot: env[i.node] for i in op.inputs})
        env[op.output] = out.clone()  # a fresh tensor: expanded views cannot carry tangents
    return env


# --- kernels ----------------------------------------------------------------------------------


def padded_position_rows(x: Tensor, padding: int, offset: int) -> Tensor:
    """(B, T) rows of the position table when positions count the non-padding tokens only."""
    real = (x != padding).long()
    return (offset - 1) + torch.cumsum(real, dim=1) * real


@register("embed")
def _embed(op: OpNode, x: Tensor, W: Tensor) -> Tensor:
    B, T = x.shape
    index = op.attr("index")
    if index == "token":
        return W[x]  # (B, T, d)
    if index == "position":
        offset = op.attr("offset")
        assert offset + T <= W.shape[0], f"sequence of {T} is longer than the position table"
        if op.attr("padding") is not None:
            return W[padded_position_rows(x, op.attr("padding"), offset)]
        return W[offset : offset + T].expand(B, T, -1)
    assert index == "token_type", index
    return W[0].expand(B, T, -1)


def sinusoid_table(T: int, width: int, base: float, offset: int) -> Tensor:
    """(T, width) in float64: the rows offset .. offset + T - 1 of the sinusoid table."""
    half = width // 2
    step = math.log(base) / (half - 1) if half > 1 else 0.0  # one frequency (1) below width 4
    freqs = torch.exp(torch.arange(half, dtype=torch.float64) * -step)
    angles = torch.arange(offset, offset + T, dtype=torch.float64)[:, None] * freqs
    table = torch.cat((angles.sin(), angles.cos(), angles.new_zeros(T, width - 2 * half)), -1)
    return table


@register("sinusoid")
def _sinusoid(op: OpNode, x: Tensor) -> Tensor:
    B, T = x.shape
    table = sinusoid_table(T, op.attr("width"), op.attr("base"), op.attr("offset"))
    return table.expand(B, T, -1)


@register("scale")
def _scale(op: OpNode, x: Tensor) -> Tensor:
    return x * op.attr("factor")


@register("add")
def _add(op: OpNode, x: Tensor, y: Tensor) -> Tensor:
    return x + y


@register("norm")
def _norm(op: OpNode, x: Tensor, gain: Tensor, bias: Tensor | None = None) -> Tensor:
    if op.attr("type") == "layernorm":
        x = x - x.mean(-1, keepdim=True)
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + op.attr("eps"))
    x = x * (1.0 + gain if op.attr("gain_form") == "one_plus_w" else gain)
    return x if bias is None else x + bias


@register("linear")
def _linear(op: OpNode, x: Tensor, W: Tensor, b: Tensor | None = None) -> Tensor:
    y = x @ (W.T if op.attr("transpose") else W)
    return y if b is None else y + b


@register("split_heads")
def _split_heads(op: OpNode, x: Tensor) -> Tensor:
    B, T, _ = x.shape
    return x.view(B, T, op.attr("heads"), op.attr("head_width")).transpose(1, 2)  # (B, n, T, k)


@register("merge_heads")
def _merge_heads(op: OpNode, x: Tensor) -> Tensor:
    B, n, T, k = x.shape
    return x.transpose(1, 2).reshape(B, T, n * k)


@register("rope")
def _rope(op: OpNode, x: Tensor) -> Tensor:
    T, r = x.shape[-2], op.attr("rotary_width")
    freqs = 1.0 / op.attr("base") ** (torch.arange(0, r, 2, dtype=torch.float64) / r)  # (r/2,)
    positions = torch.arange(T, dtype=torch.float64) / op.attr("position_divisor")
    angles = positions[:, None] * freqs  # (T, r/2)
    cos, sin = angles.cos(), angles.sin()
    rot, rest = x[..., :r], x[..., r:]
    if op.attr("pair_layout") == "split_half":
        x1, x2 = rot[..., : r // 2], rot[..., r // 2 :]
        rot = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
    else:  # adjacent: pairs (2i, 2i + 1)
        x1, x2 = rot[..., 0::2], rot[..., 1::2]
        rot = torch.stack((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).flatten(-2)
    return torch.cat((rot, rest), dim=-1)


@register("scores")
def _scores(op: OpNode, q: Tensor, k: Tensor) -> Tensor:
    k = k.repeat_interleave(op.attr("group"), dim=1)  # kv head g serves query heads g*group...
    s = (q @ k.transpose(-2, -1)) * op.attr("scale")  # (B, n, T, T)
    cap = op.attr("softcap")
    if cap is not None:
        s = cap * torch.tanh(s / cap)
    T = q.shape[-2]
    i = torch.arange(T)[:, None]  # query position
    j = torch.arange(T)[None, :]  # key position
    slopes = op.attr("alibi_slopes")
    if slopes is not None:
        # slope_h (j - i): BLOOM adds slope_h j, which differs by a per-query constant only
        s = s + torch.tensor(slopes, dtype=s.dtype)[:, None, None] * (j - i).to(s.dtype)
    allowed = torch.ones(T, T, dtype=torch.bool)
    if op.attr("causal"):
        allowed &= j <= i
    window = op.attr("window")
    if window is not None:
        allowed &= j > i - window
    return s.masked_fill(~allowed, float("-inf"))


@register("softmax")
def _softmax(op: OpNode, x: Tensor) -> Tensor:
    return torch.softmax(x, dim=-1)


@register("weighted_sum")
def _weighted_sum(op: OpNode, p: Tensor, v: Tensor) -> Tensor:
    return p @ v.repeat_interleave(op.attr("group"), dim=1)  # (B, n, T, k)


BLOOM_GELU_C = 0.79788456
"""BLOOM's sqrt(2/pi), as bloom_gelu_forward writes it (to 8 decimals)."""

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": F.relu,
    "relu2": lambda x: F.relu(x).square(),
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_tanh_bloom": lambda x: (
        x * 0.5 * (1.0 + torch.tanh(BLOOM_GELU_C * x * (1 + 0.044715 * x * x)))
    ),
    "silu": F.silu,
}


@register("activation")
def _activation(op: OpNode, x: Tensor) -> Tensor:
    return ACTIVATIONS[op.attr("fn")](x)


@register("gate")
def _gate(op: OpNode, a: Tensor, b: Tensor) -> Tensor:
    return ACTIVATIONS[op.attr("fn")](a) * b


def route_weights(logits: Tensor, top_k: int, normalize: bool) -> Tensor:
    """(B, T, E) routing weights from router logits, as transformers' Mixtral router: softmax
    over all experts, the top_k largest kept (renormalized to sum 1 when ``normalize``)."""
    probs = torch.softmax(logits, dim=-1)
    top, index = torch.topk(probs, top_k, dim=-1)
    if normalize:
        top = top / top.sum(dim=-1, keepdim=True)
    return torch.zeros_like(probs).scatter(-1, index, top)


@register("route")
def _route(op: OpNode, x: Tensor, W: Tensor) -> Tensor:
    return route_weights(x @ W, op.attr("top_k"), op.attr("normalize"))


@register("expert_weight")
def _expert_weight(op: OpNode, x: Tensor, w: Tensor) -> Tensor:
    e = op.attr("expert")
    return x * w[..., e : e + 1]


@register("unembed")
def _unembed(op: OpNode, x: Tensor, W: Tensor, b: Tensor | None = None) -> Tensor:
    logits = x @ (W.T if op.attr("transpose") else W)  # (B, T, V)
    return logits if b is None else logits + b


@register("softcap")
def _softcap(op: OpNode, x: Tensor) -> Tensor:
    return op.attr("cap") * torch.tanh(x / op.attr("cap"))


@register("log_softmax")
def _log_softmax(op: OpNode, x: Tensor) -> Tensor:
    return torch.log_softmax(x, dim=-1)


missing_kernels = set(OP_KINDS) - set(KERNELS)
assert not missing_kernels, f"op kinds without a kernel: {sorted(missing_kernels)}"
