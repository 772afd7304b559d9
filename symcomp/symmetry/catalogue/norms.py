"""B1-B3. A norm and the linear maps that read it.

A norm hands on ``n(x) diag(gain) + bias``, with ``n(x)`` the normalised stream (for LayerNorm
centred too: ``n(x) 1 = 0``). Its readers see only ``(n(x) diag(gain) + bias) W + b``:

- B1 ``norm_gain_scaling``: ``gain s`` against ``diag(s)^-1 W`` in every reader;
- B2 ``norm_bias_fold``: ``bias + t`` against ``b - t W`` in every reader's bias; in a post-norm
  block the norm's output is the stream itself, and the residual path takes ``- t`` from the
  biased writer beside it (the post-norm bias shift);
- B3 ``reader_centering``: LayerNorm's ``n(x) diag(gain)`` is orthogonal to ``diag(gain)^-1 1``,
  so a reader's ``W`` may move along it; what ``bias W`` then gains, the reader's bias absorbs, or
  (bias-free readers) the norm bias itself, once for all its readers.

A norm of layer 0 stands for its siblings (one action with '*', L units) where the rule holds in
every layer and its readers sit in its own layer; otherwise each copy is named in full.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace

import sympy

from symcomp.ir.graph import OpNode
from symcomp.spec.model import CustomGroup
from symcomp.symmetry.catalogue.base import (
    _SLICED,
    GroupInfo,
    L,
    Worked,
    _custom,
    _keep,
    _pattern,
    _short,
    _size_text,
    _tag,
    d,
)
from symcomp.symmetry.catalogue.facts import Facts, _fresh_writers, _gain, _linear_readers

# --- which norms, as one action or named in full ------------------------------------------------


def _holding(
    facts: Facts, pred: Callable[[OpNode], bool]
) -> Iterator[tuple[list[OpNode], bool, sympy.Expr]]:
    """Norms where ``pred`` holds: ``(ops, pinned, units)``. Layer 0's norm stands for its
    siblings (one action with '*', L units) when the condition holds in every layer and its
    readers sit in its own layer; otherwise (a global norm, a norm read by the next layer or by
    the head) each holding norm is pinned: its parameters are named in full."""
    for ops, layers in facts.norms():
        held = [op for op in ops if pred(op)]
        if not held:
            continue
        if layers is None:
            yield held, True, sympy.Integer(1)
            continue
        local = all(_readers_in_own_layer(facts, op) for op in held)
        if len(held) == len(ops) and local:
            yield [held[0]], False, L
            continue
        yield held, True, _layer_units(facts, len(held))


def _readers_in_own_layer(facts: Facts, op: OpNode) -> bool:
    layer = op.name[1:].split(".")[0]
    for reader in facts.readers(op.output):
        W = facts.param(reader, "W") or ""
        if not W.startswith(f"layers.{layer}."):
            return False
    return True


def _norm_groups(
    facts: Facts,
    pred: Callable[[OpNode], bool],
    build: Callable[[OpNode, Callable[[str], str], str], list[GroupInfo]],
) -> Iterator[GroupInfo]:
    """Run ``build(norm, name, per)`` for the norms where ``pred`` holds and merge the pinned
    copies of each group (same rule, same parameter pattern) into one line."""
    for ops, pinned, units in _holding(facts, pred):
        name, per = (_keep, "model") if pinned else (_pattern, "layer")
        in_layers = ops[0].name.startswith("L")
        merged: dict[tuple[str, str], list[GroupInfo]] = {}
        for op in ops:
            for info in build(op, name, per if in_layers else "model"):
                merged.setdefault((info.name, info.acts_on), []).append(info)
        for infos in merged.values():
            count = _layer_units(facts, len(infos)) if pinned and in_layers else units
            yield replace(
                infos[0],
                units=count,
                per="layer" if in_layers else "model",
                instances=tuple(i.group for i in infos[1:]),
            )


def _layer_units(facts: Facts, count: int) -> sympy.Expr:
    """``count`` of the model's layers, as a closed form: all of them, all but one (the last of
    a post-norm stack, read by the head instead), or a fixed number."""
    layers = facts.graph.arch.layers
    if count == layers:
        return L
    if count == layers - 1 and layers > 2:
        return L - 1
    return sympy.Integer(count)


def _norm_name(facts: Facts, norm: OpNode) -> str:
    return _pattern(facts.param(norm, "gain") or "").rsplit(".", 1)[0]


def _norm_info(
    name: str, cid: str, group: CustomGroup, acts_on: str, per: str, dim: sympy.Expr, *meta: str
) -> GroupInfo:
    return GroupInfo(name, cid, group, acts_on, per, dim, sympy.Integer(1), *meta)


# --- the rules -------------------------------------------------------------------------------


def norm_gain_scaling(facts: Facts) -> Iterator[GroupInfo]:
    """B1: ``(n(x) diag(gain s)) (diag(s)^-1 W) = (n(x) diag(gain)) W``, and ``bias diag(s)``
    against the same readers, where every reader is a linear map with its own weight (a tied
    weight would have to scale in its other use too)."""

    def build(norm: OpNode, P: Callable[[str], str], per: str) -> list[GroupInfo]:
        gain = P(facts.param(norm, "gain") or "")
        one_plus = norm.attr("gain_form") == "one_plus_w"
        acts = {gain: "(1 + gain) diag(s) - 1" if one_plus else "gain diag(s)"}
        if facts.param(norm, "bias"):
            acts[P(facts.param(norm, "bias") or "")] = "bias diag(s)"
        for op in _linear_readers(facts, norm) or []:
            W = P(facts.param(op, "W") or "")
            acts[W] = f"diag(s)^-1 {_short(W)}"
        name = _norm_name(facts, norm)
        group = _custom(f"norm_gain_scaling_{_tag(name)}", "scaling", per, "width", acts)
        return [
            _norm_info(
                "norm_gain_scaling",
                "B1",
                group,
                f"{name}.gain and its readers",
                per,
                d,
                "diag(gain) W for each reader (the gain folded in)",
                "gain folded into the readers (gain = 1)",
                "closed form per coordinate",
            )
        ]

    yield from _norm_groups(facts, lambda n: _linear_readers(facts, n) is not None, build)


def _own_linear_readers(facts: Facts, norm: OpNode) -> list[OpNode]:
    """The norm's readers that are linear maps with their own (untied) weights."""
    return [
        op
        for op in facts.readers(norm.output)
        if op.kind in ("linear", "unembed") and not facts.tied(facts.param(op, "W") or "")
    ]


def _biased_linear_readers(facts: Facts, norm: OpNode) -> list[OpNode] | None:
    """The readers if all are linear maps with biases (tying is harmless: W does not move)."""
    readers = facts.readers(norm.output)
    ok = readers and all(
        op.kind in ("linear", "unembed") and facts.param(op, "b") for op in readers
    )
    return readers if ok else None


def norm_bias_shift_through_writers(facts: Facts) -> Iterator[GroupInfo]:
    """A post-norm's output is the stream: besides its linear readers it feeds a residual add.
    A shift t of the norm bias is absorbed by each linear reader's bias (b - t W) and, on the
    residual path, by a biased writer into the same add (b' - t)."""

    def plan(n: OpNode) -> dict[str, str] | None:
        readers = facts.readers(n.output)
        if not facts.param(n, "bias") or all(op.kind != "add" for op in readers):
            return None
        acts: dict[str, str] = {}
        for op in readers:
            b = facts.param(op, "b")
            if op.kind in ("linear", "unembed") and b:
                acts[b] = f"{_short(b)} - t {facts.param(op, 'W')}"
            elif op.kind == "add":
                other = next(i.node for i in op.inputs if i.node != n.output)
                writer = next(_fresh_writers(facts, other), None)
                wb = writer and facts.param(writer, "b")
                if not wb:
                    return None
                acts[wb] = f"{_short(wb)} - t"
            else:
                return None
        return acts

    def build(norm: OpNode, P: Callable[[str], str], per: str) -> list[GroupInfo]:
        pinned = P is _keep
        acts = {
            P(k): v if pinned else v.replace("layers.0.", "layers.*.")
            for k, v in (plan(norm) or {}).items()
        }
        acts[P(facts.param(norm, "bias") or "")] = "bias + t"
        name = _norm_name(facts, norm)
        group = _custom(f"norm_bias_shift_{_tag(name)}", "translation", per, "width", acts)
        return [
            _norm_info(
                "norm_bias_fold",
                "B2",
                group,
                f"{name}.bias, its readers' biases and the writer bias beside it",
                per,
                d,
                "beta W + b for each linear reader; beta + b' on the residual path",
                "the norm bias set to zero",
                "closed form",
            )
        ]

    yield from _norm_groups(facts, lambda n: plan(n) is not None, build)


def norm_bias_fold(facts: Facts) -> Iterator[GroupInfo]:
    """B2: ``(y + t) W + (b - t W) = y W + b`` for a norm whose readers all have biases (a tied
    weight is harmless here: W does not move)."""

    def holds(n: OpNode) -> bool:
        return bool(facts.param(n, "bias")) and _biased_linear_readers(facts, n) is not None

    def build(norm: OpNode, P: Callable[[str], str], per: str) -> list[GroupInfo]:
        acts = {P(facts.param(norm, "bias") or ""): "bias + t"}
        for op in _biased_linear_readers(facts, norm) or []:
            W, b = P(facts.param(op, "W") or ""), P(facts.param(op, "b") or "")
            read = f"{W}^T" if op.kind == "unembed" and op.attr("transpose") else W
            acts[b] = f"{_short(b)} - t {read}"
        name = _norm_name(facts, norm)
        group = _custom(f"norm_bias_fold_{_tag(name)}", "translation", per, "width", acts)
        return [
            _norm_info(
                "norm_bias_fold",
                "B2",
                group,
                f"{name}.bias and its readers' biases",
                per,
                d,
                "beta W + b for each reader",
                "norm bias folded into the readers' biases (beta = 0)",
                "closed form",
            )
        ]

    yield from _norm_groups(facts, holds, build)


def reader_centering(facts: Facts) -> Iterator[GroupInfo]:
    """A LayerNorm's output minus its bias lies in diag(gain) 1^⊥: a reader's weight may move
    along diag(gain)^-1 1 in every output column, its bias absorbing what the norm bias sees.
    Readers without a bias cannot absorb it alone: the norm bias, which they all read, must
    compensate, so they move together (:func:`norm_bias_centering`)."""

    def holds(n: OpNode) -> bool:
        return n.attr("type") == "layernorm" and bool(_own_linear_readers(facts, n))

    def build(norm: OpNode, P: Callable[[str], str], per: str) -> list[GroupInfo]:
        gain = _gain(facts, norm, P)
        bias = facts.param(norm, "bias")
        a = f"diag({gain})^-1 ones(width)^T"
        out = []
        for op in _own_linear_readers(facts, norm):
            W = P(facts.param(op, "W") or "")
            b = facts.param(op, "b")
            if b is None and bias is not None:
                continue  # moves only with the norm bias and its other readers
            acts = {W: f"{_short(W)} + {a} t"}
            if b is not None and bias is not None:
                acts[P(b)] = f"{_short(b)} - {P(bias)} {a} t"
            size, dim = _out_size(facts, op)
            group = _custom(f"reader_centering_{_tag(W)}", "translation", per, size, acts)
            out.append(
                _norm_info(
                    "reader_centering",
                    "B3",
                    group,
                    f"{_pattern(W)} (+ bias)",
                    per,
                    dim,
                    "W projected on (diag(gain)^-1 1)^⊥",
                    "the column sums of diag(gain) W set to zero",
                    "closed form (a rank-one projection per column)",
                )
            )
        return out

    yield from _norm_groups(facts, holds, build)


def norm_bias_centering(facts: Facts) -> Iterator[GroupInfo]:
    """B3 through the norm bias: a LayerNorm with a bias, some reader without one, and only
    linear readers with their own weights. ``W -> (I + a t) W`` in every reader (``a =
    diag(gain)^-1 1``, so ``n(x) diag(gain) a = 0``) and ``bias -> bias (I + a t)^-1`` leave
    every reader's input-output map unchanged. The readers share the norm bias, so this is one
    d-dimensional group per norm, however many readers it has; a reader with a bias could absorb
    the change alone, and does so in :func:`reader_centering` (here it moves its weight too,
    which keeps the action the same for every reader)."""

    def holds(n: OpNode) -> bool:
        readers = _own_linear_readers(facts, n)
        return (
            n.attr("type") == "layernorm"
            and bool(facts.param(n, "bias"))
            and bool(readers)
            and len(readers) == len(facts.readers(n.output))
            and any(facts.param(op, "b") is None for op in readers)
        )

    def build(norm: OpNode, P: Callable[[str], str], per: str) -> list[GroupInfo]:
        gain = _gain(facts, norm, P)
        a = f"diag({gain})^-1 ones(width)^T"
        acts = {P(facts.param(norm, "bias") or ""): f"bias (eye(width) + {a} t)^-1"}
        for op in _own_linear_readers(facts, norm):
            W = P(facts.param(op, "W") or "")
            acts[W] = f"(eye(width) + {a} t) {_short(W)}"
        name = _norm_name(facts, norm)
        group = _custom(f"norm_bias_centering_{_tag(name)}", "translation", per, "width", acts)
        return [
            _norm_info(
                "reader_centering",
                "B3",
                group,
                f"{name}.bias and its readers",
                per,
                d,
                "bias-free readers' W projected on (diag(gain)^-1 1)^⊥",
                "the column sums of diag(gain) W set to zero in the bias-free readers",
                "closed form (a rank-one projection per column)",
            )
        ]

    yield from _norm_groups(facts, holds, build)


def _out_size(facts: Facts, op: OpNode) -> tuple[str, sympy.Expr]:
    """Output width of a linear reader, symbolically (from the table of parameter shapes)."""
    cols = _SLICED[_short(facts.param(op, "W") or "")][0][1]
    return _size_text(cols), cols


WORKED = (
    # two LayerNorms a layer, each read by untied linear maps only
    Worked(norm_gain_scaling, "gpt2-small", "2*L*d", 18_432),
    # and the final RMSNorm, read by the untied unembedding
    Worked(norm_gain_scaling, "llama-2-7b", "2*L*d + d", 266_240),
    # post-norm: a norm's output is the stream too, so only the last, read by the head alone
    Worked(norm_gain_scaling, "bert-base", "d", 768),
    # the embedding norm, each attention norm, and each MLP norm but the last (read by the head)
    Worked(norm_bias_shift_through_writers, "bert-base", "d + L*d + (L - 1)*d", 18_432),
    Worked(norm_bias_fold, "gpt2-small", "2*L*d", 18_432),
    # the last MLP norm and the head's own norm: their readers are all biased linear maps
    Worked(norm_bias_fold, "bert-base", "2*d", 1_536),
    # one direction per output column of every reader of the two LayerNorms
    Worked(reader_centering, "gpt2-small", "L*(h*k + 2*g*k + f)", 64_512),
    # the biased readers only: the bias-free unembedding moves with the final norm's bias
    Worked(reader_centering, "pythia-160m", "L*(h*k + 2*g*k + f)", 64_512),
    # the final norm's bias against its one bias-free reader, the untied unembedding
    Worked(norm_bias_centering, "pythia-160m", "d", 768),
)
