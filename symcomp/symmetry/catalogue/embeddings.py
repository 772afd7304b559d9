"""B6, B7. The tables at the two ends of the model.

- B6 ``embedding_translation``: tables summed into the stream are read only as ``W_E[i] +
  W_P[j]``, so ``W_E + 1 t`` against ``W_P - 1 t`` (a table scaled by a constant trades ``t`` over
  that constant);
- B7 ``unembedding_shift``: log-softmax ignores a constant added to every logit of a position,
  so ``W_U + t^T 1`` (a logit shift linear in the stream) and ``b_U + c 1`` change nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

import sympy

from symcomp.ir.graph import OpNode
from symcomp.symmetry.catalogue.base import GroupInfo, Worked, _custom, _keep, _short, d
from symcomp.symmetry.catalogue.facts import Facts, _gain, _rows


def _tables(facts: Facts) -> list[tuple[OpNode, float | str]]:
    """The embedding tables summed into the stream, with the constant each is scaled by."""
    out = []
    for op in facts.graph.ops:
        if op.kind != "embed":
            continue
        readers = facts.readers(op.output)
        scale = readers[0].attr("expr") if readers and readers[0].kind == "scale" else None
        out.append((op, scale))
    return out


def embedding_translation(facts: Facts) -> Iterator[GroupInfo]:
    """Tables added together can trade a constant row: W_E + 1 t, W_P - 1 t."""
    tables = _tables(facts)
    if len(tables) < 2:
        return
    (first, scale), rest = tables[0], tables[1:]
    E = facts.param(first, "W") or ""
    for op, _ in rest:
        P = facts.param(op, "W") or ""
        rows, _ = _rows(facts, P)
        t = f"t / {scale}" if scale else "t"
        acts = {E: f"W_E + ones(vocab)^T {t}", P: f"{_short(P)} - ones({rows})^T t"}
        yield GroupInfo(
            "embedding_translation",
            "B6",
            _custom(f"embedding_translation_{_short(P)}", "translation", "model", "width", acts),
            f"{E}, {P}",
            "model",
            d,
            sympy.Integer(1),
            "W_E[i] + W_P[j] for every pair (i, j)",
            f"{_short(P)}'s first read row set to zero",
            "closed form: the mean row difference",
        )


def unembedding_shift(facts: Facts) -> Iterator[GroupInfo]:
    """log-softmax ignores a constant added to every logit of a position."""
    unembed = next(op for op in facts.graph.ops if op.kind == "unembed")
    if not facts.feeds_only(unembed.output, frozenset({"log_softmax"})):
        return  # a soft-cap (tanh) on the logits does not pass a per-position constant on
    W, b = facts.param(unembed, "W") or "", facts.param(unembed, "b")
    if not facts.tied(W):
        yield _shift("unembedding_shift", {W: "W_U + t^T ones(vocab)"}, "width", d, W)
    if b:
        yield _shift("unembedding_bias_shift", {b: "b_U + t ones(vocab)"}, "1", 1, b)


def padding_translation(facts: Facts) -> Iterator[GroupInfo]:
    """Where positions count only the non-padding tokens (RoBERTa), the padding token always
    reads the position row offset - 1, and only it does: the two rows are read only as
    ``W_E[pad] + W_P[offset - 1]``, so ``W_E[pad] + t`` against ``W_P[offset - 1] - t``. Where
    a tied unembedding reads the token row too, only the ``t`` that its logit ignores up to a
    constant remain: along diag(gain)^-1 1 when a LayerNorm feeds it (B3), b_U[pad] taking
    the constant."""
    tables = _tables(facts)
    if not tables:
        return
    (first, scale), rest = tables[0], tables[1:]
    E = facts.param(first, "W") or ""
    if first.attr("index") != "token":
        return
    other = [op for op, _ in facts.graph.uses(E) if op is not first]
    direction = _tied_direction(facts, other)
    if direction is None:
        return
    row_t, size, dim, extra = direction
    for op, _ in rest:
        pad = op.attr("padding")
        if op.attr("index") != "position" or pad is None:
            continue
        P = facts.param(op, "W") or ""
        rows, _ = _rows(facts, P)
        t = f"{row_t} / {scale}" if scale else row_t
        row = op.attr("offset") - 1
        acts = {
            E: f"W_E + unit(vocab, {pad})^T {t}",
            P: f"{_short(P)} - unit({rows}, {row})^T {row_t}",
            **{k: v.format(pad=pad) for k, v in extra.items()},
        }
        yield GroupInfo(
            "padding_translation",
            "B6'",
            _custom("padding_translation", "translation", "model", size, acts),
            f"{E} row {pad}, {P} row {row}",
            "model",
            dim,
            sympy.Integer(1),
            f"W_E[{pad}] + W_P[{row}]: the padding token and the row only it reads",
            f"{_short(P)}[{row}] set to zero",
            "closed form: the row moved into W_E",
        )


def _tied_direction(
    facts: Facts, other: list[OpNode]
) -> tuple[str, str, sympy.Expr, dict[str, str]] | None:
    """The translations of one token row that its other readers allow: (the row as an
    expression in t, the size of t, its dimension, the compensating actions with {pad})."""
    if not other:
        return "t", "width", d, {}
    if len(other) > 1 or other[0].kind != "unembed":
        return None
    unembed = other[0]
    norm = facts.producer.get(unembed.input("x").node)
    if norm is None or norm.kind != "norm" or norm.attr("type") != "layernorm":
        return None
    gain = _gain(facts, norm, _keep)
    a = f"ones(width) diag({gain})^-1"
    bias, b_U = facts.param(norm, "bias"), facts.param(unembed, "b")
    if bias is not None and b_U is None:
        return None
    extra = {b_U: f"b_U - t {bias} ({a})^T unit(vocab, {{pad}})"} if bias and b_U else {}
    return f"t {a}", "1", sympy.Integer(1), extra


def _shift(name: str, acts: dict[str, str], size: str, dim: sympy.Expr | int, param: str):
    return GroupInfo(
        "unembedding_shift",
        "B7",
        _custom(name, "translation", "model", size, acts),
        param,
        "model",
        sympy.Integer(dim) if isinstance(dim, int) else dim,
        sympy.Integer(1),
        "logits up to a per-position constant",
        "columns centred (W_U 1 = 0)",
        "closed form: subtract the mean column",
    )


WORKED = (
    # token and position tables
    Worked(embedding_translation, "gpt2-small", "d", 768),
    # token, position and token-type tables: the position and type tables each trade with W_E
    Worked(embedding_translation, "bert-base", "2*d", 1_536),
    Worked(unembedding_shift, "llama-2-7b", "d", 4_096),
    # an untied W_U and a bias b_U
    Worked(unembedding_shift, "phi-2", "d + 1", 2_561),
    # the unembedding is tied to W_E: only b_U shifts
    Worked(unembedding_shift, "bert-base", "1", 1),
    # BERT's positions do not skip padding: no row only the padding token reads (RoBERTa's
    # tiny family in tests/hf_families.py checks the group against transformers: 1 when tied)
    Worked(padding_translation, "bert-base", "0", 0),
)
