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

Each small function computes one piece of what to emit and hands it to the template
``templates/model.py.j2`` as frozen data; the template holds the layout. This module builds the
classes and the module-level pieces; :mod:`.model_ops` emits the statements of a forward (one
per op), :mod:`.model_text` holds names, sizes as code and docstrings, :mod:`.model_hf` the
``HF_NAMES`` table.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from symcomp.codegen.model_hf import hf_table
from symcomp.codegen.model_ops import (
    _check_layers_alike,
    _external_input,
    _layer_ops,
    _layout,
    _returning,
    _runs,
    _Scope,
    _statements,
    _template_ops,
)
from symcomp.codegen.model_text import (
    LINE_LENGTH,
    Assign,
    ModuleClass,
    Statement,
    _axis_size,
    _docstring,
    _layer_of,
    _module_path,
    _node,
)
from symcomp.codegen.render import render
from symcomp.ir.graph import Graph, OpNode, build_graph
from symcomp.spec.model import AlibiPositions, RotaryPositions, Spec

# what the runtime's modules module gives every model.py (it imports those it calls)
RUNTIME_MODULES = (
    "windowed",
    "rms_norm",
    "alibi_slopes",
    "merge_heads",
    "ones",
    "rope",
    "route",
    "padded_position_rows",
    "sinusoids",
    "without_rope",
    "sizes_of",
    "split_heads",
    "weight",
    "zeros",
)

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


# --- classes ----------------------------------------------------------------------------------


def _norm_ops(graph: Graph) -> dict[str, OpNode]:
    """The norm op that reads each norm module (by module path)."""
    out: dict[str, OpNode] = {}
    for op in graph.ops:
        if op.kind == "norm":
            out.setdefault(_module_path(_node(op, "gain")), op)
    return out


def _norm_constructor(op: OpNode, graph: Graph | None = None) -> str:
    width = "s.width"
    if graph is not None:  # a QK-norm's gain is as wide as one head, or all of them
        width = _axis_size(graph.param[_node(op, "gain")].axes[0], graph.sizes)
    return f"Norm({width}, eps={float(op.attr('eps'))!r}, **factory)"


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
    norms = _norm_ops(graph)
    out: list[Assign] = []
    for p in graph.param:
        if not p.startswith(prefix):
            continue
        child = p.removeprefix(prefix).split(".")[0]
        if "." not in p.removeprefix(prefix):
            out.append(Assign(child, _param_init(graph, p)))
        elif prefix + child in norms and all(a.name != child for a in out):
            out.append(Assign(child, _norm_constructor(norms[prefix + child], graph)))
    return tuple(out)


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
    if mlp.experts is None:
        return [f"The MLP: {what}, then W_down{bias}; act is {mlp.activation}."]
    e = mlp.experts
    norm = ", renormalized to sum 1" if e.normalize else ""
    return [
        f"A mixture of {e.count} experts: the router's softmax(x W_router) over the experts, "
        f"its {e.top_k} largest kept{norm}, the others 0; the output is the sum of each "
        f"expert's output times its weight. Each expert: {what}, then W_down{bias}; act is "
        f"{mlp.activation}. Every expert runs on every token (weight 0 where unselected).",
    ]


def _expert_class(graph: Graph) -> ModuleClass:
    return _container(
        graph,
        "layers.0.mlp.experts.0",
        "Expert",
        "One expert of the mixture (parameters only: MLP.forward reads them).",
    )


def _uses_sizes(lines: Sequence[str]) -> bool:
    return any(re.search(r"\bs\.", line) for line in lines)


def _sublayer_class(graph: Graph, part: str, ops: list[OpNode]) -> ModuleClass:
    """Attention or MLP: layer 0's parameters of that part, and its ops as the forward."""
    path = f"layers.0.{part}"
    scope = _Scope(graph, path + ".", f"L0.{part}.", {_external_input(ops, graph): "x"})
    body = _returning(_layout(list(_statements(scope, ops))), scope.value(ops[-1].output))
    doc = _attention_doc(graph) if part == "attn" else _mlp_doc(graph)
    what = "attention" if part == "attn" else "MLP"
    attrs = _param_attrs(graph, path)
    if part == "attn" and _window_layers(graph):  # set per layer by Model (windowed)
        attrs += (Assign("window", "None"),)
    experts = graph.arch.mlp.experts
    if part == "mlp" and experts is not None:
        count = f"range({experts.count})"
        attrs += (Assign("experts", f"nn.ModuleList(Expert(s, **factory) for _ in {count})"),)
    if part == "attn" and _nope_layers(graph):
        attrs += (Assign("rotary", "True  # False on the NoPE layers (without_rope)"),)
    if any(op.kind == "rope" for op in ops):
        attrs += (Assign("numerics", '"symcomp"  # RoPE\'s rounding: use_numerics'),)
    return ModuleClass(
        CLASS_NAMES[part],
        _docstring(doc, 4),
        attrs,
        forward_doc=f"x (B, T, width) -> the {what} output (B, T, width).",
        forward=body,
        uses_sizes=_uses_sizes(body),
        context=part == "attn",
    )


def _block_class(graph: Graph) -> tuple[ModuleClass, list[ModuleClass]]:
    """Block (from the ops of layer 0) and the classes of its sublayers."""
    _check_layers_alike(graph)
    ops = _template_ops(graph)
    layer_input = _external_input(ops, graph)  # the output of the layer before
    scope = _Scope(graph, "layers.0.", "L0.", {layer_input: "x"})
    statements: list[Statement] = []
    sublayers: list[ModuleClass] = []
    for part, run in _runs(ops):
        if part == "block":
            statements.extend(_statements(scope, run))
            continue
        if part == "mlp" and graph.arch.mlp.experts is not None:
            sublayers.append(_expert_class(graph))
        sublayers.append(_sublayer_class(graph, part, run))
        arg = scope.value(_external_input(run, graph))
        out = scope.value(run[-1].output)
        context = ", ctx" if part == "attn" else ""  # the attention reads the forward's context
        statements.append(Statement((f"{out} = self.{part}({arg}{context})",)))
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
        "sandwich": "A sandwich block: x + attn_out_norm(attn(attn_norm(x))), then x + "
        "mlp_out_norm(mlp(mlp_norm(x))).",
        "post_sublayer_norm": "A block with norms on the sublayer outputs: x + "
        "attn_out_norm(attn(x)), then x + mlp_out_norm(mlp(x)).",
    }[graph.arch.block]
    block = ModuleClass(
        "Block",
        _docstring([doc, "Its forward is the graph's layer 0; every layer is alike."], 4),
        tuple(attrs),
        forward_doc="The residual stream (B, T, width) after this block.",
        forward=body,
        context=True,
    )
    return block, sublayers


def _window_layers(graph: Graph) -> list[int]:
    """The layers with a sliding window, where only some have one (else empty)."""
    windows = [op.attr("window") for op in graph.ops if op.kind == "scores"]
    if len(set(windows)) < 2:
        return []
    return [i for i, w in enumerate(windows) if w is not None]


def _model_parts(graph: Graph) -> tuple[tuple[Assign, ...], tuple[str, ...], list[ModuleClass]]:
    """Model's submodules, its forward body, and the container classes it uses."""
    ops = [op for op in graph.ops if op.kind != "log_softmax"]
    assert any(op.kind == "unembed" for op in ops), "the graph has logits"
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
                statements.append(Statement(("for block in self.layers:", "    x = block(x, ctx)")))
                looped = True
            continue
        statements.extend(_statements(scope, [op]))
    body = _returning(_layout(statements), scope.value(ops[-1].output))

    norms = _norm_ops(graph)
    attrs: list[Assign] = []
    classes: list[ModuleClass] = []
    for child in _submodules(graph, list(graph.param), ""):
        if child == "layers":
            layers = "nn.ModuleList(Block(s, **factory) for _ in range(s.layers))"
            if _nope_layers(graph):
                layers = "without_rope([Block(s, **factory) for _ in range(s.layers)], NOPE_LAYERS)"
            sliding = _window_layers(graph)
            if sliding:
                window = graph.arch.attention.sliding_window
                args = (layers, f"window={window}", f"sliding={tuple(sliding)}")
                layers = "windowed(\n" + "".join(f"{12 * ' '}{a},\n" for a in args) + 8 * " " + ")"
            attrs.append(Assign("layers", layers))
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


def _nope_layers(graph: Graph) -> list[int]:
    return list(getattr(graph.arch.positions, "nope_layers", None) or [])


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
    else:  # transformers rounds its RMSNorms in float32: the runtime's op can do the same
        offset = ", one_plus=True" if one_plus else ""
        call = f"rms_norm(x, self.gain, self.eps{offset}, numerics=self.numerics)"
        call += " + self.bias" if bias else ""
    return NormInfo(center, bias, one_plus, _docstring([doc], 4), call)


def _rope_info(graph: Graph) -> RopeInfo | None:
    ropes = [op for op in graph.ops if op.kind == "rope"]
    if not ropes:
        return None
    pos = graph.arch.positions
    assert isinstance(pos, RotaryPositions)
    for op in ropes:
        assert op.attr("rotary_width") == int(graph.sizes.head_width * pos.rotated_fraction)
    fraction = float(pos.rotated_fraction)
    if fraction == 1.0:
        code, doc = "self.head_width", "all of them"
    else:
        code, doc = f"int(self.head_width * {fraction!r})", f"int(head_width * {fraction!r})"
    return RopeInfo(code, doc)


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
        "Both take an attention_mask (B, T) for a padded batch (1 on tokens, 0 on padding; "
        "positions count the tokens), and forward a key/value cache"
        + (
            ", with which Model.generate decodes greedily, token for token as transformers' "
            "generate(do_sample=False)."
            if spec.architecture.kind == "causal_lm"
            else "."
        ),
        "Needs PyTorch (2.5 or later, for scaled_dot_product_attention's enable_gqa) and "
        "symcomp-runtime (the sizes check, parameter factories, head and position ops, and the "
        "weight files). Generated code: edit the spec and regenerate rather than edit this file.",
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
            "symcomp's names to use trained weights, or ``Model.from_pretrained(path)`` the "
            "standard.safetensors that ``save_pretrained`` wrote.",
        ],
        4,
    )


def _uses_math(lines: Sequence[str]) -> bool:
    """Whether the module imports math: for a size expression's sqrt."""
    return any("math." in line for line in lines)


def _modules_import(rt: str, norm: NormInfo, code: Sequence[str]) -> str:
    """``from <rt>.modules import ...``: the runtime's factories and ops that ``code`` (the
    classes' attributes and forwards) calls, the Norm class's, and ``sizes_of``."""
    called = {name for line in code for name in re.findall(r"\b(\w+)\(", line)}
    called |= {"sizes_of", "zeros" if norm.one_plus else "ones"}
    if norm.bias:
        called.add("zeros")
    called |= {name for name in re.findall(r"\b(\w+)\(", norm.call)}
    names = sorted(called & set(RUNTIME_MODULES))
    line = f"from {rt}.modules import {', '.join(names)}"
    if len(line) <= LINE_LENGTH:
        return line
    return "\n".join([f"from {rt}.modules import (", *(f"    {n}," for n in names), ")"])


def _check_lines(text: str) -> None:
    long = [line for line in text.splitlines() if len(line) > LINE_LENGTH]
    assert not long, f"generated lines longer than {LINE_LENGTH}: {long}"


def render_model(
    spec: Spec,
    *,
    hf_model_type: str | None = None,
    graph: Graph | None = None,
    rt: str = "symcomp_runtime",
    tiny: dict[str, int] | None = None,
) -> str:
    """The text of the standalone ``model.py`` of ``spec``, generated from its graph IR.

    ``hf_model_type`` (a transformers ``model_type``, e.g. ``"gpt2"``): also emit ``HF_NAMES``,
    our parameter names -> that family's state-dict names. The spec does not record its family,
    so without it the table is left out. ``graph``: the spec's graph, when the caller has it.
    ``rt``: the runtime's module name, ``".symcomp_runtime"`` where the package vendors it.
    ``tiny``: small sizes of the same structure, for ``TINY`` and ``Model.tiny()``.
    """
    graph = graph or build_graph(spec)
    block, sublayers = _block_class(graph)
    model_attrs, model_forward, containers = _model_parts(graph)
    classes = tuple(containers[:1] + sublayers + [block] + containers[1:])
    sizes = graph.sizes
    norm = _norm_info(graph)
    code = [*model_forward, *(ln for c in classes for ln in c.forward)]
    values = [a.value for c in classes for a in c.attrs] + [a.value for a in model_attrs]
    text = render(
        "model.py.j2",
        module_doc=_module_doc(spec),
        spec_name=spec.name,
        sizes=tuple((key, getattr(sizes, key)) for key in SIZE_KEYS),
        tiny=tuple(tiny.items()) if tiny else (),
        mha=sizes.kv_heads == sizes.heads,
        rt=rt,
        modules_import=_modules_import(rt, norm, code + values),
        norm=norm,
        rope=_rope_info(graph),
        nope_layers=tuple(_nope_layers(graph)),
        causal=graph.arch.kind == "causal_lm",
        uses_math=_uses_math(code),
        hf=hf_table(spec, hf_model_type) if hf_model_type else None,
        classes=classes,
        model_doc=_model_doc(spec),
        model_attrs=model_attrs,
        model_forward=model_forward,
    )
    _check_lines(text)
    return text
