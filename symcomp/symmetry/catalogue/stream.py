"""B4, B5, B8. The residual stream: its writers (embeddings, attention and MLP outputs) and its
readers (the norms).

- B4 ``writer_centering``: where every reader of the stream is a LayerNorm, which subtracts each
  token's mean, ``x + c 1`` reads as ``x``: any writer row or bias may shift along ``1``;
- B5 ``residual_rotation``: a norm sees the stream only through its length (and its mean):
  ``|x Q| = |x|`` for ``Q`` in O(d) (fixing ``1`` for LayerNorm), so every writer turns by ``Q``
  and every norm's readers by ``diag(g)^-1 Q^T diag(g)``;
- B8 ``writer_bias_transfer``: two biased writers at one point of the stream (a parallel
  block's ``b_O`` and ``b_down``) are only ever read as ``b_O + b_down``.
"""

from __future__ import annotations

from collections.abc import Iterator

import sympy

from symcomp.ir.graph import OpNode
from symcomp.symmetry.catalogue.base import (
    GroupInfo,
    L,
    Worked,
    _custom,
    _pattern,
    _short,
    _tag,
    d,
)
from symcomp.symmetry.catalogue.facts import (
    PASS_THROUGH,
    Facts,
    _fresh_writers,
    _gain,
    _linear_readers,
    _rows,
)


def _writers(facts: Facts, value: str) -> Iterator[OpNode]:
    """The parametrized ops writing into ``value`` (through adds and constant scales); a norm
    whose output is the stream (an embedding norm) is one."""
    op = facts.producer.get(value)
    if op is None:
        return
    if op.kind == "add":
        for inp in op.inputs:
            yield from _writers(facts, inp.node)
    elif op.kind in ("scale", "expert_weight"):
        yield from _writers(facts, op.inputs[0].node)
    elif op.kind in ("embed", "linear", "norm"):
        yield op  # a norm writes its output, and its bias, into the stream (an embedding norm)


def _stream_values(facts: Facts) -> list[str]:
    """Values read only by norms (through adds): the points of the residual stream (queries
    and keys read only by their QK-norms are not)."""
    only_norms = frozenset({"norm"})
    return [
        v
        for v in facts.graph.value
        if facts.graph.value[v].axes[-1].kind == "resid"
        and facts.feeds_only(v, only_norms)
        and facts.producer.get(v) is not None
        and facts.producer[v].kind not in PASS_THROUGH
    ]


def writer_centering(facts: Facts) -> Iterator[GroupInfo]:
    """Every reader of the stream is a LayerNorm, which removes each token's mean: any writer
    row (or bias) may shift along 1."""
    seen: set[str] = set()
    for value in _stream_values(facts):
        if not facts.layernorm_only(value):
            continue
        for op in _writers(facts, value):
            if not facts.first_layer_or_global(op):
                continue
            W = facts.param(op, "W")
            per = "layer" if op.name.startswith("L") else "model"
            units = L if per == "layer" else sympy.Integer(1)
            if W and W not in seen:
                seen.add(W)
                if facts.tied(W):
                    # the tied unembedding reads these rows too: only a uniform shift survives,
                    # which moves every logit of a position by the same amount
                    acts = {W: f"{_short(W)} + t ones(vocab)^T ones(width)"}
                    size, dim = "1", sympy.Integer(1)
                else:
                    size, dim = _rows(facts, W)
                    acts = {_pattern(W): f"{_short(W)} + t^T ones(width)"}
                yield _centering(W, per, size, dim, units, acts)
            b = facts.param(op, "bias" if op.kind == "norm" else "b")
            if b and b not in seen:
                seen.add(b)
                yield _centering(
                    b,
                    per,
                    "1",
                    sympy.Integer(1),
                    units,
                    {_pattern(b): f"{_short(b)} + t ones(width)"},
                )


def _centering(
    param: str, per: str, size: str, dim: sympy.Expr, units: sympy.Expr, acts: dict[str, str]
) -> GroupInfo:
    return GroupInfo(
        "writer_centering",
        "B4",
        _custom(f"writer_centering_{_tag(_pattern(param))}", "translation", per, size, acts),
        _pattern(param),
        per,
        dim,
        units,
        "rows projected on 1^⊥",
        "each row centred (mean zero)",
        "closed form: subtract each row's mean",
    )


def _stream_norms(facts: Facts) -> list[OpNode]:
    """The norms that read the residual stream."""
    points = set(_stream_values(facts))
    reached: list[OpNode] = []
    seen: set[str] = set()

    def walk(value: str) -> None:
        if value in seen:
            return
        seen.add(value)
        for op in facts.readers(value):
            if op.kind in PASS_THROUGH:
                walk(op.output)
            elif op.kind == "norm" and op not in reached:
                reached.append(op)

    for value in points:
        walk(value)
    found = set(map(id, reached))
    return [op for op in facts.graph.ops if id(op) in found and facts.first_layer_or_global(op)]


def residual_rotation(facts: Facts) -> Iterator[GroupInfo]:
    """Norms see only the length of the stream (and its mean, for LayerNorm): rotating every
    writer by Q and every norm's readers by diag(g)^-1 Q^T diag(g) changes nothing, provided
    each norm's readers are untied linear maps (a tied unembedding would have to rotate as a
    writer and as a reader at once, which a generic final gain forbids)."""
    norms = _stream_norms(facts)
    if not norms or any(_linear_readers(facts, n) is None for n in norms):
        return
    acts: dict[str, str] = {}
    writers = {op.name: op for v in _stream_values(facts) for op in _writers(facts, v)}
    if any(op.kind == "norm" for op in writers.values()):
        return  # a norm writing the stream (an embedding norm) hands on n(x) diag(gain): no Q
    for op in writers.values():
        for slot in ("W", "b"):
            p = facts.param(op, slot)
            if p and facts.first_layer_or_global(op):
                acts[_pattern(p)] = f"{_short(p)} Q"
    for norm in norms:
        gain = _gain(facts, norm)
        bias = facts.param(norm, "bias")
        if bias:  # readers see beta W: the bias turns with them
            acts[_pattern(bias)] = f"bias diag({gain})^-1 Q diag({gain})"
        for op in _linear_readers(facts, norm) or []:
            W = _pattern(facts.param(op, "W") or "")
            acts[W] = f"diag({gain})^-1 Q^T diag({gain}) {_short(W)}"
    layernorm = any(n.attr("type") == "layernorm" for n in norms)
    yield GroupInfo(
        "residual_rotation",
        "B5",
        _custom(
            "residual_rotation", "O", "model", "width", acts, fixes=["ones"] if layernorm else []
        ),
        "every writer and every norm reader of the stream",
        "model",
        (d - 1) * (d - 2) / 2 if layernorm else d * (d - 1) / 2,
        sympy.Integer(1),
        "Gram matrices W W^T of the writers; W_read^T diag(g) ... products across the stream",
        "LQ decomposition of d pivot rows of a writer, signs fixed by a positive diagonal",
        "Lyapunov equation in a skew Omega after folding the gains; CG jointly with A1/A3",
    )


def writer_bias_transfer(facts: Facts) -> Iterator[GroupInfo]:
    """Two biased writers at the same point of the stream (a parallel block's b_O and b_down)
    can trade a constant: nothing reads the stream between them."""
    for value in facts.graph.value:
        readers = facts.readers(value)
        if not readers or all(c.kind == "add" for c in readers):
            continue  # not a point the stream is read at
        biases = [b for op in _fresh_writers(facts, value) if (b := facts.param(op, "b"))]
        if len(biases) < 2 or not biases[0].startswith("layers.0."):
            continue
        first = biases[0]
        for other in biases[1:]:
            acts = {
                _pattern(first): f"{_short(first)} + t",
                _pattern(other): f"{_short(other)} - t",
            }
            yield GroupInfo(
                "writer_bias_transfer",
                "B8",
                _custom(
                    f"writer_bias_transfer_{_short(other)}", "translation", "layer", "width", acts
                ),
                f"{_pattern(first)}, {_pattern(other)}",
                "layer",
                d,
                L,
                f"{_short(first)} + {_short(other)}",
                f"{_short(other)} = 0",
                "closed form: the difference of the two biases",
            )


WORKED = (
    # the tied W_E keeps one uniform shift (its logits move by a per-position constant); W_P a
    # shift per row; W_O and W_down one per row, b_O and b_down one each, in every layer
    Worked(writer_centering, "gpt2-small", "1 + T + L*(h*k + f + 2)", 47_129),
    # RMSNorm only: all of O(d)
    Worked(residual_rotation, "llama-2-7b", "d*(d - 1)/2", 8_386_560),
    # LayerNorm only: the rotations fixing 1, O(d - 1)
    Worked(residual_rotation, "pythia-160m", "(d - 1)*(d - 2)/2", 293_761),
    # a parallel block: b_O and b_down are written at the same point of every layer
    Worked(writer_bias_transfer, "phi-2", "L*d", 81_920),
)
