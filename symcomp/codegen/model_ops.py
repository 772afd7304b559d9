"""The statements of a forward method: one per op of the graph IR (the emitters, a registry
by op kind), the scores, softmax and weighted sum of an attention layer fused into one
``scaled_dot_product_attention`` call, and the ops of one layer grouped into the parts
(attention, MLP, the block's own ops) that the generated classes emit."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Sequence

from symcomp.codegen.model_text import (
    FORWARD_INDENT,
    LINE_LENGTH,
    Statement,
    _identifier,
    _layer_of,
    _module_path,
    _node,
)
from symcomp.ir.graph import Graph, Input, OpNode
from symcomp.ir.ops import alibi_slopes
from symcomp.lang import SizeCodePrinter, parse_expr

ACTIVATIONS = {
    "relu": "F.relu({})",
    "relu2": "F.relu({}).square()",
    "gelu": "F.gelu({})",
    "gelu_tanh": 'F.gelu({}, approximate="tanh")',
    # BLOOM's bloom_gelu_forward: sqrt(2/pi) written 0.79788456
    "gelu_tanh_bloom": (
        "{0} * 0.5 * (1.0 + torch.tanh(0.79788456 * {0} * (1 + 0.044715 * {0} * {0})))"
    ),
    "silu": "F.silu({})",
}


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
        # an indexed child (a mixture's experts.3.W_up) is an item of an nn.ModuleList
        return "self." + re.sub(r"\.(\d+)\.", r"[\1].", name.removeprefix(self.param_prefix))

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
    if index == "position" and op.attr("padding") is not None:
        offset, pad = op.attr("offset"), op.attr("padding")
        rows = f"padded_position_rows(input_ids, padding={pad}, offset={offset})"
        comment = f"(B, T, width): rows counted over tokens other than {pad} (row {offset - 1})"
        return _assign(scope, op, f"{W}[{rows}]", comment)
    if index == "position":
        offset = op.attr("offset")
        if not offset:
            return _assign(scope, op, f"{W}[ctx.positions]", "(B, T, width): row p at position p")
        comment = f"(B, T, width): row {offset} + p at position p; rows 0 .. {offset - 1} unread"
        return _assign(scope, op, f"{W}[{offset} + ctx.positions]", comment)
    assert index == "token_type", index
    return _assign(scope, op, f"{W}[0]", "(width,): token type 0 (inputs are ids only)")


def _emit_sinusoid(scope: _Scope, op: OpNode) -> Statement:
    args = ["ctx.positions", "s.width", f"base={float(op.attr('base'))!r}"]
    args += [f"offset={op.attr('offset')}", f"like={scope.param('embed.W_E')}"]
    lines = _call(scope.value(op.output), "sinusoids", args)
    return Statement(tuple(lines), "(B, T, width), fixed")


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
    if op.attr("pair_layout") != "split_half":  # the runtime's default
        args.append(f"pairs={op.attr('pair_layout')!r}".replace("'", '"'))
    if op.attr("position_divisor") != 1.0:
        args.append(f"position_divisor={float(op.attr('position_divisor'))!r}")
    args += ["numerics=self.numerics", "positions=ctx.positions"]
    out = scope.value(op.output)
    if not getattr(scope.graph.arch.positions, "nope_layers", None):
        return Statement(tuple(_call(out, "rope", args)))
    # NoPE layers among rotated ones: this block rotates only where rotary is set
    lines = [f"{out} = {scope.read(op, 'x')}", "if self.rotary:"]
    lines += ["    " + line for line in _call(out, "rope", args)]
    return Statement(tuple(lines))


def _emit_activation(scope: _Scope, op: OpNode) -> Statement:
    return _assign(scope, op, ACTIVATIONS[op.attr("fn")].format(scope.read(op, "x")))


def _emit_gate(scope: _Scope, op: OpNode) -> Statement:
    act = ACTIVATIONS[op.attr("fn")].format(scope.read(op, "a"))
    return _assign(scope, op, f"{act} * {scope.read(op, 'b')}")


def _emit_route(scope: _Scope, op: OpNode) -> Statement:
    args = [scope.read(op, "x"), scope.read(op, "W")]
    args += [f"top_k={op.attr('top_k')}", f"normalize={op.attr('normalize')}"]
    comment = "(B, T, experts): softmax, top k, the rest 0"
    lines = _call(scope.value(op.output), "route", args)
    return Statement(tuple(lines), comment)


def _emit_expert_weight(scope: _Scope, op: OpNode) -> Statement:
    e = op.attr("expert")
    return _assign(scope, op, f"{scope.read(op, 'x')} * {scope.read(op, 'w')}[..., {e} : {e + 1}]")


def _emit_unembed(scope: _Scope, op: OpNode) -> Statement:
    comment = "tied: W_E transposed" if op.attr("transpose") else ""
    return _assign(scope, op, _matmul(scope, op), comment)


def _scale_code(graph: Graph, scores: OpNode) -> str:
    """The attention scale: head_width^-0.5 in the sizes, or the spec's own constant."""
    if graph.arch.attention.scale is None:
        k = graph.sizes.head_width
        assert math.isclose(scores.attr("scale"), k**-0.5, rel_tol=1e-15), scores.name
        return "s.head_width**-0.5"
    return repr(float(scores.attr("scale")))


def _check_scores(graph: Graph, scores: OpNode) -> None:
    """The ALiBi slopes must be the size-dependent ones we emit."""
    k, h = graph.sizes.head_width, graph.sizes.heads
    slopes = scores.attr("alibi_slopes")
    expected = alibi_slopes(h)
    if _alibi_scaled(graph):
        expected = tuple(s * k**-0.5 for s in expected)
    if slopes is not None and tuple(slopes) != expected:
        raise NotImplementedError(f"{scores.name}: ALiBi slopes are not those of {h} heads")


def _alibi_scaled(graph: Graph) -> bool:
    return getattr(graph.arch.positions, "scaled", False) is True


def _call(target: str, func: str, args: Sequence[str], *, explode: bool = False) -> list[str]:
    """``target = func(args)`` on one line if it fits (and not ``explode``), else one argument a
    line with a trailing comma (which ruff format keeps as it is)."""
    line = f"{target} = {func}({', '.join(args)})"
    if not explode and FORWARD_INDENT + len(line) <= LINE_LENGTH:
        return [line]
    return [f"{target} = {func}(", *(f"    {a}," for a in args), ")"]


def _remember(scope: _Scope, scores: OpNode, mixed: OpNode) -> list[str]:
    """``keys, values = ctx.remember(self, k, v)``: the cached tokens' keys and values, then
    these (the cache keeps them for the next call)."""
    lines = _call(
        "keys, values", "ctx.remember", ["self", scope.read(scores, "k"), scope.read(mixed, "v")]
    )
    note = "  # the cached tokens', then these"
    if len(lines) == 1 and FORWARD_INDENT + len(lines[0] + note) <= LINE_LENGTH:
        return [lines[0] + note]
    return [note.strip(), *lines]


def _emit_attention(scope: _Scope, scores: OpNode, mixed: OpNode) -> Statement:
    """scores -> softmax -> weighted_sum, as one scaled_dot_product_attention call, after the
    keys and values of the tokens before (the cache) are put in front of these."""
    assert mixed.attr("group") == scores.attr("group")
    _check_scores(scope.graph, scores)
    causal, window = scores.attr("causal"), scores.attr("window")
    per_layer = len({op.attr("window") for op in scope.graph.ops if op.kind == "scores"}) > 1
    if per_layer:
        window = "self.window"
    alibi = scores.attr("alibi_slopes") is not None
    q = scope.read(scores, "q")
    remember = _remember(scope, scores, mixed)
    if scores.attr("softcap") is not None:
        return _explicit_attention(scope, scores, mixed, window, remember)
    lines = [*remember]
    args = [q, "keys", "values", "attn_mask=mask"]
    what = ["causal" if causal else "bidirectional"]
    rules = [f"causal={causal}"] + [f"window={window}"] * (window is not None)
    if alibi:
        slopes = f"torch.tensor(alibi_slopes(s.heads), dtype={q}.dtype, device={q}.device)"
        if _alibi_scaled(scope.graph):
            slopes += " * s.head_width**-0.5"
        lines += [f"slopes = {slopes}"]
        lines += _call("mask", "ctx.alibi", ["slopes", *rules])
    else:  # None: no padding, no cache, no window; is_causal says the rest
        lines += _call("mask", "ctx.mask", rules)
        if causal:
            args.append("is_causal=mask is None")
    what += [f"a sliding window of {window}"] * (window is not None) + ["ALiBi"] * alibi
    args += [f"scale={_scale_code(scope.graph, scores)}", "enable_gqa=s.kv_heads < s.heads"]
    lines += _call(scope.value(mixed.output), "F.scaled_dot_product_attention", args, explode=True)
    comment = f"scores, softmax and weighted sum, fused ({', '.join(what)})"
    return Statement(tuple(lines), comment)


def _emit_softcap(scope: _Scope, op: OpNode) -> Statement:
    cap = float(op.attr("cap"))
    return _assign(scope, op, f"{cap!r} * torch.tanh({scope.read(op, 'x')} / {cap!r})", "soft-cap")


def _explicit_attention(
    scope: _Scope, scores: OpNode, mixed: OpNode, window, remember: list[str]
) -> Statement:
    """Scores, soft-capped, masked, softmax and weighted sum, written out (SDPA has no soft-cap)."""
    assert scores.attr("alibi_slopes") is None, "soft-capping with ALiBi"
    q = scope.read(scores, "q")
    cap = float(scores.attr("softcap"))
    rules = [f"causal={scores.attr('causal')}"] + [f"window={window}"] * (window is not None)
    lines = [
        *remember,
        "group = s.heads // s.kv_heads  # key/value head g serves query heads g * group ...",
        f"logits = {q} @ keys.repeat_interleave(group, dim=1).transpose(-2, -1)",
        f"logits = {cap!r} * torch.tanh(logits * {_scale_code(scope.graph, scores)} / {cap!r})",
        *_call("allowed", "ctx.allowed", rules),
        'logits = logits.masked_fill(~allowed, float("-inf"))',
        f"{scope.value(mixed.output)} = torch.softmax(logits, dim=-1) @ "
        "values.repeat_interleave(group, dim=1)",
    ]
    return Statement(tuple(lines), "scores (soft-capped), softmax and weighted sum")


EMITTERS: dict[str, Callable[[_Scope, OpNode], Statement]] = {
    "softcap": _emit_softcap,
    "embed": _emit_embed,
    "sinusoid": _emit_sinusoid,
    "norm": _emit_norm,
    "add": _emit_add,
    "linear": _emit_linear,
    "split_heads": _emit_split_heads,
    "merge_heads": _emit_merge_heads,
    "rope": _emit_rope,
    "activation": _emit_activation,
    "gate": _emit_gate,
    "route": _emit_route,
    "expert_weight": _emit_expert_weight,
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


def _template_ops(graph: Graph) -> list[OpNode]:
    """The ops the Block class is written from: layer 0's, or, where layer 0 is a NoPE layer
    among rotated ones, those of the first rotated layer renamed to layer 0."""
    ops = _layer_ops(graph, 0)
    rotated = [
        i for i in range(graph.sizes.layers) if any(o.kind == "rope" for o in _layer_ops(graph, i))
    ]
    if not rotated or rotated[0] == 0:
        return ops
    layer, source = rotated[0], _external_input(_layer_ops(graph, rotated[0]), graph)
    first_source = _external_input(ops, graph)

    def rename(name: str) -> str:
        if name == source:
            return first_source
        return re.sub(rf"^(L|layers\.){layer}\.", r"\g<1>0.", name)

    return [
        OpNode(
            rename(op.name),
            op.kind,
            op.attrs,
            tuple(Input(i.slot, rename(i.node), i.axes) for i in op.inputs),
            rename(op.output),
        )
        for op in _layer_ops(graph, layer)
    ]


def _part(op: OpNode) -> str:
    """``attn``, ``mlp`` or ``block``: which class of the layer emits the op."""
    for part in ("attn", "mlp"):
        if re.match(rf"L\d+\.{part}(\.|_out$)", op.output):
            return part
    return "block"


def _check_layers_alike(graph: Graph) -> None:
    """Every layer's ops are layer 0's, renamed (one Block class serves them all), but for the
    rope ops that NoPE layers lack (the Block then rotates only where ``rotary`` is set)."""

    def signature(layer: int) -> list[tuple[object, ...]]:
        ops = _layer_ops(graph, layer)
        source = _external_input(ops, graph)  # the output of the layer before
        skipped = {op.output: _node(op, "x") for op in ops if op.kind == "rope"}

        def rename(name: str) -> str:
            name = skipped.get(name, name)
            return (
                "<in>" if name == source else re.sub(rf"^(L|layers\.){layer}\.", r"\g<1>0.", name)
            )

        return [
            (
                op.kind,
                # a per-layer window is an attribute of each layer's attention (windowed)
                tuple(a for a in op.attrs if op.kind != "scores" or a[0] != "window"),
                rename(op.output),
                tuple((i.slot, rename(i.node)) for i in op.inputs),
            )
            for op in ops
            if op.kind != "rope"
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
