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
- A5 ``head_permutation``: heads relabelled together with their kv groups.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache

import sympy

from symcomp.ir.graph import OpNode
from symcomp.symmetry.catalogue.base import GroupInfo, L, Worked, _custom, _pattern, _short, g, k, r
from symcomp.symmetry.catalogue.facts import Facts, _fresh_writers, _gain


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


def qk_gauge(facts: Facts) -> Iterator[GroupInfo]:
    """A1: ``(x W_Q A)(x W_K A^-T)^T = (x W_Q)(x W_K)^T`` for any ``A`` in GL(k) per kv head, the
    same ``A`` on every query head the kv head serves. Under RoPE the rotation ``R_t`` sits
    between the two factors, so ``A`` must commute with every ``R_t`` (A1')."""
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


def _norm_bias_shift(facts: Facts, W: str | None) -> str | None:
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
    return f"{W.rsplit('.', 1)[1]} + diag({gain})^-1 ones(width)^T t"


def _key_shift(facts: Facts, p: dict[str, str | None]) -> dict[str, str] | None:
    if p["b_K"]:
        return {p["b_K"]: "b_K + t"}
    moved = _norm_bias_shift(facts, p["W_K"])
    return {p["W_K"] or "": moved} if moved else None


def key_bias_shift(facts: Facts) -> Iterator[GroupInfo]:
    """A2: ``q (k + t)^T = q k^T + q t^T`` adds the same number to every logit of one query, and
    softmax ignores it. A rotated dim would turn ``t`` with the key's position: only the ``k - r``
    fixed dims shift. Without ``b_K``, a LayerNorm's bias read through ``W_K`` is the key bias
    (:func:`_norm_bias_shift`)."""
    p = _attention_params(facts)
    acts = _key_shift(facts, p)
    if acts is None:
        return
    rope = _has_rope(facts)
    group = _custom(
        "key_bias_shift",
        "translation",
        "kv_head",
        "head_width",
        acts,
        commutes_with=["rope"] if rope else [],
    )
    yield GroupInfo(
        "key_bias_shift",
        "A2",
        group,
        ", ".join(acts),
        "kv head",
        k - r if rope else k,
        L * g,
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
    out = next(o for o in facts.graph.ops if facts.param(o, "W") == "layers.0.attn.W_O")
    for value in facts.graph.value:
        readers = facts.readers(value)
        if not readers or all(c.kind == "add" for c in readers):
            continue
        writers = list(_fresh_writers(facts, value))
        if out in writers:
            biases = [b for w in writers if w is not out and (b := facts.param(w, "b"))]
            return _pattern(biases[0]) if biases else None
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
    Worked(head_permutation, "gpt2-small", "0", 0),
)
