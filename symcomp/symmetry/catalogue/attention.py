"""A. Attention, per layer and per key/value head (A1-A5).

Attention reads its projections only through two products per query head ``i`` served by kv head
``j``: the logits ``(x W_Q^i + b_Q^i)(x W_K^j + b_K^j)^T`` and the values ``softmax(...) (x W_V^j
+ b_V^j) W_O^i``. Whatever leaves those products unchanged is a symmetry:

- A1 ``qk_gauge``: ``W_Q A`` against ``W_K A^-T``; under RoPE (A1') ``A`` must commute with every
  position rotation;
- A2 ``key_bias_shift``: ``b_K + t`` adds ``q . t`` to every logit of a query, which softmax drops;
- A3 ``vo_gauge``: ``W_V B`` against ``B^-1 W_O``;
- A4 ``value_bias_fold``: the attention weights sum to one, so ``b_V`` reaches the output as the
  constant ``b_V W_O``, which ``b_O`` can take;
- A4' ``value_bias_centering``: without a bias to take it, that constant is invisible where it is
  a multiple of 1 and only LayerNorms read the stream: one shift per layer when the value width
  ``g k`` equals ``d``;
- A5 ``head_permutation``: heads relabelled together with their kv groups.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache

import sympy

from symcomp.errors import DerivationError
from symcomp.ir.graph import OpNode
from symcomp.spec.model import CustomGroup
from symcomp.symmetry.catalogue.base import GroupInfo, L, Worked, _custom, _pattern, _short, g, k, r
from symcomp.symmetry.catalogue.facts import Facts, _fresh_writers, _gain


def _attention_params(facts: Facts) -> dict[str, str | None]:
    names = ("W_Q", "b_Q", "W_K", "b_K", "W_V", "b_V", "W_O", "b_O")
    params = facts.graph.param
    return {n: (f"layers.*.attn.{n}" if f"layers.0.attn.{n}" in params else None) for n in names}


def _position_kinds(facts: Facts) -> list[tuple[bool, list[int] | None]]:
    """(rotated, layers) for each kind of layer the graph holds: the layers whose queries and
    keys pass a rope op, and those where none does (NoPE); ``layers`` None when one kind
    covers every layer."""
    ropes = [re.match(r"L(\d+)\.", op.output) for op in facts.graph.ops if op.kind == "rope"]
    rotated = sorted({int(m.group(1)) for m in ropes if m})
    plain = [i for i in range(facts.graph.arch.layers) if i not in rotated]
    if not rotated or not plain:
        return [(bool(rotated), None)]
    return [(True, rotated), (False, plain)]


def _units(layers: list[int] | None) -> sympy.Expr:
    """Key/value heads of every layer, or of the listed ones."""
    return L * g if layers is None else len(layers) * g


def _named(name: str, rope: bool, layers: list[int] | None) -> str:
    return name if layers is None or rope else f"{name}_nope"


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


def qk_gauge(facts: Facts) -> Iterator[GroupInfo]:
    """A1: ``(x W_Q A)(x W_K A^-T)^T = (x W_Q)(x W_K)^T`` for any ``A`` in GL(k) per kv head, the
    same ``A`` on every query head the kv head serves. Under RoPE the rotation ``R_t`` sits
    between the two factors, so ``A`` must commute with every ``R_t`` (A1'). A model whose
    layers differ (NoPE layers among rotated ones) gets one group per kind of layer: full GL(k)
    where nothing rotates. Under QK-norm only a scaling of the norms' gains is left."""
    if _qk_normed(facts):
        yield from _qk_norm_scaling(facts, any(rope for rope, _ in _position_kinds(facts)))
        return
    for rope, layers in _position_kinds(facts):
        yield _qk_gauge(facts, rope, layers)


def _qk_gauge(facts: Facts, rope: bool, layers: list[int] | None) -> GroupInfo:
    p = _attention_params(facts)
    acts = {p["W_Q"]: "W_Q A", p["W_K"]: "W_K A^-T"}
    if p["b_Q"]:
        acts[p["b_Q"]] = "b_Q A"
    if p["b_K"]:
        acts[p["b_K"]] = "b_K A^-T"
    restrict = {} if layers is None else {"layers": layers}
    commutes = ["rope"] if rope else []
    name = _named("qk_gauge", rope, layers)
    group = _custom(name, "GL", "kv_head", "head_width", acts, commutes_with=commutes, **restrict)
    return GroupInfo(
        "qk_gauge",
        "A1'" if rope else "A1",
        group,
        "W_Q, W_K" + (", b_Q" if p["b_Q"] else "") + (", b_K" if p["b_K"] else ""),
        "kv head",
        qk_dimension(rope),
        _units(layers),
        "W_Q^i W_K^T per query head i (kept factored)",
        "k pivot rows of W_K made the identity (QR with column pivoting on an orthonormal basis)",
        "Sylvester: W_Q^T W_Q xi + xi W_K^T W_K = W_Q^T G_Q - G_K^T W_K",
    )


def _norm_bias_shift(facts: Facts, W: str | None, t: str = "t") -> str | None:
    """Where the projection ``W`` has no bias of its own but reads a LayerNorm with a bias
    ``beta`` directly (its own, untied weight, in every layer), ``beta W`` is its bias: moving
    ``W`` along ``a = diag(gain)^-1 1`` (``n(x) diag(gain) a = 0``) shifts only that bias, by
    ``(beta . a) t``. The move of ``W``, as an action; None elsewhere."""
    if W is None or facts.tied(W.replace("*", "0")):
        return None
    for layer in range(facts.graph.arch.layers):
        name = W.replace("*", str(layer))
        op = next((o for o in facts.graph.ops if facts.param(o, "W") == name), None)
        norm = op and facts.producer.get(op.inputs[0].node)
        if not (norm and norm.kind == "norm" and norm.attr("type") == "layernorm"):
            return None
        if not facts.param(norm, "bias"):
            return None
    gain = _gain(facts, norm)
    return f"{W.rsplit('.', 1)[1]} + diag({gain})^-1 ones(width)^T {t}"


def _key_shift(facts: Facts, p: dict[str, str | None]) -> dict[str, str] | None:
    if p["b_K"]:
        return {p["b_K"]: "b_K + t"}
    moved = _norm_bias_shift(facts, p["W_K"])
    return {p["W_K"] or "": moved} if moved else None


def _qk_normed(facts: Facts) -> bool:
    """Whether the queries and keys pass through norms (QK-norm) before the scores."""
    return "layers.0.attn.q_norm.gain" in facts.graph.param


def _qk_norm_scaling(facts: Facts, rope: bool) -> Iterator[GroupInfo]:
    """A1 under QK-norm: a norm hands on ``n(y) diag(gain)``, and ``n(y A) = n(y) A`` only for
    orthogonal ``A``, which a generic gain does not commute with: what is left of A1 is the
    diagonal part, moved onto the norms' gains, ``q_gain s`` against ``k_gain s^-1`` (commuting
    with RoPE: one factor per rotated pair). One query gain of head_width shared by the heads
    (per head) gives one copy per layer; gains over all heads (full width) one per kv head."""
    per_head = (
        facts.graph.param["layers.0.attn.q_norm.gain"].shape[0] == facts.graph.sizes.head_width
    )
    acts = {
        "layers.*.attn.q_norm.gain": "gain diag(s)",
        "layers.*.attn.k_norm.gain": "gain diag(s)^-1",
    }
    per = "layer" if per_head else "kv_head"
    group = _custom(
        "qk_gauge", "scaling", per, "head_width", acts, commutes_with=["rope"] if rope else []
    )
    dim = (r / 2 + (k - r)) if rope else k
    yield GroupInfo(
        "qk_gauge",
        "A1''",
        group,
        "q_norm.gain, k_norm.gain",
        "layer" if per_head else "kv head",
        dim,
        L if per_head else L * g,
        "q_gain * k_gain per feature (one product per rotated pair)",
        "the larger k_norm gain of each rotated pair (each other feature) made 1",
        "closed form per coordinate",
    )


def key_bias_shift(facts: Facts) -> Iterator[GroupInfo]:
    """A2: ``q (k + t)^T = q k^T + q t^T`` adds the same number to every logit of one query, and
    softmax ignores it. A rotated dim would turn ``t`` with the key's position: only the ``k - r``
    fixed dims shift; on a NoPE layer every dim does. Without ``b_K``, a LayerNorm's bias read
    through ``W_K`` is the key bias (:func:`_norm_bias_shift`)."""
    p = _attention_params(facts)
    capped = any(op.kind == "scores" and op.attr("softcap") for op in facts.graph.ops)
    if capped or _qk_normed(facts):
        return  # a soft-cap (tanh) or a key norm does not pass a per-query constant on
    acts = _key_shift(facts, p)
    if acts is None:
        return
    for rope, layers in _position_kinds(facts):
        restrict = {} if layers is None else {"layers": layers}
        group = _custom(
            _named("key_bias_shift", rope, layers),
            "translation",
            "kv_head",
            "head_width",
            acts,
            commutes_with=["rope"] if rope else [],
            **restrict,
        )
        yield _key_bias_info(group, rope, layers, ", ".join(acts))


def _key_bias_info(
    group: CustomGroup, rope: bool, layers: list[int] | None, acts_on: str
) -> GroupInfo:
    return GroupInfo(
        "key_bias_shift",
        "A2",
        group,
        acts_on,
        "kv head",
        k - r if rope else k,
        _units(layers),
        "q . k up to a per-query constant",
        "b_K set to zero on the non-rotated dims",
        "remove the mean-free part: the b_K component along the fixed dims",
    )


def vo_gauge(facts: Facts) -> Iterator[GroupInfo]:
    """A3: the values reach the stream as ``softmax(...) (x W_V B)(B^-1 W_O) = softmax(...) x W_V
    W_O``, for any ``B`` in GL(k) per kv head (no position rotation acts on values)."""
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


def _output_absorber(facts: Facts, p: dict[str, str | None]) -> str | None:
    """The bias that can take a constant the attention adds to the stream: ``b_O``, or else a
    biased writer into the same point of the stream (a parallel block's ``b_down``)."""
    if p["b_O"]:
        return p["b_O"]
    found = _written_stream(facts)
    if found is None:
        return None
    out, value = found
    writers = _fresh_writers(facts, value)
    biases = [b for w in writers if w is not out and (b := facts.param(w, "b"))]
    return _pattern(biases[0]) if biases else None


def _written_stream(facts: Facts) -> tuple[OpNode, str] | None:
    """Layer 0's output projection and the point of the stream it writes into (where something
    other than an add reads it)."""
    out = next(o for o in facts.graph.ops if facts.param(o, "W") == "layers.0.attn.W_O")
    for value in facts.graph.value:
        readers = facts.readers(value)
        if not readers or all(c.kind == "add" for c in readers):
            continue
        if out in list(_fresh_writers(facts, value)):
            return out, value
    return None


def value_bias_fold(facts: Facts) -> Iterator[GroupInfo]:
    """A4: the weights of a query sum to one, so ``softmax(...) (v + 1 t) W_O = softmax(...) v W_O
    + t W_O``: the shift of ``b_V`` is a constant that ``b_O - t W_O`` takes back (or, without
    ``b_O``, a biased writer into the same point of the stream). Without ``b_V``, a LayerNorm's
    bias read through ``W_V`` is the value bias: ``W_V`` moves, shifting it by ``(beta . a) t``."""
    p = _attention_params(facts)
    absorber = _output_absorber(facts, p)
    if absorber is None:
        return
    if p["b_V"]:
        acts = {p["b_V"]: "b_V + t", absorber: f"{_short(absorber)} - t {p['W_O']}"}
    else:
        moved = _norm_bias_shift(facts, p["W_V"])
        if moved is None:
            return
        op = next(o for o in facts.graph.ops if facts.param(o, "W") == "layers.0.attn.W_V")
        norm = facts.producer[op.inputs[0].node]
        bias, gain = _pattern(facts.param(norm, "bias") or ""), _gain(facts, norm)
        shift = f"{bias} diag({gain})^-1 ones(width)^T t"
        acts = {p["W_V"] or "": moved, absorber: f"{_short(absorber)} - {shift} {p['W_O']}"}
    group = _custom("value_bias_fold", "translation", "kv_head", "head_width", acts)
    yield GroupInfo(
        "value_bias_fold",
        "A4",
        group,
        ", ".join(acts),
        "kv head",
        k,
        L * g,
        "b_V W_O + b_O (attention weights sum to one)",
        "b_V = 0",
        "closed form: the b_V component, moved into b_O",
    )


def value_bias_centering(facts: Facts) -> Iterator[GroupInfo]:
    """A4': where no bias can take the constant ``t M`` that a value-bias shift ``t`` adds to
    the stream (``M``: ``W_O`` with the rows of the query heads of each key/value head summed,
    ``g k x d``), a constant along 1 is still invisible when only LayerNorms read the stream.
    The shifts with ``t M`` along 1 are ``g k - d + 1`` per layer where ``g k >= d`` (none
    below, generically): where ``M`` is square, ``t = s 1 M^-1``. A wider ``M`` (more shifts,
    no closed form here) is refused as underived rather than miscounted."""
    p = _attention_params(facts)
    if _output_absorber(facts, p) is not None or p["W_O"] is None:
        return
    found = _written_stream(facts)
    if found is None or not facts.layernorm_only(found[1]):
        return
    sizes = facts.graph.sizes
    if sizes.kv_heads * sizes.head_width < sizes.width:
        return
    if sizes.kv_heads * sizes.head_width > sizes.width:
        raise DerivationError(
            "value_bias_centering: the value width kv_heads * head_width exceeds the width; the "
            "value-bias shifts that reach the stream along 1 are not derived there"
        )
    M = p["W_O"]
    if sizes.heads != sizes.kv_heads:  # the query heads of one key/value head, summed
        M = f"kron(eye(kv_heads), kron(ones(heads / kv_heads), eye(head_width))) {M}"
    shift = f"t ones(width) ({M})^-1"
    if p["b_V"]:
        acts = {p["b_V"]: f"b_V + {shift}"}
    else:
        moved = _norm_bias_shift(facts, p["W_V"], shift)
        if moved is None:
            return
        acts = {p["W_V"] or "": moved}
    group = _custom("value_bias_centering", "translation", "layer", "1", acts)
    yield GroupInfo(
        "value_bias_centering",
        "A4'",
        group,
        ", ".join(acts),
        "layer",
        sympy.Integer(1),
        L,
        "the stream's constant b_V M, less its mean (LayerNorms remove the mean)",
        "b_V M sums to 0",
        "closed form: the shift along 1 M^-1 that centers b_V M",
    )


def head_permutation(facts: Facts) -> Iterator[GroupInfo]:
    """Key/value heads permute together with the query heads they serve (A5, discrete).

    Heads are summed into the stream, so relabelling them changes nothing; mixing them linearly
    does not survive the per-head softmax (a seed's false claim: ``HEAD_MIXING`` in
    tests/custom_catalogue.py, which verify rejects). Relabelling needs every head to treat
    positions alike: a scores op with a per-head position term (ALiBi's slopes, one per
    head) tells the heads apart, and no relabelling survives it."""
    if not all(_same_for_every_head(op) for op in facts.graph.ops if op.kind == "scores"):
        return
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


def _same_for_every_head(op: OpNode) -> bool:
    """Whether the scores op treats every head alike: each per-head attribute (a tuple, one
    value per head, such as ALiBi's slopes) holds one value only."""
    return all(not isinstance(value, tuple) or len(set(value)) <= 1 for _, value in op.attrs)


WORKED = (
    Worked(qk_gauge, "gpt2-small", "L*g*k**2", 589_824),
    # RoPE on every dim (r = k): each of the k/2 pairs keeps a complex scalar, 2 dims a pair
    Worked(qk_gauge, "llama-2-7b", "L*g*(r + (k - r)**2)", 131_072),
    Worked(key_bias_shift, "gpt2-small", "L*g*k", 9_216),
    # partial rotary (r = k/4): only the fixed dims shift
    Worked(key_bias_shift, "pythia-160m", "L*g*(k - r)", 6_912),
    Worked(vo_gauge, "llama-2-7b", "L*g*k**2", 16_777_216),
    Worked(value_bias_fold, "gpt2-small", "L*g*k", 9_216),
    # one shift per layer: b_V, no b_O, g k = d, a LayerNorm-only stream
    Worked(value_bias_centering, "stablelm-2-1_6b", "L", 24),
    Worked(head_permutation, "gpt2-small", "0", 0),
)
