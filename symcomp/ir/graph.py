"""Stage 2: the graph IR. ``build_graph(spec) -> Graph``.

The graph is bipartite: data nodes (parameters and activation values) and op nodes. Every op
reads its inputs by slot (``x``, ``W``, ``b``, ``gain``, ...) and writes one value. Each tensor
axis is an :class:`Axis`, typed by the class of transformations it admits, so that the symmetry
derivation can attach one algebra element to each class and apply one local rule per op:

- ``resid@<point>``: the residual stream (width d), one class per point, labelled by the value
  it lives on (``resid@L0.attn_out``, ``resid@final_norm.out``);
- ``qk[l,g]`` / ``v[l,g]``: the query/key (value) width k of key/value head g of layer l; a query
  head reads the class of the key/value head that serves it (GQA);
- ``mlp[l]@<point>``: the MLP hidden width f at one point of layer l (``gate``, ``up``,
  ``hidden`` = what ``W_down`` reads);
- ``vocab@<point>``: token ids (``tokens``, the rows of ``W_E``), ``logits``, ``logprobs``;
- ``positions``, ``token_types``: rows of the position and token-type tables;
- ``batch``, ``seq``, ``keys``: sequence axes (size None: known at run time).

A flattened multi-head axis is the direct sum of its ``blocks``, one per head in order:
``qk[l]@q`` (the h k columns of ``W_Q``: blocks ``qk[l,g(j)]`` for query head j), ``qk[l]@k``,
``v[l]@v`` (blocks ``qk[l,g]``, ``v[l,g]``), ``v[l]@merged`` (the h k rows of ``W_O``). After
``split_heads`` a value is ``(batch, heads, seq, k)``: the heads axis (``heads[l]@q``,
``kv_heads[l]@k``, ``kv_heads[l]@v``, ``heads[l]@mixed``) carries the same ``blocks``, the class
of each head's features, and the feature axis is the generic ``qk[l]@head`` or ``v[l]@head``.
Attention scores and probabilities are ``(batch, heads[l]@scores, seq, keys)``.

Tying is explicit: one parameter node, several uses. Each use's edge carries the axes as that op
sees them (stored order), so the tied unembedding's edge from ``embed.W_E`` reads
``(vocab@logits, resid@<final point>)`` while the embedding's reads ``(vocab@tokens,
resid@embed.tokens)``: the derivation demands the same change of the parameter from both.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

import networkx as nx

from symcomp.ir.ops import OP_KINDS, alibi_slopes
from symcomp.spec.model import (
    AlibiPositions,
    Architecture,
    LearnedPositions,
    RotaryPositions,
    SinusoidalPositions,
    Spec,
)
from symcomp.spec.params import Sizes, evaluate_size_expression, parameter_shapes, sizes_of

# --- nodes ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Axis:
    """One tensor axis and its class: ``kind``, ``index`` (layer, head) and ``point``."""

    kind: str
    size: int | None = None
    index: tuple[int, ...] = ()
    point: str = ""
    blocks: tuple[Axis, ...] = ()  # a direct sum of per-head classes (see the module docstring)

    @property
    def name(self) -> str:
        index = f"[{','.join(map(str, self.index))}]" if self.index else ""
        return f"{self.kind}{index}" + (f"@{self.point}" if self.point else "")

    def __repr__(self) -> str:
        return f"{self.name}:{self.size}" if self.size is not None else self.name


BATCH = Axis("batch")
SEQ = Axis("seq")
KEYS = Axis("keys")

Axes = tuple[Axis, ...]


@dataclass(frozen=True)
class ParamNode:
    """A parameter: its name in :func:`parameter_shapes`, its shape, its axes at its first use."""

    name: str
    shape: tuple[int, ...]
    axes: Axes


@dataclass(frozen=True)
class ValueNode:
    """An activation: ``(batch, seq, features)``, or ``(batch, heads, seq, k)`` per head."""

    name: str
    axes: Axes


@dataclass(frozen=True)
class Input:
    """One input of an op: its slot, the node it reads, the axes as this op sees them."""

    slot: str
    node: str
    axes: Axes


@dataclass(frozen=True)
class OpNode:
    """An op of a registered kind: attributes as (key, value) pairs, inputs by slot, one output."""

    name: str
    kind: str
    attrs: tuple[tuple[str, Any], ...]
    inputs: tuple[Input, ...]
    output: str

    def attr(self, key: str) -> Any:
        return dict(self.attrs)[key]

    def input(self, slot: str) -> Input | None:
        return next((i for i in self.inputs if i.slot == slot), None)


@dataclass(frozen=True)
class Graph:
    """A model as a graph: its architecture and sizes, parameters, values, ops in order."""

    arch: Architecture
    sizes: Sizes
    params: tuple[ParamNode, ...]  # in the order of parameter_shapes
    values: tuple[ValueNode, ...]
    ops: tuple[OpNode, ...]  # topologically ordered
    input: str  # the token ids, (batch, seq)
    output: str  # the log-probabilities, (batch, seq, vocab)
    nx: nx.MultiDiGraph = field(compare=False, repr=False)  # frozen; edges carry slot and axes

    @cached_property
    def param(self) -> dict[str, ParamNode]:
        return {p.name: p for p in self.params}

    @cached_property
    def value(self) -> dict[str, ValueNode]:
        return {v.name: v for v in self.values}

    def uses(self, param: str) -> list[tuple[OpNode, Input]]:
        """Every (op, input) that reads ``param``: two for a tied embedding."""
        return list(self._uses.get(param, ()))

    @cached_property
    def _uses(self) -> dict[str, list[tuple[OpNode, Input]]]:
        index: dict[str, list[tuple[OpNode, Input]]] = {}
        for op in self.ops:
            for i in op.inputs:
                index.setdefault(i.node, []).append((op, i))
        return index

    def axis_classes(self) -> Iterator[Axis]:
        """Every distinct axis class of the graph, block classes included, in first-seen order."""
        seen: set[str] = set()
        stack = [a for node in (*self.params, *self.values) for a in node.axes]
        for axis in stack:
            for a in (axis, *axis.blocks):
                if a.name not in seen:
                    seen.add(a.name)
                    yield a

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (the networkx view is rebuilt from the ops)."""
        return {
            "architecture": self.arch.model_dump(mode="json"),
            "sizes": self.sizes.as_dict(),
            "params": [asdict(p) for p in self.params],
            "values": [asdict(v) for v in self.values],
            "ops": [asdict(op) for op in self.ops],
            "input": self.input,
            "output": self.output,
        }


# --- the builder ------------------------------------------------------------------------------


class _Builder:
    """Collects nodes while the passes below walk the architecture in forward order."""

    def __init__(self, arch: Architecture):
        self.arch = arch
        self.sizes = sizes_of(arch)
        self.shapes = parameter_shapes(arch)
        self.params: dict[str, ParamNode] = {}
        self.values: dict[str, ValueNode] = {"input_ids": ValueNode("input_ids", (BATCH, SEQ))}
        self.ops: list[OpNode] = []

    def resid(self, point: str) -> Axis:
        return Axis("resid", self.sizes.width, point=point)

    def has(self, param: str) -> bool:
        return param in self.shapes

    def op(
        self,
        kind: str,
        out: str,
        out_axes: Axes,
        inputs: dict[str, str | tuple[str, Axes]],
        **attrs: Any,
    ) -> str:
        """Emit one op writing the value ``out``; a parameter input is ``(name, axes)``."""
        entry = OP_KINDS[kind]
        assert set(entry.inputs) <= set(inputs) <= set(entry.slots), f"{kind}: slots {inputs}"
        assert set(attrs) == set(entry.attrs), f"{kind}: attrs {sorted(attrs)}"
        ins = []
        for slot, source in inputs.items():
            if isinstance(source, str):
                ins.append(Input(slot, source, self.values[source].axes))
            else:
                ins.append(Input(slot, source[0], self._use(*source)))
        assert out not in self.values, f"value {out} written twice"
        self.values[out] = ValueNode(out, out_axes)
        self.ops.append(OpNode(f"{out}/{kind}", kind, tuple(attrs.items()), tuple(ins), out))
        return out

    def _use(self, name: str, axes: Axes) -> Axes:
        shape = self.shapes[name]
        assert tuple(a.size for a in axes) == shape, f"{name}: axes {axes} vs shape {shape}"
        self.params.setdefault(name, ParamNode(name, shape, axes))
        return axes

    def linear(self, x: str, W: str, b: str | None, out: str, out_axis: Axis) -> str:
        in_axis = self.values[x].axes[-1]
        inputs: dict[str, str | tuple[str, Axes]] = {"x": x, "W": (W, (in_axis, out_axis))}
        if b is not None and self.has(b):
            inputs["b"] = (b, (out_axis,))
        return self.op("linear", out, (BATCH, SEQ, out_axis), inputs, transpose=False)

    def norm(self, prefix: str, x: str, out: str) -> str:
        norm, axis = self.arch.norm, self.resid(out)
        inputs: dict[str, str | tuple[str, Axes]] = {"x": x, "gain": (f"{prefix}.gain", (axis,))}
        if norm.bias:
            inputs["bias"] = (f"{prefix}.bias", (axis,))
        attrs = {"type": norm.type, "eps": norm.eps, "gain_form": norm.gain}
        return self.op("norm", out, (BATCH, SEQ, axis), inputs, **attrs)

    def qk_norm(self, prefix: str, x: str, out: str, axis: Axis, out_axes: Axes) -> str:
        """A query or key norm: the model's norm over the last axis (one head, or all heads)."""
        norm = self.arch.norm
        inputs: dict[str, str | tuple[str, Axes]] = {"x": x, "gain": (f"{prefix}.gain", (axis,))}
        attrs = {"type": norm.type, "eps": norm.eps, "gain_form": norm.gain}
        return self.op("norm", out, out_axes, inputs, **attrs)

    def residual_scale(self, y: str) -> str:
        """A sublayer's output times the residual multiplier (Granite), or as it is."""
        factor = self.arch.residual_scale
        if factor == 1.0:
            return y
        axes = (BATCH, SEQ, self.resid(f"{y}.scaled"))
        return self.op("scale", f"{y}.scaled", axes, {"x": y}, factor=factor, expr=repr(factor))

    def add(self, x: str, y: str, out: str) -> str:
        return self.op("add", out, (BATCH, SEQ, self.resid(out)), {"x": x, "y": y})

    def graph(self, output: str) -> Graph:
        order = [p for p in self.shapes if p in self.params]
        assert order == list(self.shapes), f"unused parameters: {set(self.shapes) - set(order)}"
        g = nx.MultiDiGraph()
        for p in self.params.values():
            g.add_node(p.name, role="param", node=p)
        for v in self.values.values():
            g.add_node(v.name, role="value", node=v)
        for op in self.ops:
            assert op.name not in g, f"node name {op.name} used twice"
            g.add_node(op.name, role="op", node=op)
            for i in op.inputs:
                g.add_edge(i.node, op.name, key=i.slot, slot=i.slot, axes=i.axes)
            out = self.values[op.output]
            g.add_edge(op.name, out.name, key="out", slot="out", axes=out.axes)
        assert nx.is_directed_acyclic_graph(g), "the graph has a cycle"
        return Graph(
            arch=self.arch,
            sizes=self.sizes,
            params=tuple(self.params[p] for p in self.shapes),
            values=tuple(self.values.values()),
            ops=tuple(self.ops),
            input="input_ids",
            output=output,
            nx=nx.freeze(g),
        )


# --- passes: one per part of the model, in forward order --------------------------------------


def _embeddings(b: _Builder) -> str:
    arch, s = b.arch, b.sizes
    tokens = Axis("vocab", s.vocab, point="tokens")
    x = b.op(
        "embed",
        "embed.tokens",
        (BATCH, SEQ, b.resid("embed.tokens")),
        {"x": "input_ids", "W": ("embed.W_E", (tokens, b.resid("embed.tokens")))},
        index="token",
        offset=0,
        padding=None,
    )
    scale = arch.embeddings.scale
    factor = evaluate_size_expression(scale, arch)
    if factor != 1.0:
        axes = (BATCH, SEQ, b.resid("embed.scaled"))
        x = b.op("scale", "embed.scaled", axes, {"x": x}, factor=factor, expr=str(scale))
    if isinstance(arch.positions, LearnedPositions):
        offset = arch.positions.offset
        rows = Axis("positions", s.positions + offset)
        axis = b.resid("embed.positions")
        pos = b.op(
            "embed",
            "embed.positions",
            (BATCH, SEQ, axis),
            {"x": "input_ids", "W": ("embed.W_P", (rows, axis))},
            index="position",
            offset=offset,
            padding=arch.positions.padding_token,
        )
        x = b.add(x, pos, "embed.with_positions")
    if isinstance(arch.positions, SinusoidalPositions):
        pos = b.op(
            "sinusoid",
            "embed.positions",
            (BATCH, SEQ, b.resid("embed.positions")),
            {"x": "input_ids"},
            width=s.width,
            base=arch.positions.base,
            offset=arch.positions.offset,
        )
        x = b.add(x, pos, "embed.with_positions")
    if arch.embeddings.token_types:
        rows = Axis("token_types", arch.embeddings.token_types)
        axis = b.resid("embed.token_types")
        types = b.op(
            "embed",
            "embed.token_types",
            (BATCH, SEQ, axis),
            {"x": "input_ids", "W": ("embed.W_T", (rows, axis))},
            index="token_type",
            offset=0,
            padding=None,
        )
        x = b.add(x, types, "embed.with_token_types")
    if arch.embedding_norm:
        x = b.norm("embed_norm", x, "embed_norm.out")
    return x


def _head_blocks(kind: str, layer: int, serving: list[int], k: int) -> tuple[Axis, ...]:
    """The class of each head's features: that of the key/value head serving it."""
    return tuple(Axis(kind, k, (layer, g)) for g in serving)


def _attention(b: _Builder, i: int, x: str) -> str:
    arch, s = b.arch, b.sizes
    h, g, k = s.heads, s.kv_heads, s.head_width
    group = h // g
    P, L = f"layers.{i}.attn", f"L{i}.attn"
    serving = [j // group for j in range(h)]  # the kv head that serves each query head
    pos = arch.positions
    rotated = isinstance(pos, RotaryPositions) and i not in pos.nope_layers  # NoPE: no rope op
    split = {}
    for name, kind, heads in (("q", "qk", serving), ("k", "qk", range(g)), ("v", "v", range(g))):
        blocks = _head_blocks(kind, i, list(heads), k)
        n = len(blocks)
        flat = Axis(kind, n * k, (i,), name, blocks)  # qk[i]@q, qk[i]@k, v[i]@v
        proj = name.upper()
        y = b.linear(x, f"{P}.W_{proj}", f"{P}.b_{proj}", f"{L}.{name}", flat)
        qk_norm = arch.attention.qk_norm if kind == "qk" else None
        if qk_norm == "full_width":
            normed = Axis(kind, n * k, (i,), f"{name}_norm", blocks)
            y = b.qk_norm(f"{P}.{name}_norm", y, f"{L}.{name}_norm", normed, (BATCH, SEQ, normed))
        heads_axis = Axis("heads" if name == "q" else "kv_heads", n, (i,), name, blocks)
        axes = (BATCH, heads_axis, SEQ, Axis(kind, k, (i,), "head"))
        y = b.op("split_heads", f"{L}.{name}_heads", axes, {"x": y}, heads=n, head_width=k)
        if qk_norm == "per_head":
            y = b.qk_norm(f"{P}.{name}_norm", y, f"{L}.{name}_norm", axes[-1], axes)
        if kind == "qk" and rotated:
            rope = arch.positions
            y = b.op(
                "rope",
                f"{L}.{name}_rot",
                axes,  # each qk class must commute with the rotations: the axes pass through
                {"x": y},
                base=rope.base,
                rotary_width=s.rotary_width,
                pair_layout=rope.pair_layout,
                position_divisor=rope.scaling.factor if rope.scaling else 1.0,
            )
        split[name] = y
    scores = b.op(
        "scores",
        f"{L}.scores",
        (BATCH, Axis("heads", h, (i,), "scores"), SEQ, KEYS),
        {"q": split["q"], "k": split["k"]},
        scale=arch.attention.scale or k**-0.5,
        group=group,
        causal=arch.kind == "causal_lm",
        window=_window(arch, i),
        softcap=arch.attention.softcap,
        alibi_slopes=_alibi(arch, h, k),
    )
    probs = b.op("softmax", f"{L}.probs", b.values[scores].axes, {"x": scores})
    v_blocks = _head_blocks("v", i, serving, k)
    heads_axis = Axis("heads", h, (i,), "mixed", v_blocks)
    mixed_axes = (BATCH, heads_axis, SEQ, Axis("v", k, (i,), "head"))
    mixed = b.op(
        "weighted_sum", f"{L}.mixed", mixed_axes, {"p": probs, "v": split["v"]}, group=group
    )
    axes = (BATCH, SEQ, Axis("v", h * k, (i,), "merged", v_blocks))
    merged = b.op("merge_heads", f"{L}.merged", axes, {"x": mixed}, heads=h, head_width=k)
    return b.linear(merged, f"{P}.W_O", f"{P}.b_O", f"L{i}.attn_out", b.resid(f"L{i}.attn_out"))


def _window(arch: Architecture, layer: int) -> int | None:
    """The sliding window of one layer: every layer's, or only the listed layers'."""
    layers = arch.attention.sliding_layers
    return arch.attention.sliding_window if layers is None or layer in layers else None


def _alibi(arch: Architecture, h: int, k: int) -> tuple[float, ...] | None:
    """ALiBi's slopes, divided by sqrt(k) when the bias is added before the attention scale."""
    pos = arch.positions
    if not isinstance(pos, AlibiPositions):
        return None
    return tuple(s * k**-0.5 for s in alibi_slopes(h)) if pos.scaled else alibi_slopes(h)


def _mlp(b: _Builder, i: int, x: str) -> str:
    experts = b.arch.mlp.experts
    if experts is None:
        return _dense_mlp(b, i, x, f"layers.{i}.mlp", f"L{i}.mlp", f"L{i}.mlp_out", (i,))
    P, L, E = f"layers.{i}.mlp", f"L{i}.mlp", experts.count
    router = (b.values[x].axes[-1], Axis("experts", E, (i,), "router"))
    weights = b.op(
        "route",
        f"{L}.weights",
        (BATCH, SEQ, Axis("experts", E, (i,), "weights")),
        {"x": x, "W": (f"{P}.W_router", router)},
        top_k=experts.top_k,
        normalize=experts.normalize,
    )
    total = ""
    for e in range(E):
        y = _dense_mlp(b, i, x, f"{P}.experts.{e}", f"{L}.expert{e}", f"{L}.expert{e}.out", (i, e))
        axes = (BATCH, SEQ, b.resid(f"{L}.expert{e}.weighted"))
        y = b.op("expert_weight", f"{L}.expert{e}.weighted", axes, {"x": y, "w": weights}, expert=e)
        out = f"L{i}.mlp_out" if e == E - 1 else f"{L}.sum{e}"
        total = b.add(total, y, out) if total else y
    return total


def _dense_mlp(b: _Builder, i: int, x: str, P: str, L: str, out: str, index: tuple) -> str:
    """One MLP (the layer's, or expert ``index[1]`` of its mixture): parameters under ``P``,
    values under ``L``, the output ``out``."""
    mlp, f = b.arch.mlp, b.sizes.hidden

    def axis(point: str) -> Axis:
        return Axis("mlp", f, index, point=point)

    up = b.linear(x, f"{P}.W_up", f"{P}.b_up", f"{L}.up", axis("up"))
    hidden = (BATCH, SEQ, axis("hidden"))
    if mlp.gated:
        gate = b.linear(x, f"{P}.W_gate", f"{P}.b_gate", f"{L}.gate", axis("gate"))
        h = b.op("gate", f"{L}.hidden", hidden, {"a": gate, "b": up}, fn=mlp.activation)
    else:
        h = b.op("activation", f"{L}.hidden", hidden, {"x": up}, fn=mlp.activation)
    return b.linear(h, f"{P}.W_down", f"{P}.b_down", out, b.resid(out))


def _block_pre_norm(b: _Builder, i: int, x: str) -> str:
    """x + attn(n1(x)), then x + mlp(n2(x)) (GPT-2, Llama, ...)."""
    h = b.norm(f"layers.{i}.attn_norm", x, f"L{i}.attn_norm")
    x = b.add(x, b.residual_scale(_attention(b, i, h)), f"L{i}.attn_resid")
    h = b.norm(f"layers.{i}.mlp_norm", x, f"L{i}.mlp_norm")
    return b.add(x, b.residual_scale(_mlp(b, i, h)), f"L{i}.out")


def _block_post_norm(b: _Builder, i: int, x: str) -> str:
    """n1(x + attn(x)), then n2(x + mlp(x)) (BERT)."""
    x = b.add(x, b.residual_scale(_attention(b, i, x)), f"L{i}.attn_resid")
    x = b.norm(f"layers.{i}.attn_norm", x, f"L{i}.attn_norm")
    x = b.add(x, b.residual_scale(_mlp(b, i, x)), f"L{i}.mlp_resid")
    return b.norm(f"layers.{i}.mlp_norm", x, f"L{i}.out")


def _block_parallel(b: _Builder, i: int, x: str) -> str:
    """x + attn(n1(x)) + mlp(n2(x)); one shared norm n1 = n2 for parallel_one_norm (Phi)."""
    if b.arch.block == "parallel_one_norm":
        h_attn = h_mlp = b.norm(f"layers.{i}.norm", x, f"L{i}.norm")
    else:
        h_attn = b.norm(f"layers.{i}.attn_norm", x, f"L{i}.attn_norm")
        h_mlp = b.norm(f"layers.{i}.mlp_norm", x, f"L{i}.mlp_norm")
    x = b.add(x, b.residual_scale(_attention(b, i, h_attn)), f"L{i}.attn_resid")
    return b.add(x, b.residual_scale(_mlp(b, i, h_mlp)), f"L{i}.out")


def _block_sandwich(b: _Builder, i: int, x: str) -> str:
    """x + n2(attn(n1(x))), then x + n4(mlp(n3(x))) (Gemma2); post_sublayer_norm: x +
    n2(attn(x)), then x + n4(mlp(x)) (OLMo2)."""
    pre = b.arch.block == "sandwich"
    for part, sublayer in (("attn", _attention), ("mlp", _mlp)):
        h = b.norm(f"layers.{i}.{part}_norm", x, f"L{i}.{part}_norm") if pre else x
        y = sublayer(b, i, h)
        y = b.norm(f"layers.{i}.{part}_out_norm", y, f"L{i}.{part}_out_norm")
        x = b.add(x, b.residual_scale(y), f"L{i}.{part}_resid" if part == "attn" else f"L{i}.out")
    return x


BLOCKS = {
    "sandwich": _block_sandwich,
    "post_sublayer_norm": _block_sandwich,
    "pre_norm": _block_pre_norm,
    "post_norm": _block_post_norm,
    "parallel_one_norm": _block_parallel,
    "parallel_two_norms": _block_parallel,
}


def _head(b: _Builder, x: str) -> str:
    arch, s = b.arch, b.sizes
    if arch.final_norm:
        x = b.norm("final_norm", x, "final_norm.out")
    if arch.prediction_head is not None:
        x = b.linear(x, "head.W_dense", "head.b_dense", "head.dense", b.resid("head.dense"))
        axes = (BATCH, SEQ, b.resid("head.act"))
        x = b.op("activation", "head.act", axes, {"x": x}, fn=arch.prediction_head.activation)
        x = b.norm("head_norm", x, "head.norm")
    resid, logits = b.values[x].axes[-1], Axis("vocab", s.vocab, point="logits")
    tied = arch.embeddings.tied
    W = ("embed.W_E", (logits, resid)) if tied else ("unembed.W_U", (resid, logits))
    inputs: dict[str, str | tuple[str, Axes]] = {"x": x, "W": W}
    if arch.embeddings.unembedding_bias:
        inputs["b"] = ("unembed.b_U", (logits,))
    x = b.op("unembed", "logits", (BATCH, SEQ, logits), inputs, transpose=tied)
    scale, cap = arch.embeddings.logit_scale, arch.embeddings.logit_softcap
    if scale != 1.0:
        axes = (BATCH, SEQ, Axis("vocab", s.vocab, point="logits_scaled"))
        x = b.op("scale", "logits.scaled", axes, {"x": x}, factor=scale, expr=repr(scale))
    if cap is not None:
        axes = (BATCH, SEQ, Axis("vocab", s.vocab, point="logits_capped"))
        x = b.op("softcap", "logits.capped", axes, {"x": x}, cap=cap)
    logprobs = (BATCH, SEQ, Axis("vocab", s.vocab, point="logprobs"))
    return b.op("log_softmax", "logprobs", logprobs, {"x": x})


def build_graph(spec: Spec | Architecture) -> Graph:
    """The graph of a (loaded, normalized) spec: embeddings, blocks, head, in forward order."""
    arch = spec.architecture if isinstance(spec, Spec) else spec
    assert arch.attention.head_width is not None, "load the spec with load_spec (head width)"
    b = _Builder(arch)
    x = _embeddings(b)
    for i in range(arch.layers):
        x = BLOCKS[arch.block](b, i, x)
    return b.graph(_head(b, x))
