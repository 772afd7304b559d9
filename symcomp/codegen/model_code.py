"""The standard model module of a generated package: ``render_model(spec) -> str``.

The text is generated from the graph IR (:func:`symcomp.ir.graph.build_graph`): one statement
per op, the ops of layer 0 giving the one ``Block`` class (its attention and MLP ops giving the
``Attention`` and ``MLP`` submodules) and the other ops giving ``Model.forward``, with a loop over
the blocks in place of the layers. The scores, softmax and weighted sum of an attention layer
become one call of PyTorch's ``scaled_dot_product_attention``.

Sizes are never frozen into the code: every shape and every size-dependent constant (the
attention scale, ALiBi slopes, the embedding scale expression, the rotated width) is written in
terms of the instance's sizes, so that ``Model(width=16, layers=2, ...)`` builds a structurally
identical model of other sizes. Constants that are not sizes (norm eps, RoPE base, the window)
come from the ops' attributes.

Each small function below computes one piece of what to emit and hands it to the template
``templates/model.py.j2`` as frozen data; the template holds the layout.
"""

from __future__ import annotations

import functools
import math
import re
import textwrap
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from symcomp.codegen.render import render
from symcomp.ir.graph import Axis, Graph, OpNode, build_graph
from symcomp.ir.ops import alibi_slopes
from symcomp.lang import SizeCodePrinter, parse_expr
from symcomp.spec.model import AlibiPositions, RotaryPositions, Spec
from symcomp.spec.params import Sizes, layer_parameter_shapes, parameter_shapes

LINE_LENGTH = 100
FORWARD_INDENT = 8  # statements of a forward method

# the keys of SIZES, in the order of Model's docs (rotary_width is derived, not a key)
SIZE_KEYS = ("width", "layers", "heads", "kv_heads", "head_width", "hidden", "vocab", "positions")

# module path (without the layer prefix) -> the class that holds its parameters
CLASS_NAMES = {
    "embed": "Embeddings",
    "head": "PredictionHead",
    "unembed": "Unembedding",
    "attn": "Attention",
    "mlp": "MLP",
}

CLASS_DOCS = {
    "embed": "The embedding tables (parameters only: Model.forward reads them).",
    "head": "The masked-LM prediction head's dense layer (parameters only).",
    "unembed": "The unembedding (parameters only: Model.forward reads them).",
}

ACTIVATIONS = {
    "relu": "F.relu({})",
    "gelu": "F.gelu({})",
    "gelu_tanh": 'F.gelu({}, approximate="tanh")',
    "silu": "F.silu({})",
}

HF_TRANSFORM_NOTES = {
    "copy": "",
    "transpose": "transposed",
    "qkv_cols": "{part} columns of the fused [q | k | v]",
    "qkv_per_head": "{part} rows of the fused per-head [q, k, v]",
    "qkv_per_head_T": "{part} rows of the fused per-head [q, k, v], transposed",
}


# --- frozen data for the template -------------------------------------------------------------


@dataclass(frozen=True)
class Assign:
    """One ``self.<name> = <value>`` line of an ``__init__``."""

    name: str
    value: str


@dataclass(frozen=True)
class ModuleClass:
    """A generated ``nn.Module``: its parameters and submodules, and its forward body."""

    name: str
    docstring: str  # the full indented docstring literal
    attrs: tuple[Assign, ...]
    forward_doc: str = ""
    forward: tuple[str, ...] = ()  # lines, relative to the body's indentation
    uses_sizes: bool = False  # the forward reads ``s = self.s``


@dataclass(frozen=True)
class NormInfo:
    """The one norm of the spec: the Norm class's features."""

    center: bool  # layernorm subtracts the mean
    bias: bool
    one_plus: bool  # gain used as 1 + gain
    docstring: str
    call: str  # the forward's expression: torch's fused kernel


@dataclass(frozen=True)
class RopeInfo:
    width_code: str  # the rotated width, in the sizes' own fields
    width_doc: str
    split_half: bool  # pairs (i, i + r/2), else adjacent (2i, 2i + 1)


@dataclass(frozen=True)
class MaskInfo:
    """What the attention mask helper builds (only when is_causal alone cannot say it)."""

    causal: bool
    window: bool
    alibi: bool
    docstring: str


@dataclass(frozen=True)
class HFRow:
    ours: str
    hf: str
    note: str  # a comment, or ""
    trailing: bool  # the comment fits after the entry (else it goes on the line above)


@dataclass(frozen=True)
class HFTable:
    model_type: str
    rows: tuple[HFRow, ...]


@dataclass(frozen=True)
class Statement:
    """What one op (or one fused group of ops) emits: code lines and an optional comment."""

    lines: tuple[str, ...]
    comment: str = ""


# --- names ------------------------------------------------------------------------------------

RESERVED = frozenset(
    {"x", "s", "seq_len", "mask", "F", "nn", "math", "torch", "self", "input_ids", "block"}
)


def _identifier(value: str, strip: str = "") -> str:
    """A local variable name for the graph value ``value``, less the scope prefix ``strip``."""
    name = value.removeprefix(strip)
    name = re.sub(r"\W", "_", name)
    return name + "_" if name in RESERVED or not name.isidentifier() else name


@functools.lru_cache(maxsize=65536)
def _layer_of(name: str) -> int | None:
    """The layer of a value (``L3.attn.q``) or parameter (``layers.3.attn.W_Q``), or None."""
    m = re.match(r"(?:L|layers\.)(\d+)\.", name)
    return int(m.group(1)) if m else None


def _node(op: OpNode, slot: str) -> str:
    """The node that the op's input ``slot`` reads."""
    i = op.input(slot)
    assert i is not None, f"{op.name} has no input {slot}"
    return i.node


def _module_path(param: str) -> str:
    """``layers.0.attn.W_Q`` -> ``layers.0.attn``."""
    return param.rsplit(".", 1)[0]


# --- sizes as code ----------------------------------------------------------------------------


def _axis_size(axis: Axis, sizes: Sizes) -> str:
    """The size of a parameter axis as an expression in the instance's sizes ``s``."""
    heads = "s.heads * s.head_width"
    kv = "s.kv_heads * s.head_width"
    if axis.kind == "resid":
        code, value = "s.width", sizes.width
    elif axis.kind == "vocab":
        code, value = "s.vocab", sizes.vocab
    elif axis.kind == "mlp":
        code, value = "s.hidden", sizes.hidden
    elif axis.kind == "positions":
        offset = axis.size - sizes.positions  # type: ignore[operator]
        code = "s.positions" + (f" + {offset}" if offset else "")
        value = sizes.positions + offset
    elif axis.kind == "token_types":  # a constant of the spec, not a size
        code, value = str(axis.size), axis.size
    elif axis.kind in ("qk", "v") and axis.point in ("q", "merged"):
        code, value = heads, sizes.heads * sizes.head_width
    elif axis.kind in ("qk", "v") and axis.point in ("k", "v"):
        code, value = kv, sizes.kv_heads * sizes.head_width
    else:
        raise NotImplementedError(f"no size expression for the parameter axis {axis}")
    assert value == axis.size, f"{axis}: {code} is {value}, not {axis.size}"
    return code


# --- docstrings -------------------------------------------------------------------------------


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')


_GLUE = "\x00"


def _wrap_text(text: str, width: int) -> list[str]:
    """Lines of at most ``width``, never breaking inside a short parenthesis like (B, T, d)."""

    def glue(m: re.Match[str]) -> str:
        return m.group(0).replace(" ", _GLUE) if len(m.group(0)) <= 30 else m.group(0)

    text = re.sub(r"\([^()]*\)", glue, text)
    lines = textwrap.wrap(text, width, break_on_hyphens=False, break_long_words=False)
    return [line.replace(_GLUE, " ") for line in lines]


def _docstring(paragraphs: Sequence[str], indent: int) -> str:
    """A docstring literal: the first paragraph is the summary; wrapped to the line length."""
    pad = " " * indent
    width = LINE_LENGTH - indent
    first, *rest = [_escape(p.strip()) for p in paragraphs if p.strip()]
    if not rest and len(first) + 6 <= width:
        return f'"""{first}"""'
    lines = _wrap_text(first, width - 3)
    out = ['"""' + lines[0], *lines[1:]]
    for p in rest:
        out.append("")
        out.extend(_wrap_text(p, width))
    out.append('"""')
    return "\n".join((pad + line if line else "") if i else line for i, line in enumerate(out))


# --- statements -------------------------------------------------------------------------------


class _Scope:
    """Where statements are emitted: which parameters ``self`` holds, how values are named."""

    def __init__(self, graph: Graph, param_prefix: str, value_prefix: str, inputs: dict[str, str]):
        self.graph = graph
        self.param_prefix = param_prefix  # e.g. "layers.0.attn."
        self.value_prefix = value_prefix  # e.g. "L0.attn."
        self.inputs = inputs  # value -> local name (the function's arguments)

    def value(self, name: str) -> str:
        if name in self.inputs:
            return self.inputs[name]
        if name.startswith(self.value_prefix):
            return _identifier(name, self.value_prefix)
        return _identifier(re.sub(r"^L\d+\.", "", name))

    def param(self, name: str) -> str:
        assert name.startswith(self.param_prefix), f"{name} outside {self.param_prefix!r}"
        return "self." + name.removeprefix(self.param_prefix)

    def module(self, param: str) -> str:
        """The submodule that holds ``param`` (a norm's gain -> ``self.attn_norm``)."""
        return self.param(_module_path(param))

    def read(self, op: OpNode, slot: str) -> str:
        """Code for the op's input ``slot``: a parameter or a local value."""
        node = _node(op, slot)
        return self.param(node) if node in self.graph.param else self.value(node)

    def has(self, op: OpNode, slot: str) -> bool:
        return op.input(slot) is not None


def _assign(scope: _Scope, op: OpNode, expr: str, comment: str = "") -> Statement:
    return Statement((f"{scope.value(op.output)} = {expr}",), comment)


def _matmul(scope: _Scope, op: OpNode) -> str:
    """``x @ W``; with a bias, ``F.linear(x, W.T, b)``: the same product, with the bias added by
    the matmul itself (addmm) rather than by a second pass over the output."""
    x, W = scope.read(op, "x"), scope.read(op, "W")
    if not scope.has(op, "b"):
        return f"{x} @ {W}" + (".T" if op.attr("transpose") else "")
    weight = W if op.attr("transpose") else f"{W}.T"  # F.linear takes W as (out, in)
    return f"F.linear({x}, {weight}, {scope.read(op, 'b')})"


def _emit_embed(scope: _Scope, op: OpNode) -> Statement:
    W, index = scope.read(op, "W"), op.attr("index")
    if index == "token":
        return _assign(scope, op, f"{W}[input_ids]", "(B, T, width)")
    if index == "position":
        offset = op.attr("offset")
        if not offset:
            return _assign(scope, op, f"{W}[:seq_len]", "(T, width): row t for position t")
        comment = f"(T, width): row {offset} + t for position t; rows 0 .. {offset - 1} unread"
        return _assign(scope, op, f"{W}[{offset} : {offset} + seq_len]", comment)
    assert index == "token_type", index
    return _assign(scope, op, f"{W}[0]", "(width,): token type 0 (inputs are ids only)")


def _emit_scale(scope: _Scope, op: OpNode) -> Statement:
    factor = SizeCodePrinter().parenthesize(parse_expr(op.attr("expr")), 3)  # one factor
    return _assign(scope, op, f"{scope.read(op, 'x')} * {factor}", f"times {op.attr('expr')}")


def _emit_norm(scope: _Scope, op: OpNode) -> Statement:
    return _assign(scope, op, f"{scope.module(_node(op, 'gain'))}({scope.read(op, 'x')})")


def _emit_add(scope: _Scope, op: OpNode) -> Statement:
    return _assign(scope, op, f"{scope.read(op, 'x')} + {scope.read(op, 'y')}")


def _emit_linear(scope: _Scope, op: OpNode) -> Statement:
    return _assign(scope, op, _matmul(scope, op))


def _emit_split_heads(scope: _Scope, op: OpNode) -> Statement:
    # which size the heads axis counts, heads or kv_heads, is the kind of that axis in the graph
    heads = scope.graph.value[op.output].axes[1].kind
    assert heads in ("heads", "kv_heads"), heads
    shape = f"(B, {heads}, T, head_width)"
    return _assign(scope, op, f"split_heads({scope.read(op, 'x')}, s.{heads})", shape)


def _emit_merge_heads(scope: _Scope, op: OpNode) -> Statement:
    return _assign(scope, op, f"merge_heads({scope.read(op, 'x')})", "(B, T, heads * head_width)")


def _emit_rope(scope: _Scope, op: OpNode) -> Statement:
    args = [scope.read(op, "x"), "s.rotary_width", f"base={float(op.attr('base'))!r}"]
    if op.attr("position_divisor") != 1.0:
        args.append(f"position_divisor={float(op.attr('position_divisor'))!r}")
    return _assign(scope, op, f"rope({', '.join(args)})")


def _emit_activation(scope: _Scope, op: OpNode) -> Statement:
    return _assign(scope, op, ACTIVATIONS[op.attr("fn")].format(scope.read(op, "x")))


def _emit_gate(scope: _Scope, op: OpNode) -> Statement:
    act = ACTIVATIONS[op.attr("fn")].format(scope.read(op, "a"))
    return _assign(scope, op, f"{act} * {scope.read(op, 'b')}")


def _emit_unembed(scope: _Scope, op: OpNode) -> Statement:
    comment = "tied: W_E transposed" if op.attr("transpose") else ""
    return _assign(scope, op, _matmul(scope, op), comment)


def _check_scores(graph: Graph, scores: OpNode) -> None:
    """The attention scale and ALiBi slopes must be the size-dependent ones we emit."""
    k, h = graph.sizes.head_width, graph.sizes.heads
    if not math.isclose(scores.attr("scale"), k**-0.5, rel_tol=1e-15):
        raise NotImplementedError(f"{scores.name}: scale {scores.attr('scale')} is not k^-0.5")
    slopes = scores.attr("alibi_slopes")
    if slopes is not None and tuple(slopes) != alibi_slopes(h):
        raise NotImplementedError(f"{scores.name}: ALiBi slopes are not those of {h} heads")


def _call(target: str, func: str, args: Sequence[str], *, explode: bool = False) -> list[str]:
    """``target = func(args)`` on one line if it fits (and not ``explode``), else one argument a
    line with a trailing comma (which ruff format keeps as it is)."""
    line = f"{target} = {func}({', '.join(args)})"
    if not explode and FORWARD_INDENT + len(line) <= LINE_LENGTH:
        return [line]
    return [f"{target} = {func}(", *(f"    {a}," for a in args), ")"]


def _emit_attention(scope: _Scope, scores: OpNode, mixed: OpNode) -> Statement:
    """scores -> softmax -> weighted_sum, as one scaled_dot_product_attention call."""
    assert mixed.attr("group") == scores.attr("group")
    _check_scores(scope.graph, scores)
    causal, window = scores.attr("causal"), scores.attr("window")
    alibi = scores.attr("alibi_slopes") is not None
    q = scope.read(scores, "q")
    lines: list[str] = []
    args = [q, scope.read(scores, "k"), scope.read(mixed, "v")]
    what = ["causal" if causal else "bidirectional"]
    if window is not None or alibi:
        mask_args = [f"{q}.shape[-2]"]
        mask_args += ["s.heads"] * alibi
        mask_args += [f"window={window}"] * (window is not None)
        mask_args += [f"dtype={q}.dtype"] * alibi
        mask_args.append(f"device={q}.device")
        lines += _call("mask", "attention_mask", mask_args)
        args.append("attn_mask=mask")
        what += [f"a sliding window of {window}"] * (window is not None) + ["ALiBi"] * alibi
    elif causal:
        args.append("is_causal=True")
    args += ["scale=s.head_width**-0.5", "enable_gqa=s.kv_heads < s.heads"]
    lines += _call(scope.value(mixed.output), "F.scaled_dot_product_attention", args, explode=True)
    comment = f"scores, softmax and weighted sum, fused ({', '.join(what)})"
    return Statement(tuple(lines), comment)


EMITTERS: dict[str, Callable[[_Scope, OpNode], Statement]] = {
    "embed": _emit_embed,
    "norm": _emit_norm,
    "add": _emit_add,
    "linear": _emit_linear,
    "split_heads": _emit_split_heads,
    "merge_heads": _emit_merge_heads,
    "rope": _emit_rope,
    "activation": _emit_activation,
    "gate": _emit_gate,
    "unembed": _emit_unembed,
}


def _statements(scope: _Scope, ops: Sequence[OpNode]) -> Iterator[Statement]:
    """One statement per op; scores, softmax and weighted sum fused into one, in the place of
    the weighted sum (the first op that has every input of the fused call)."""
    pending: dict[str, OpNode] = {}  # scores or softmax output -> the scores op
    for op in ops:
        if op.kind == "scores":
            pending[op.output] = op
        elif op.kind == "softmax" and _node(op, "x") in pending:
            pending[op.output] = pending.pop(_node(op, "x"))
        elif op.kind == "weighted_sum" and _node(op, "p") in pending:
            yield _emit_attention(scope, pending.pop(_node(op, "p")), op)
        elif op.kind == "scale":
            yield _emit_scale(scope, op)
        elif op.kind in EMITTERS:
            yield EMITTERS[op.kind](scope, op)
        else:
            raise NotImplementedError(f"no code for the op kind {op.kind!r} ({op.name})")
    assert not pending, f"attention scores without a weighted sum: {sorted(pending)}"


def _layout(statements: Sequence[Statement], indent: int = FORWARD_INDENT) -> tuple[str, ...]:
    """Statement lines; a comment trails a one-line statement when it fits, else goes above."""
    out: list[str] = []
    for st in statements:
        if not st.comment:
            out.extend(st.lines)
            continue
        trailing = f"{st.lines[0]}  # {st.comment}"
        if len(st.lines) == 1 and indent + len(trailing) <= LINE_LENGTH:
            out.append(trailing)
        else:
            out.append(f"# {st.comment}")
            out.extend(st.lines)
    return tuple(out)


def _returning(lines: tuple[str, ...], value: str) -> tuple[str, ...]:
    return (*lines, f"return {value}")


# --- the ops of one layer ---------------------------------------------------------------------


def _layer_ops(graph: Graph, layer: int) -> list[OpNode]:
    return list(_ops_by_layer(graph).get(layer, ()))


_BY_LAYER: list[tuple[Graph, dict[int | None, list[OpNode]]]] = []  # the last graph's index


def _ops_by_layer(graph: Graph) -> dict[int | None, list[OpNode]]:
    """The graph's ops grouped by layer, in order (asked once per layer: index once)."""
    if not _BY_LAYER or _BY_LAYER[0][0] is not graph:
        index: dict[int | None, list[OpNode]] = {}
        for op in graph.ops:
            index.setdefault(_layer_of(op.output), []).append(op)
        _BY_LAYER[:] = [(graph, index)]
    return _BY_LAYER[0][1]


def _part(op: OpNode) -> str:
    """``attn``, ``mlp`` or ``block``: which class of the layer emits the op."""
    for part in ("attn", "mlp"):
        if re.match(rf"L\d+\.{part}(\.|_out$)", op.output):
            return part
    return "block"


def _check_layers_alike(graph: Graph) -> None:
    """Every layer's ops are layer 0's, renamed (one Block class serves them all)."""

    def signature(layer: int) -> list[tuple[object, ...]]:
        ops = _layer_ops(graph, layer)
        source = _external_input(ops, graph)  # the output of the layer before

        def rename(name: str) -> str:
            return (
                "<in>" if name == source else re.sub(rf"^(L|layers\.){layer}\.", r"\g<1>0.", name)
            )

        return [
            (
                op.kind,
                op.attrs,
                rename(op.output),
                tuple((i.slot, rename(i.node)) for i in op.inputs),
            )
            for op in ops
        ]

    first = signature(0)
    for layer in range(1, graph.sizes.layers):
        assert signature(layer) == first, f"layer {layer} is not layer 0 renamed"


def _external_input(ops: Sequence[OpNode], graph: Graph) -> str:
    """The one value that ``ops`` read but do not write (the function's argument)."""
    written = {op.output for op in ops}
    read = [
        i.node
        for op in ops
        for i in op.inputs
        if i.node not in written and i.node not in graph.param
    ]
    assert len(set(read)) == 1, f"{[op.name for op in ops]} read {sorted(set(read))}"
    return read[0]


def _runs(ops: Sequence[OpNode]) -> list[tuple[str, list[OpNode]]]:
    """Consecutive ops of the same part: ``[("block", [...]), ("attn", [...]), ...]``."""
    runs: list[tuple[str, list[OpNode]]] = []
    for op in ops:
        part = _part(op)
        if runs and runs[-1][0] == part and part != "block":
            runs[-1][1].append(op)
        else:
            runs.append((part, [op]))
    seen = [part for part, _ in runs if part != "block"]
    assert len(seen) == len(set(seen)), f"the ops of a sublayer are not contiguous: {seen}"
    return runs


# --- classes ----------------------------------------------------------------------------------


def _norm_ops(graph: Graph) -> dict[str, OpNode]:
    """The norm op that reads each norm module (by module path)."""
    out: dict[str, OpNode] = {}
    for op in graph.ops:
        if op.kind == "norm":
            out.setdefault(_module_path(_node(op, "gain")), op)
    return out


def _norm_constructor(op: OpNode) -> str:
    return f"Norm(s.width, eps={float(op.attr('eps'))!r}, **factory)"


def _param_init(graph: Graph, name: str) -> str:
    """``weight(...)`` / ``zeros(...)`` / ``ones(...)`` for a parameter, shaped in sizes."""
    node = graph.param[name]
    shape = ", ".join(_axis_size(a, graph.sizes) for a in node.axes)
    if len(node.shape) == 2:
        return f"weight({shape}, **factory)"
    return f"zeros({shape}, **factory)"  # biases; gains live in Norm


def _submodules(graph: Graph, names: Sequence[str], prefix: str) -> list[str]:
    """The direct children (first path component under ``prefix``) of the parameters, in order."""
    children: list[str] = []
    for name in names:
        if not name.startswith(prefix):
            continue
        child = name.removeprefix(prefix).split(".")[0]
        if child not in children:
            children.append(child)
    return children


def _param_attrs(graph: Graph, path: str) -> tuple[Assign, ...]:
    """The plain parameters of the module at ``path``, in order, shaped in sizes."""
    prefix = path + "."
    return tuple(
        Assign(p.removeprefix(prefix), _param_init(graph, p))
        for p in graph.param
        if p.startswith(prefix) and "." not in p.removeprefix(prefix)
    )


def _container(graph: Graph, path: str, name: str, doc: str) -> ModuleClass:
    """A class holding plain parameters (read by its parent's forward)."""
    return ModuleClass(name, _docstring([doc], 4), _param_attrs(graph, path))


def _attention_doc(graph: Graph) -> list[str]:
    a, s = graph.arch, graph.sizes
    kind = "Causal" if a.kind == "causal_lm" else "Bidirectional"
    if s.kv_heads == s.heads:
        heads = "multi-head"
    elif s.kv_heads == 1:
        heads = "multi-query"
    else:
        heads = "grouped-query"
    extras = []
    if isinstance(a.positions, RotaryPositions):
        extras.append("RoPE")
    if isinstance(a.positions, AlibiPositions):
        extras.append("ALiBi")
    if a.attention.sliding_window is not None:
        extras.append(f"a sliding window of {a.attention.sliding_window}")
    summary = f"{kind} {heads} self-attention" + (", with " + ", ".join(extras) if extras else "")
    detail = "Queries, keys and values are x @ W + b, split into heads."
    if s.kv_heads != s.heads:
        detail += (
            " Key/value head g serves the query heads g * group .. (g + 1) * group - 1, "
            "group = heads / kv_heads."
        )
    detail += (
        " The scores q k^T / sqrt(head_width), their softmax over the keys and the weighted sum "
        "of the values run as one scaled_dot_product_attention call."
    )
    return [summary + ".", detail]


def _mlp_doc(graph: Graph) -> list[str]:
    mlp = graph.arch.mlp
    what = "act(x W_gate) * (x W_up)" if mlp.gated else "act(x W_up)"
    bias = ", each with its bias" if mlp.bias else ""
    return [f"The MLP: {what}, then W_down{bias}; act is {mlp.activation}."]


def _uses_sizes(lines: Sequence[str]) -> bool:
    return any(re.search(r"\bs\.", line) for line in lines)


def _sublayer_class(graph: Graph, part: str, ops: list[OpNode]) -> ModuleClass:
    """Attention or MLP: layer 0's parameters of that part, and its ops as the forward."""
    path = f"layers.0.{part}"
    scope = _Scope(graph, path + ".", f"L0.{part}.", {_external_input(ops, graph): "x"})
    body = _returning(_layout(list(_statements(scope, ops))), scope.value(ops[-1].output))
    doc = _attention_doc(graph) if part == "attn" else _mlp_doc(graph)
    what = "attention" if part == "attn" else "MLP"
    return ModuleClass(
        CLASS_NAMES[part],
        _docstring(doc, 4),
        _param_attrs(graph, path),
        forward_doc=f"x (B, T, width) -> the {what} output (B, T, width).",
        forward=body,
        uses_sizes=_uses_sizes(body),
    )


def _block_class(graph: Graph) -> tuple[ModuleClass, list[ModuleClass]]:
    """Block (from the ops of layer 0) and the classes of its sublayers."""
    _check_layers_alike(graph)
    ops = _layer_ops(graph, 0)
    layer_input = _external_input(ops, graph)  # the output of the layer before
    scope = _Scope(graph, "layers.0.", "L0.", {layer_input: "x"})
    statements: list[Statement] = []
    sublayers: list[ModuleClass] = []
    for part, run in _runs(ops):
        if part == "block":
            statements.extend(_statements(scope, run))
            continue
        sublayers.append(_sublayer_class(graph, part, run))
        arg = scope.value(_external_input(run, graph))
        out = scope.value(run[-1].output)
        statements.append(Statement((f"{out} = self.{part}({arg})",)))
    body = _returning(_layout(statements), scope.value(ops[-1].output))
    norms = _norm_ops(graph)
    attrs = []
    for child in _submodules(graph, list(graph.param), "layers.0."):
        path = f"layers.0.{child}"
        if path in norms:
            attrs.append(Assign(child, _norm_constructor(norms[path])))
        else:
            attrs.append(Assign(child, f"{CLASS_NAMES[child]}(s, **factory)"))
    doc = {
        "pre_norm": "A pre-norm block: x + attn(attn_norm(x)), then x + mlp(mlp_norm(x)).",
        "post_norm": "A post-norm block: attn_norm(x + attn(x)), then mlp_norm(x + mlp(x)).",
        "parallel_one_norm": "A parallel block with one shared norm: x + attn(norm(x)) + "
        "mlp(norm(x)).",
        "parallel_two_norms": "A parallel block: x + attn(attn_norm(x)) + mlp(mlp_norm(x)).",
    }[graph.arch.block]
    block = ModuleClass(
        "Block",
        _docstring([doc, "Its forward is the graph's layer 0; every layer is alike."], 4),
        tuple(attrs),
        forward_doc="The residual stream (B, T, width) after this block.",
        forward=body,
    )
    return block, sublayers


def _model_parts(graph: Graph) -> tuple[tuple[Assign, ...], tuple[str, ...], list[ModuleClass]]:
    """Model's submodules, its forward body, and the container classes it uses."""
    ops = [op for op in graph.ops if op.kind != "log_softmax"]
    assert ops[-1].kind == "unembed", "the graph's logits come last"
    (log_softmax,) = [op for op in graph.ops if op.kind == "log_softmax"]
    assert _node(log_softmax, "x") == ops[-1].output and log_softmax.output == graph.output
    last = graph.sizes.layers - 1
    layer_input = _external_input(_layer_ops(graph, 0), graph)
    layer_output = _layer_ops(graph, last)[-1].output
    scope = _Scope(graph, "", "", {graph.input: "input_ids", layer_input: "x", layer_output: "x"})
    statements: list[Statement] = []
    looped = False
    for op in ops:
        if _layer_of(op.output) is not None:
            if not looped:
                statements.append(Statement(("for block in self.layers:", "    x = block(x)")))
                looped = True
            continue
        statements.extend(_statements(scope, [op]))
    body = _returning(_layout(statements), scope.value(ops[-1].output))

    norms = _norm_ops(graph)
    attrs: list[Assign] = []
    classes: list[ModuleClass] = []
    for child in _submodules(graph, list(graph.param), ""):
        if child == "layers":
            attrs.append(
                Assign("layers", "nn.ModuleList(Block(s, **factory) for _ in range(s.layers))")
            )
        elif child in norms:
            attrs.append(Assign(child, _norm_constructor(norms[child])))
        else:
            name = CLASS_NAMES.get(child) or child.title().replace("_", "")
            classes.append(
                _container(graph, child, name, CLASS_DOCS.get(child, f"The {child} parameters."))
            )
            attrs.append(Assign(child, f"{name}(s, **factory)"))
    return tuple(attrs), body, classes


# --- module-level pieces ----------------------------------------------------------------------


def _norm_info(graph: Graph) -> NormInfo:
    configs = {
        (op.attr("type"), op.attr("gain_form"), op.input("bias") is not None)
        for op in graph.ops
        if op.kind == "norm"
    }
    assert len(configs) == 1, f"one Norm class serves one kind of norm, not {sorted(configs)}"
    ((kind, gain_form, bias),) = configs
    center = kind == "layernorm"
    what = (
        "LayerNorm: (x - mean) / sqrt(var + eps)"
        if center
        else "RMSNorm: x / sqrt(mean(x^2) + eps)"
    )
    gain = "times 1 + gain (the stored gain is w)" if gain_form == "one_plus_w" else "times gain"
    doc = f"{what}, {gain}" + (", plus bias." if bias else ".")
    one_plus = gain_form == "one_plus_w"
    weight = "1.0 + self.gain" if one_plus else "self.gain"
    if center:
        shift = "self.bias" if bias else "None"
        call = f"F.layer_norm(x, x.shape[-1:], {weight}, {shift}, self.eps)"
    else:
        call = f"F.rms_norm(x, x.shape[-1:], {weight}, self.eps)" + (" + self.bias" if bias else "")
    return NormInfo(center, bias, one_plus, _docstring([doc], 4), call)


def _rope_info(graph: Graph) -> RopeInfo | None:
    ropes = [op for op in graph.ops if op.kind == "rope"]
    if not ropes:
        return None
    pos = graph.arch.positions
    assert isinstance(pos, RotaryPositions)
    layouts = {op.attr("pair_layout") for op in ropes}
    assert len(layouts) == 1, layouts
    for op in ropes:
        assert op.attr("rotary_width") == int(graph.sizes.head_width * pos.rotated_fraction)
    fraction = float(pos.rotated_fraction)
    if fraction == 1.0:
        code, doc = "self.head_width", "all of them"
    else:
        code, doc = f"int(self.head_width * {fraction!r})", f"int(head_width * {fraction!r})"
    return RopeInfo(code, doc, layouts == {"split_half"})


def _mask_info(graph: Graph) -> MaskInfo | None:
    scores = [op for op in graph.ops if op.kind == "scores"]
    kinds = {
        (op.attr("causal"), op.attr("window") is not None, op.attr("alibi_slopes") is not None)
        for op in scores
    }
    assert len(kinds) == 1, kinds
    ((causal, window, alibi),) = kinds
    if not (window or alibi):
        return None  # is_causal (or no mask at all) says it
    rules = ["j <= i"] * causal + ["j > i - window"] * window
    allowed = " and ".join(rules)
    if alibi:
        doc = "The additive attention bias (heads, T, T): ALiBi's slope_h (j - i)" + (
            f", and -inf unless {allowed} (query i, key j)." if rules else "."
        )
    else:
        doc = f"Which keys j query i attends to (True: attends): {allowed}."
    return MaskInfo(causal, window, alibi, _docstring([doc], 4))


def _hf_table(spec: Spec, model_type: str) -> HFTable:
    """Our parameter names -> transformers names (patterns with ``{i}``), for this spec."""
    from symcomp.hf.weights import hf_name_table  # imports torch: only when asked for

    arch = spec.architecture
    top = [name for name in parameter_shapes(arch) if not name.startswith("layers.")]
    ours = set(top) | {f"layers.{{i}}.{name}" for name in layer_parameter_shapes(arch)}
    rows: list[HFRow] = []
    for hf, name, transform in hf_name_table(model_type):
        if name not in ours or any(r.ours == name for r in rows):
            continue  # a parameter the spec lacks (a tied unembedding), or a second copy
        kind, _, part = transform.partition(".")
        note = HF_TRANSFORM_NOTES[kind].format(part=part)
        fits = len(f'    "{name}": "{hf}",  # {note}') <= LINE_LENGTH
        rows.append(HFRow(name, hf, note, fits))
    missing = sorted(ours - {r.ours for r in rows})
    assert not missing, f"no {model_type} name for {missing}"
    return HFTable(model_type, tuple(rows))


def _module_doc(spec: Spec) -> str:
    paragraphs = [
        f"The {spec.name} model as a plain PyTorch module, generated by symcomp from its spec.",
    ]
    if spec.description:
        paragraphs.append(spec.description)
    paragraphs += [
        "Conventions (symcomp's): parameters carry symcomp's names (embed.W_E, "
        "layers.0.attn.W_Q, final_norm.gain, ...) and shapes; every linear map is a row-vector "
        "product y = x @ W + b with W stored (in, out); a tied unembedding reads embed.W_E "
        "transposed. Activations are (B, T, width), (B, heads, T, head_width) per head.",
        "Model.forward(input_ids) returns the logits (B, T, vocab) of token ids (B, T); "
        "Model.log_probs(input_ids) their log-softmax, the function that symcomp's reference "
        "interpreter computes from the same parameters. Model(**sizes) builds the same "
        "architecture at other sizes (the defaults are SIZES).",
        "Needs only PyTorch (2.5 or later, for scaled_dot_product_attention's enable_gqa). "
        "Generated code: edit the spec and regenerate rather than edit this file.",
    ]
    return _docstring(paragraphs, 0)


def _model_doc(spec: Spec) -> str:
    return _docstring(
        [
            f"The {spec.name} transformer: logits (B, T, vocab) of token ids (B, T).",
            "Model(*, dtype=torch.float32, device=None, **sizes): the keyword sizes (the keys "
            "of SIZES) override the spec's, for a structurally identical model of other sizes; "
            "an unknown key raises TypeError. Parameters are drawn at random (matrices from "
            "N(0, 0.02^2), gains and biases at their neutral values); load a state dict with "
            "symcomp's names to use trained weights.",
        ],
        4,
    )


def _uses_math(graph: Graph, lines: Sequence[str]) -> bool:
    """Whether the module imports math: for ALiBi's slopes, or a size expression's sqrt."""
    alibi = isinstance(graph.arch.positions, AlibiPositions)
    return alibi or any("math." in line for line in lines)


def _check_lines(text: str) -> None:
    long = [line for line in text.splitlines() if len(line) > LINE_LENGTH]
    assert not long, f"generated lines longer than {LINE_LENGTH}: {long}"


def render_model(
    spec: Spec, *, hf_model_type: str | None = None, graph: Graph | None = None
) -> str:
    """The text of the standalone ``model.py`` of ``spec``, generated from its graph IR.

    ``hf_model_type`` (a transformers ``model_type``, e.g. ``"gpt2"``): also emit ``HF_NAMES``,
    our parameter names -> that family's state-dict names. The spec does not record its family,
    so without it the table is left out. ``graph``: the spec's graph, when the caller has it.
    """
    graph = graph or build_graph(spec)
    block, sublayers = _block_class(graph)
    model_attrs, model_forward, containers = _model_parts(graph)
    classes = tuple(containers[:1] + sublayers + [block] + containers[1:])
    sizes = graph.sizes
    text = render(
        "model.py.j2",
        module_doc=_module_doc(spec),
        spec_name=spec.name,
        sizes=tuple((key, getattr(sizes, key)) for key in SIZE_KEYS),
        mha=sizes.kv_heads == sizes.heads,
        norm=_norm_info(graph),
        rope=_rope_info(graph),
        mask=_mask_info(graph),
        uses_math=_uses_math(graph, [*model_forward, *(ln for c in classes for ln in c.forward)]),
        hf=_hf_table(spec, hf_model_type) if hf_model_type else None,
        classes=classes,
        model_doc=_model_doc(spec),
        model_attrs=model_attrs,
        model_forward=model_forward,
    )
    _check_lines(text)
    return text
