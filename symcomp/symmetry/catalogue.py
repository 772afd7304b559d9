"""``derive_groups(graph) -> Symmetries``: the named symmetry groups a graph admits.

Each rule below reads the graph (which norms feed which linear maps, what the residual stream's
readers are, which parameters are tied, which tables are added, which activations are positively
homogeneous) and, where its condition holds, writes the group in the spec language as a
:class:`CustomGroup`: the same objects a user declares, so catalogue and custom groups go through
one machinery (actions, Lie algebras, vertical vectors, proofs). Each group carries its dimension
per unit as a SymPy expression in the symbolic sizes, so totals are closed forms.

The rules are a naming layer, not the judge: the linear system of :mod:`.linear_system` counts
every symmetry the graph's local rules allow, and the analysis reports whatever of that count the
named groups leave unexplained.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import cache

import sympy

from symcomp.ir.graph import Graph, OpNode
from symcomp.spec.model import CustomGroup

# The symbolic sizes of the closed forms.
d, L, h, g, k, f, V, T, r = sympy.symbols("d L h g k f V T r", positive=True, integer=True)
SIZE_SYMBOLS = {
    "width": d,
    "layers": L,
    "heads": h,
    "kv_heads": g,
    "head_width": k,
    "hidden": f,
    "vocab": V,
    "positions": T,
    "rotary_width": r,
}


@dataclass(frozen=True)
class GroupInfo:
    """One named group: its action (spec language), its size, and its geometry."""

    name: str
    catalogue_id: str
    group: CustomGroup
    acts_on: str
    per: str
    dimension: sympy.Expr
    """dimension of the Lie algebra of one unit, in the symbolic sizes"""
    units: sympy.Expr
    invariants: str
    chart: str
    projection: str
    instances: tuple[CustomGroup, ...] = ()
    """further copies, where one action per unit cannot be written with '*' (a norm of layer l
    read by layer l + 1 in a post-norm stack): each names its parameters in full"""

    @property
    def total(self) -> sympy.Expr:
        return sympy.expand(self.dimension * self.units)

    @property
    def all_groups(self) -> tuple[CustomGroup, ...]:
        return (self.group, *self.instances)


@dataclass(frozen=True)
class UnreadRows:
    """Rows of a table that no input reads: free directions, not a group."""

    parameter: str
    rows: int
    count: sympy.Expr


@dataclass(frozen=True)
class Symmetries:
    """What :func:`derive_groups` finds in a graph."""

    groups: tuple[GroupInfo, ...]
    unread: tuple[UnreadRows, ...]

    def named(self, name: str) -> tuple[GroupInfo, ...]:
        return tuple(gi for gi in self.groups if gi.name == name)


# --- graph facts ----------------------------------------------------------------------------


class Facts:
    """Questions about one graph that the rules ask, answered once."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.producer = {op.output: op for op in graph.ops}
        self.consumers: dict[str, list[OpNode]] = {}
        for op in graph.ops:
            for inp in op.inputs:
                self.consumers.setdefault(inp.node, []).append(op)

    def first_layer_or_global(self, op: OpNode) -> bool:
        name = op.name
        return not name.startswith("L") or name.startswith("L0.")

    def norms(self) -> list[tuple[OpNode, list[int] | None]]:
        """Each norm of layer 0 or outside the layers, with the layers holding a norm of the
        same name (None outside the layers)."""
        out = []
        for op in self.graph.ops:
            if op.kind != "norm" or not self.first_layer_or_global(op):
                continue
            layers = None
            if op.name.startswith("L0."):
                local = op.name.split(".", 1)[1]
                layers = list(range(self.graph.arch.layers))
                out.append(([self.producer_named(f"L{i}.{local}") for i in layers], layers))
            else:
                out.append(([op], layers))
        return out

    def producer_named(self, name: str) -> OpNode:
        return next(op for op in self.graph.ops if op.name == name)

    def readers(self, value: str) -> list[OpNode]:
        return self.consumers.get(value, [])

    @cache  # noqa: B019 - one Facts per graph, discarded with it
    def feeds_only(self, value: str, kinds: frozenset[str]) -> bool:
        """Every path from ``value`` reaches an op of ``kinds`` before any other op (adds and
        constant scales pass the value on)."""
        readers = self.readers(value)
        if not readers:
            return False
        for op in readers:
            if op.kind in ("add", "scale"):
                if not self.feeds_only(op.output, kinds):
                    return False
            elif op.kind not in kinds:
                return False
        return True

    def layernorm_only(self, value: str) -> bool:
        readers = self._stream_readers(value)
        return bool(readers) and all(op.attr("type") == "layernorm" for op in readers)

    def _stream_readers(self, value: str) -> list[OpNode]:
        if not self.feeds_only(value, frozenset({"norm"})):
            return []
        out: list[OpNode] = []
        for op in self.readers(value):
            out += self._stream_readers(op.output) if op.kind in ("add", "scale") else [op]
        return out

    def param(self, op: OpNode, slot: str) -> str | None:
        inp = op.input(slot)
        return inp.node if inp is not None and inp.node in self.graph.param else None

    def tied(self, param: str) -> bool:
        return len(self.graph.uses(param)) > 1


def _pattern(param: str) -> str:
    """``layers.0.attn.W_Q`` -> ``layers.*.attn.W_Q``: rules read layer 0 and act on all."""
    parts = param.split(".")
    if parts[0] == "layers":
        parts[1] = "*"
    return ".".join(parts)


def _keep(param: str) -> str:
    return param


def _short(param: str) -> str:
    return param.rsplit(".", 1)[-1]


def _gain(facts: Facts, norm: OpNode, name: Callable[[str], str] = _pattern) -> str:
    gain = name(facts.param(norm, "gain") or "")
    # a gain stored as w (Gemma) multiplies by 1 + w
    return f"(1 + {gain})" if norm.attr("gain_form") == "one_plus_w" else gain


def _custom(name: str, group: str, per: str, size: str, acts: dict[str, str], **kw) -> CustomGroup:
    return CustomGroup.model_validate(
        {"name": name, "group": group, "per": per, "size": size, "acts": acts, **kw}
    )


Rule = Callable[[Facts], Iterator[GroupInfo]]
RULES: list[Rule] = []


def rule(fn: Rule) -> Rule:
    RULES.append(fn)
    return fn


# --- attention (A1-A4) -------------------------------------------------------------------------


def _attention_params(facts: Facts) -> dict[str, str | None]:
    names = ("W_Q", "b_Q", "W_K", "b_K", "W_V", "b_V", "W_O", "b_O")
    params = facts.graph.param
    return {n: (f"layers.*.attn.{n}" if f"layers.0.attn.{n}" in params else None) for n in names}


def _has_rope(facts: Facts) -> bool:
    return any(op.kind == "rope" for op in facts.graph.ops)


@cache
def rope_pair_commutant_dims() -> tuple[int, int, int]:
    """Solve ``R(a) X = X R(b)`` with SymPy for a 2x2 block ``X``: the dimension of the
    solutions for a pair with itself (a = b), for two pairs at distinct frequencies, and for a
    pair against a non-rotated dim (b = 0). The RoPE commutant is assembled from these blocks."""
    a, b = sympy.symbols("a b", real=True)
    X = sympy.Matrix(2, 2, sympy.symbols("x0:4"))

    def rot(t: sympy.Expr) -> sympy.Matrix:
        return sympy.Matrix([[sympy.cos(t), -sympy.sin(t)], [sympy.sin(t), sympy.cos(t)]])

    def free(eqs: sympy.Matrix) -> int:
        system = [sympy.expand_trig(e) for e in eqs]
        # generic angles: substitute algebraically independent values, then solve the linear system
        point = {a: sympy.Rational(3, 7), b: sympy.Rational(11, 5)}
        A, _ = sympy.linear_eq_to_matrix([sympy.nsimplify(e.subs(point)) for e in system], list(X))
        return 4 - A.rank(simplify=True)

    same = free(rot(a) * X - X * rot(a))
    distinct = free(rot(a) * X - X * rot(b))
    # a pair against a fixed dim: R(a) x = x for a column x
    column = (rot(a) - sympy.eye(2)).subs(a, sympy.Rational(3, 7))
    fixed = 2 - column.rank(simplify=True)
    return same, distinct, fixed


def qk_dimension(rope: bool) -> sympy.Expr:
    """GL(k), or the commutant of every position rotation: each rotated pair keeps the
    centraliser of SO(2) in gl(2) (solved above), distinct pairs and rotated/fixed dims do not
    mix, and the k - r fixed dims keep gl(k - r)."""
    if not rope:
        return k**2
    same, distinct, fixed = rope_pair_commutant_dims()
    assert distinct == 0 and fixed == 0, "RoPE pairs mix with nothing else"
    return same * (r / 2) + (k - r) ** 2


@rule
def qk_gauge(facts: Facts) -> Iterator[GroupInfo]:
    p = _attention_params(facts)
    rope = _has_rope(facts)
    acts = {p["W_Q"]: "W_Q A", p["W_K"]: "W_K A^-T"}
    if p["b_Q"]:
        acts[p["b_Q"]] = "b_Q A"
    if p["b_K"]:
        acts[p["b_K"]] = "b_K A^-T"
    group = _custom(
        "qk_gauge", "GL", "kv_head", "head_width", acts, commutes_with=["rope"] if rope else []
    )
    yield GroupInfo(
        "qk_gauge",
        "A1'" if rope else "A1",
        group,
        "W_Q, W_K" + (", b_Q" if p["b_Q"] else "") + (", b_K" if p["b_K"] else ""),
        "kv head",
        qk_dimension(rope),
        L * g,
        "W_Q^i W_K^T per query head i (kept factored)",
        "k pivot rows of W_K made the identity (QR with column pivoting on an orthonormal basis)",
        "Sylvester: W_Q^T W_Q xi + xi W_K^T W_K = W_Q^T G_Q - G_K^T W_K",
    )


@rule
def key_bias_shift(facts: Facts) -> Iterator[GroupInfo]:
    p = _attention_params(facts)
    if not p["b_K"]:
        return
    rope = _has_rope(facts)
    group = _custom(
        "key_bias_shift",
        "translation",
        "kv_head",
        "head_width",
        {p["b_K"]: "b_K + t"},
        commutes_with=["rope"] if rope else [],
    )
    yield GroupInfo(
        "key_bias_shift",
        "A2",
        group,
        "b_K",
        "kv head",
        k - r if rope else k,
        L * g,
        "q . k up to a per-query constant",
        "b_K set to zero on the non-rotated dims",
        "remove the mean-free part: the b_K component along the fixed dims",
    )


@rule
def vo_gauge(facts: Facts) -> Iterator[GroupInfo]:
    p = _attention_params(facts)
    acts = {p["W_V"]: "W_V B", p["W_O"]: "B^-1 W_O"}
    if p["b_V"]:
        acts[p["b_V"]] = "b_V B"
    group = _custom("vo_gauge", "GL", "kv_head", "head_width", acts, element="B")
    yield GroupInfo(
        "vo_gauge",
        "A3",
        group,
        "W_V, W_O" + (", b_V" if p["b_V"] else ""),
        "kv head",
        k**2,
        L * g,
        "W_V W_O^i per query head i (kept factored)",
        "k pivot columns of W_V made the identity",
        "Sylvester: W_V^T W_V eta + eta W_O W_O^T = W_V^T G_V - G_O W_O^T",
    )


@rule
def value_bias_fold(facts: Facts) -> Iterator[GroupInfo]:
    p = _attention_params(facts)
    if not (p["b_V"] and p["b_O"]):
        return
    acts = {p["b_V"]: "b_V + t", p["b_O"]: "b_O - t W_O"}
    group = _custom("value_bias_fold", "translation", "kv_head", "head_width", acts)
    yield GroupInfo(
        "value_bias_fold",
        "A4",
        group,
        "b_V, b_O",
        "kv head",
        k,
        L * g,
        "b_V W_O + b_O (attention weights sum to one)",
        "b_V = 0",
        "closed form: the b_V component, moved into b_O",
    )


# --- norms (B1-B3) ----------------------------------------------------------------------------


def _linear_readers(facts: Facts, norm: OpNode) -> list[OpNode] | None:
    """The norm's readers if every one is a linear map (or an unembedding) with its own,
    untied weight; otherwise None."""
    readers = facts.readers(norm.output)
    if not readers or any(op.kind not in ("linear", "unembed") for op in readers):
        return None
    if any(facts.tied(facts.param(op, "W") or "") for op in readers):
        return None
    return readers


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


def _per(norm: OpNode) -> str:
    return "layer" if norm.name.startswith("L") else "model"


def _norm_name(facts: Facts, norm: OpNode) -> str:
    return _pattern(facts.param(norm, "gain") or "").rsplit(".", 1)[0]


def _norm_info(
    name: str, cid: str, group: CustomGroup, acts_on: str, per: str, dim: sympy.Expr, *meta: str
) -> GroupInfo:
    return GroupInfo(name, cid, group, acts_on, per, dim, sympy.Integer(1), *meta)


def _tag(text: str) -> str:
    return text.replace(".", "_").replace("*", "i")


@rule
def norm_gain_scaling(facts: Facts) -> Iterator[GroupInfo]:
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


@rule
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


@rule
def norm_bias_fold(facts: Facts) -> Iterator[GroupInfo]:
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


@rule
def reader_centering(facts: Facts) -> Iterator[GroupInfo]:
    """A LayerNorm's output minus its bias lies in diag(gain) 1^⊥: a reader's weight may move
    along diag(gain)^-1 1 in every output column, its bias absorbing what the norm bias sees;
    a reader with no bias can still move along the directions the norm bias absorbs."""

    def holds(n: OpNode) -> bool:
        return n.attr("type") == "layernorm" and bool(_own_linear_readers(facts, n))

    def build(norm: OpNode, P: Callable[[str], str], per: str) -> list[GroupInfo]:
        readers = _own_linear_readers(facts, norm)
        all_linear = len(readers) == len(facts.readers(norm.output))
        gain = _gain(facts, norm, P)
        bias = facts.param(norm, "bias")
        a = f"diag({gain})^-1 ones(width)^T"
        out = []
        for op in readers:
            W = P(facts.param(op, "W") or "")
            b = facts.param(op, "b")
            if b is None and bias is not None and not all_linear:
                continue  # the norm bias cannot absorb it without moving its other readers
            if b is not None or bias is None:
                acts = {W: f"{_short(W)} + {a} t"}
                if b is not None and bias is not None:
                    acts[P(b)] = f"{_short(b)} - {P(bias)} {a} t"
                size, dim = _out_size(facts, op)
            else:  # compensated through the norm bias: W -> (I + a u) W, bias -> bias (I + a u)^-1
                acts = {
                    W: f"(eye(width) + {a} t) {_short(W)}",
                    P(bias): f"bias (eye(width) + {a} t)^-1",
                }
                size, dim = "width", d
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


def _size_text(expr: sympy.Expr) -> str:
    """A symbolic size as a spec-language size expression: ``h*k`` -> ``heads*head_width``."""
    names = {sym: sympy.Symbol(name) for name, sym in SIZE_SYMBOLS.items()}
    return str(expr.subs(names))


def _out_size(facts: Facts, op: OpNode) -> tuple[str, sympy.Expr]:
    """Output width of a linear reader, symbolically (from the table of parameter shapes)."""
    cols = _SLICED[_short(facts.param(op, "W") or "")][0][1]
    return _size_text(cols), cols


# --- the residual stream (B4-B7) --------------------------------------------------------------


def _writers(facts: Facts, value: str) -> Iterator[OpNode]:
    """The parametrized ops writing into ``value`` (through adds and constant scales)."""
    op = facts.producer.get(value)
    if op is None:
        return
    if op.kind == "add":
        for inp in op.inputs:
            yield from _writers(facts, inp.node)
    elif op.kind == "scale":
        yield from _writers(facts, op.inputs[0].node)
    elif op.kind in ("embed", "linear"):
        yield op


def _stream_values(facts: Facts) -> list[str]:
    """Values read only by norms (through adds): the points of the residual stream."""
    only_norms = frozenset({"norm"})
    return [
        v
        for v in facts.graph.value
        if facts.feeds_only(v, only_norms)
        and facts.producer.get(v) is not None
        and facts.producer[v].kind not in ("add", "scale")
    ]


def _rows(facts: Facts, param: str) -> tuple[str, sympy.Expr]:
    """Rows of a writer table or weight, symbolically where they scale with a size."""
    shape = facts.graph.param[param].shape
    local = _short(param)
    if local == "W_P":  # max_positions rows plus the unread leading ones (OPT)
        extra = shape[0] - facts.graph.arch.max_positions
        return f"positions + {extra}", T + extra
    if local in _SLICED and local != "W_T":
        rows = _SLICED[local][0][0]
        return _size_text(rows), rows
    return str(shape[0]), sympy.Integer(shape[0])


@rule
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
            b = facts.param(op, "b")
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
            if op.kind in ("add", "scale"):
                walk(op.output)
            elif op.kind == "norm" and op not in reached:
                reached.append(op)

    for value in points:
        walk(value)
    found = set(map(id, reached))
    return [op for op in facts.graph.ops if id(op) in found and facts.first_layer_or_global(op)]


@rule
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


@rule
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


@rule
def unembedding_shift(facts: Facts) -> Iterator[GroupInfo]:
    """log-softmax ignores a constant added to every logit of a position."""
    unembed = next(op for op in facts.graph.ops if op.kind == "unembed")
    W, b = facts.param(unembed, "W") or "", facts.param(unembed, "b")
    if not facts.tied(W):
        yield _shift("unembedding_shift", {W: "W_U + t^T ones(vocab)"}, "width", d, W)
    if b:
        yield _shift("unembedding_bias_shift", {b: "b_U + t ones(vocab)"}, "1", 1, b)


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


@rule
def mlp_scaling(facts: Facts) -> Iterator[GroupInfo]:
    """A positively homogeneous activation (ReLU) or the linear branch of a gate passes a
    per-neuron scale through to W_down."""
    for op in facts.graph.ops:
        if not op.name.startswith("L0."):
            continue
        if op.kind == "activation" and op.attr("fn") == "relu":
            branch, positive = facts.producer[op.input("x").node], True
        elif op.kind == "gate":
            branch, positive = facts.producer[op.input("b").node], False
        else:
            continue
        down = next(c for c in facts.readers(op.output) if c.kind == "linear")
        W_up, b_up = facts.param(branch, "W") or "", facts.param(branch, "b")
        acts = {
            _pattern(W_up): f"{_short(W_up)} diag(s)",
            _pattern(facts.param(down, "W") or ""): "diag(s)^-1 W_down",
        }
        if b_up:
            acts[_pattern(b_up)] = f"{_short(b_up)} diag(s)"
        yield GroupInfo(
            "mlp_scaling",
            "C1" if positive else "C2",
            _custom("mlp_scaling", "scaling", "layer", "hidden", acts, positive=positive),
            "W_up (+ b_up), W_down",
            "layer",
            f,
            L,
            "W_up[:, i] W_down[i, :] per neuron",
            "one entry per neuron of W_down fixed to +-1 (sign kept in a buffer)",
            "closed form per neuron (balancing |W_up[:, i]| = |W_down[i, :]|)",
        )


@rule
def head_permutation(facts: Facts) -> Iterator[GroupInfo]:
    """Key/value heads permute together with the query heads they serve (A5, discrete)."""
    p = _attention_params(facts)
    group_width = "heads / kv_heads * head_width"  # the query heads of one kv head, together
    acts = {}
    for name in ("W_Q", "b_Q"):
        if p[name]:
            acts[p[name]] = f"{name} kron(P, eye({group_width}))"
    for name in ("W_K", "b_K", "W_V", "b_V"):
        if p[name]:
            acts[p[name]] = f"{name} kron(P, eye(head_width))"
    acts[p["W_O"] or ""] = f"kron(P, eye({group_width}))^T W_O"
    yield GroupInfo(
        "head_permutation",
        "A5",
        _custom("head_permutation", "permutation", "layer", "kv_heads", acts),
        "every attention projection",
        "layer",
        sympy.Integer(0),
        L,
        "the set of heads",
        "heads sorted (e.g. by the norm of W_Q W_K^T)",
        "none (discrete)",
    )


@rule
def neuron_permutation(facts: Facts) -> Iterator[GroupInfo]:
    """MLP neurons permute with their rows of W_down (C3, discrete)."""
    acts = {}
    for name in ("W_up", "b_up", "W_gate", "b_gate"):
        if f"layers.0.mlp.{name}" in facts.graph.param:
            acts[f"layers.*.mlp.{name}"] = f"{name} P"
    acts["layers.*.mlp.W_down"] = "P^T W_down"
    yield GroupInfo(
        "neuron_permutation",
        "C3",
        _custom("neuron_permutation", "permutation", "layer", "hidden", acts),
        "W_up, W_gate, W_down and biases",
        "layer",
        sympy.Integer(0),
        L,
        "the set of neurons",
        "neurons sorted",
        "none (discrete)",
    )


def _fresh_writers(facts: Facts, value: str) -> Iterator[OpNode]:
    """Writers into ``value`` since the last point anything read the stream."""
    op = facts.producer.get(value)
    if op is None:
        return
    if op.kind == "add":
        for inp in op.inputs:
            if [c.name for c in facts.readers(inp.node)] == [op.name]:
                yield from _fresh_writers(facts, inp.node)
    elif op.kind == "linear":
        yield op


@rule
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


def unread_rows(facts: Facts) -> Iterator[UnreadRows]:
    """Rows of an embedding table that no input reads (OPT's two leading position rows; the
    token-type rows beyond type 0, since the model's input is token ids alone)."""
    for op in facts.graph.ops:
        if op.kind != "embed":
            continue
        W = facts.param(op, "W") or ""
        rows = facts.graph.param[W].shape[0]
        index = op.attr("index")
        read = {"token": rows, "position": facts.graph.arch.max_positions, "token_type": 1}[index]
        if rows > read:
            yield UnreadRows(W, rows - read, sympy.Integer(rows - read) * d)


def derive_groups(graph: Graph) -> Symmetries:
    """Every named group the rules find in ``graph``, and the unread parameters."""
    facts = Facts(graph)
    groups = tuple(info for rule_fn in RULES for info in rule_fn(facts))
    return Symmetries(groups, tuple(unread_rows(facts)))


# --- custom groups ----------------------------------------------------------------------------


def _algebra_dimension(group: CustomGroup, n: sympy.Expr) -> sympy.Expr:
    """The Lie algebra dimension of one unit of a declared group of size n."""
    rope = "rope" in group.commutes_with
    if group.group == "permutation":
        return sympy.Integer(0)
    if group.group in ("scaling", "translation"):
        return n - r if rope and group.group == "translation" else n
    if rope:
        return qk_dimension(True).subs(k, n)
    if group.group == "GL":
        return n**2 - n if group.fixes else n**2  # 1 X = 0: n constraints
    m = n - 1 if group.fixes else n
    return m * (m - 1) / 2


def custom_group_info(group: CustomGroup, arch_layers: int) -> GroupInfo:
    """A group declared in the spec, with its dimension as a closed form in the sizes."""
    from symcomp.lang import parse_expr
    from symcomp.lang.sympy_printer import to_sympy

    n = (
        group.size
        if isinstance(group.size, int)
        else to_sympy(parse_expr(group.size), SIZE_SYMBOLS)
    )
    n = sympy.sympify(n)
    if isinstance(n, sympy.MatrixBase):
        n = n[0, 0]
    layers = L if group.layers is None else sympy.Integer(len(group.layers))
    units = {
        "model": sympy.Integer(1),
        "layer": layers,
        "kv_head": layers * g,
        "head": layers * h,
        "neuron": layers * f,
    }[group.per]
    return GroupInfo(
        group.name,
        "custom",
        group,
        ", ".join(group.acts),
        group.per.replace("_", " "),
        sympy.expand(_algebra_dimension(group, n)),
        units,
        "as declared",
        "not derived for custom groups",
        "the joint least-squares projection",
    )


def select_groups(syms: Symmetries, wanted: list[str | CustomGroup], layers: int) -> Symmetries:
    """The groups a spec lists instead of ``auto``: catalogue names pick the derived groups of
    that name (none if the graph does not admit it), custom groups are taken as declared."""
    chosen: list[GroupInfo] = []
    for item in wanted:
        if isinstance(item, CustomGroup):
            chosen.append(custom_group_info(item, layers))
        else:
            chosen += [gi for gi in syms.groups if gi.name == item]
    unread = syms.unread if "unread_parameters" in wanted else ()
    return Symmetries(tuple(chosen), unread)


# --- actions as SymPy expressions -------------------------------------------------------------

_SLICED = {
    # local name -> (rows, cols) whole, and under per kv_head / head / neuron
    "W_Q": ((d, h * k), (d, k)),
    "b_Q": ((1, h * k), (1, k)),
    "W_K": ((d, g * k), (d, k)),
    "b_K": ((1, g * k), (1, k)),
    "W_V": ((d, g * k), (d, k)),
    "b_V": ((1, g * k), (1, k)),
    "W_O": ((h * k, d), (k, d)),
    "W_up": ((d, f), (d, 1)),
    "W_gate": ((d, f), (d, 1)),
    "b_up": ((1, f), (1, 1)),
    "b_gate": ((1, f), (1, 1)),
    "W_down": ((f, d), (1, d)),
    "W_E": ((V, d), (V, d)),
    "W_P": ((T, d), (T, d)),
    "W_U": ((d, V), (d, V)),
    "b_U": ((1, V), (1, V)),
    "W_dense": ((d, d), (d, d)),
}


def _symbolic_shape(path: str, per: str) -> tuple[sympy.Expr, sympy.Expr]:
    local = path.rsplit(".", 1)[-1]
    if local in _SLICED:
        whole, sliced = _SLICED[local]
        head_sliced = per in ("kv_head", "head") and local[-1] in "QKVO"
        neuron_sliced = per == "neuron" and local in ("W_up", "W_gate", "b_up", "b_gate", "W_down")
        return sliced if head_sliced or neuron_sliced else whole
    if local == "W_T":
        return (sympy.Symbol("types", positive=True, integer=True), d)
    return (sympy.Integer(1), d)  # gains, norm biases, b_O, b_down


def action_sympy(group: CustomGroup) -> dict[str, sympy.Expr]:
    """The group's action on each parameter as a SymPy matrix expression over symbolic sizes:
    parameters and the element are MatrixSymbols shaped in d, h, g, k, f, V, T."""
    from symcomp.lang import parse_expr
    from symcomp.lang.sympy_printer import to_sympy

    size = group.size
    n = sympy.sympify(size if isinstance(size, int) else to_sympy(parse_expr(size), SIZE_SYMBOLS))
    element = (
        group.element
        or {"GL": "A", "O": "Q", "SO": "Q", "scaling": "s", "translation": "t", "permutation": "P"}[
            group.group
        ]
    )
    square = group.group in ("GL", "O", "SO", "permutation")
    symbols: dict[str, object] = {
        **SIZE_SYMBOLS,
        element: sympy.MatrixSymbol(element, n if square else 1, n),
    }
    out = {}
    for path, text in group.acts.items():
        expr = parse_expr(text)
        for name in sorted(_names(expr)):
            if name not in symbols:
                rows, cols = _symbolic_shape(name, group.per if "." not in name else "model")
                symbols[name] = sympy.MatrixSymbol(
                    name.replace(".", "_").replace("*", "i"), rows, cols
                )
        own = path.rsplit(".", 1)[-1]
        rows, cols = _symbolic_shape(path, group.per)
        symbols[own] = sympy.MatrixSymbol(own, rows, cols)
        out[path] = to_sympy(expr, symbols)
    return out


def _names(expr) -> set[str]:
    from symcomp.lang import free_names

    return set(free_names(expr))
