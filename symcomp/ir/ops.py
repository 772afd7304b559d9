"""The op kinds of the graph IR: one registry entry each.

An entry names the op's input slots (required, then optional) and its attributes. The builder
checks every op it emits against its entry; the interpreter (:mod:`symcomp.ir.interpreter`) and
the symmetry derivation each keep their own registry keyed by the same kinds, so supporting one
more op means one entry here and one function in each of those.

Conventions shared by all kinds (B: batch, T: sequence, n: heads, k: head width):

- activations are ``(B, T, features)``; after ``split_heads`` they are ``(B, n, T, k)``;
- a linear map is ``x W + b`` with ``W`` stored ``(in, out)``; ``transpose=True`` reads the
  stored tensor transposed (a tied unembedding reads ``embed.W_E``, stored ``(V, d)``);
- with grouped-query attention (GQA) key/value head ``g`` serves the ``heads / kv_heads``
  consecutive query heads ``g * group .. (g + 1) * group - 1``, as transformers' ``repeat_kv``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class OpKind:
    """One kind of op: its input slots and attributes, and what it computes."""

    kind: str
    inputs: tuple[str, ...]
    optional: tuple[str, ...] = ()
    attrs: tuple[str, ...] = ()
    doc: str = ""

    @property
    def slots(self) -> tuple[str, ...]:
        return self.inputs + self.optional


OP_KINDS: dict[str, OpKind] = {}


def register_op(
    kind: str,
    inputs: tuple[str, ...],
    optional: tuple[str, ...] = (),
    attrs: tuple[str, ...] = (),
    doc: str = "",
) -> OpKind:
    assert kind not in OP_KINDS, f"op kind {kind!r} registered twice"
    OP_KINDS[kind] = entry = OpKind(kind, inputs, optional, attrs, doc)
    return entry


register_op(
    "embed",
    ("x", "W"),
    attrs=("index", "offset", "padding"),
    doc="Rows of the table W: index='token' reads row x[b, t]; 'position' reads row offset + t, "
    "or, with a padding token id, row offset - 1 + (non-padding tokens up to t) for a "
    "non-padding token and row offset - 1 for padding (RoBERTa); 'token_type' reads row 0 "
    "(the input is token ids only).",
)
register_op(
    "scale",
    ("x",),
    attrs=("factor", "expr"),
    doc="x * factor, a constant evaluated from the spec's size expression expr (Gemma).",
)
register_op(
    "sinusoid",
    ("x",),
    attrs=("width", "base", "offset"),
    doc="A fixed (T, width) table, no parameters: position p is row n = p + offset, sin(n w_i) "
    "then cos(n w_i) for i < width // 2, w_i = base^(-i / (width // 2 - 1)), a zero last dim "
    "for an odd width; x (the token ids) gives only the sequence length.",
)
register_op("add", ("x", "y"), doc="x + y: the residual stream x plus a branch y.")
register_op(
    "norm",
    ("x", "gain"),
    ("bias",),
    attrs=("type", "eps", "gain_form"),
    doc="layernorm: (x - mean) / sqrt(var + eps); rmsnorm: x / sqrt(mean(x^2) + eps); then "
    "times gain (gain_form 'w') or 1 + gain ('one_plus_w'), plus bias.",
)
register_op(
    "linear",
    ("x", "W"),
    ("b",),
    attrs=("transpose",),
    doc="x W + b (x W^T + b when transpose).",
)
register_op(
    "split_heads",
    ("x",),
    attrs=("heads", "head_width"),
    doc="(B, T, n k) -> (B, n, T, k): head j is columns j k .. (j + 1) k - 1.",
)
register_op(
    "merge_heads", ("x",), attrs=("heads", "head_width"), doc="(B, n, T, k) -> (B, T, n k)."
)
register_op(
    "rope",
    ("x",),
    attrs=("base", "rotary_width", "pair_layout", "position_divisor"),
    doc="Rotate the first rotary_width dims of each head by position p / position_divisor times "
    "the frequencies base^(-2i / rotary_width); pairs (i, i + r/2) (split_half) or (2i, 2i + 1) "
    "(adjacent); the other dims pass through.",
)
register_op(
    "scores",
    ("q", "k"),
    attrs=("scale", "group", "causal", "window", "alibi_slopes", "softcap"),
    doc="q k^T * scale per query head (key head = query head // group), then softcap * "
    "tanh(. / softcap) if softcap is set, plus the ALiBi bias slope_h * (j - i) if any; keys "
    "j > i (causal) or j <= i - window are set to -inf.",
)
register_op("softmax", ("x",), doc="Softmax over the last axis (the keys).")
register_op(
    "weighted_sum",
    ("p", "v"),
    attrs=("group",),
    doc="p v per query head (value head = query head // group).",
)
register_op(
    "activation",
    ("x",),
    attrs=("fn",),
    doc="Elementwise relu, relu2 (relu(x)^2), gelu (exact erf), gelu_tanh (tanh approximation), "
    "gelu_tanh_bloom (the same with sqrt(2/pi) written 0.79788456) or silu.",
)
register_op("gate", ("a", "b"), attrs=("fn",), doc="act(a) * b: a gated MLP's hidden layer.")
register_op(
    "route",
    ("x", "W"),
    attrs=("top_k", "normalize"),
    doc="A mixture of experts' router: p = softmax(x W) over the E experts, the top_k largest "
    "kept (divided by their sum when normalize) and the others set to 0: (B, T, E) weights.",
)
register_op(
    "expert_weight",
    ("x", "w"),
    attrs=("expert",),
    doc="x * w[..., expert]: one expert's output times its routing weight (0 where the token "
    "did not select it).",
)
register_op(
    "unembed",
    ("x", "W"),
    ("b",),
    attrs=("transpose",),
    doc="Logits x W_U + b_U, or x W_E^T + b_U (transpose) for a tied unembedding.",
)
register_op(
    "softcap", ("x",), attrs=("cap",), doc="cap * tanh(x / cap): soft-capped logits (Gemma2)."
)
register_op("log_softmax", ("x",), doc="Log-probabilities over the vocabulary.")


HOMOGENEITY: dict[str, int] = {"relu": 1, "relu2": 2}
"""The positively homogeneous activations and their degree n: act(a z) = a^n act(z) for a > 0."""


def alibi_slopes(heads: int) -> tuple[float, ...]:
    """ALiBi's per-head slopes, as transformers' BLOOM computes them (there in float32).

    For n a power of two, slope_h = 2^(-8 (h + 1) / n); otherwise the slopes of the closest lower
    power of two c, then every other slope of 2c.
    """
    closest = 2 ** math.floor(math.log2(heads))
    slopes = [2.0 ** (-8.0 * i / closest) for i in range(1, closest + 1)]
    if closest != heads:
        extra = min(closest, heads - closest)
        slopes += [2.0 ** (-4.0 * i / closest) for i in range(1, 2 * extra, 2)]
    return tuple(slopes)
