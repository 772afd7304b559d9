"""Symbolic verification: SymPy proves on a small instance that a group leaves a model unchanged.

``prove_invariance(spec, group) -> SymbolicProof``. Works for any custom group of the spec
language (catalogue groups are declared the same way); nothing here is specific to a family.

1. **A minimal instance.** :func:`minimal_instance` shrinks the architecture keeping its structure
   (width 2, or 3 under LayerNorm so that 1^perp is 2-d; head width 2, or 3 when only part of it
   is rotated (2 dims rotated, 1 passing through); GQA stays GQA; hidden 2, vocab 3, two
   positions, one layer), and the graph is built from it. The input is the token sequence
   ``[0, 1]``.
2. **A SymPy interpreter** of the IR (:data:`SYMBOLIC_KERNELS`, one function per op kind, like the
   float64 one): activations are explicit ``sympy.Matrix`` values (T x features, or one T x k
   matrix per head), parameters are matrices of symbols (``layers.0.attn.W_Q[0,1]``), constants
   are exact (eps = 1/10, RoPE angles cos(1), scale 1/sqrt(k)).
3. **Symbolic group elements**, one per unit: GL a matrix of symbols; O/SO the Cayley transform
   (I - S)(I + S)^-1 of a skew matrix of symbols (rational, so identities need no trigonometry;
   O adds a second proof through a reflection); scaling and translation rows of symbols
   (positive when declared); permutations one proof per adjacent swap. ``commutes_with: [rope]``
   and ``fixes: [ones]`` are linear conditions on the symbols, solved with ``linsolve`` against
   generic rotations (symbols c_i, s_i per rotated pair, in the graph's pair layout).
4. **The action** follows :mod:`symcomp.spec.groups` (slicing per head, kv head, neuron; each
   unit's actions evaluated on the values before it, units one after another).
5. **The proof** propagates through the graph in topological order. An op whose inputs are all
   unchanged is skipped and its output replaced by fresh symbols, keeping the structure that
   later ops may need: a norm's output is z * gain + bias with z fresh (and of mean zero under
   LayerNorm), probabilities are fresh rows summing to one, masked scores stay -inf. Otherwise the
   op runs on the values before and after the action; if ``after - before`` is zero (a random
   numerical point first, then sparse polynomial arithmetic (:mod:`symcomp.symmetry.rational`),
   then ``cancel``, ``radsimp``, ``trigsimp``, ``simplify``) the value is *settled* and replaced
   by fresh symbols in turn, else it stays changed. Arguments of sqrt, exp and log are put in
   canonical form (:func:`~symcomp.symmetry.rational.rational_canon`), and softmax /
   log-softmax are computed relative to their first entry, so the constant shifts of the
   attention logits and of the logits vanish exactly. The claim holds iff the log-probabilities
   are unchanged.

Replacing unchanged values by fresh symbols is sound (an identity in the fresh symbols holds for
every value they stand for) and keeps every expression local and small. A claim that fails is
first caught by a concrete float64 check of the whole instance (the reference interpreter at a
random point); the propagation then runs numerically to name the value where it fails.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatch
from typing import Any

import sympy
import torch
from symcomp_runtime import actions
from symcomp_runtime.errors import ActionError as RuntimeActionError

from symcomp.errors import VerificationError
from symcomp.ir.graph import Graph, OpNode, build_graph
from symcomp.ir.interpreter import interpret
from symcomp.lang import evaluate_size_int, parse_expr
from symcomp.lang.nodes import Inverse, free_names, walk
from symcomp.lang.sympy_printer import to_sympy
from symcomp.spec.model import (
    DEFAULT_ELEMENT,
    Architecture,
    CustomGroup,
    RotaryPositions,
    Spec,
)
from symcomp.spec.params import sizes_of
from symcomp.symmetry.engine import SYMPY, ActionError, bind, sympy_evaluate
from symcomp.symmetry.rational import rational_zero
from symcomp.verify.sympy_interpreter import (
    _NEG_INF,
    _PREC,
    SYMBOLIC_KERNELS,
    SymbolicError,
    Value,
    _abstract,
    _Ctx,
    _entries,
    _fresh_matrix,
    _fresh_z,
    _norm_out,
    _rope_pairs,
)

__all__ = [
    "SYMBOLIC_KERNELS",
    "SymbolicError",
    "SymbolicProof",
    "minimal_instance",
    "prove_invariance",
]

TOKENS = (0, 1)
_TOL = sympy.Float("1e-20")


class _Budget(VerificationError):
    """The proof ran out of time or its expressions grew too big."""


@dataclass(frozen=True)
class SymbolicProof:
    """The outcome of :func:`prove_invariance`.

    ``settled`` lists the values (in graph order) where the change made by the group vanished,
    e.g. ``L0.attn.scores`` for the query/key gauge; ``failed_at`` is the first value where a
    change that should have been absorbed survives (an op where a changed value meets another
    changed input, and whose output still changes), or the output; ``note`` says why a proof is
    missing when the claim was not refuted (time, size, an identity SymPy could not show).
    """

    group: str
    holds: bool
    settled: tuple[str, ...]
    failed_at: str | None
    seconds: float
    note: str = ""


# --- 1. the minimal instance --------------------------------------------------------------------


def minimal_instance(
    spec: Spec | Architecture, group: CustomGroup | None = None, *, square_values: bool = False
) -> Architecture:
    """The architecture shrunk to the smallest sizes that keep its structure.

    ``square_values``: keep ``kv_heads * head_width == width`` as well, for a group whose action
    inverts the value heads' map into the stream (``value_bias_centering``'s ``W_O^-1``), which
    exists only where that map is square; one key/value head then, as wide as the stream."""
    arch = spec.architecture if isinstance(spec, Spec) else spec
    att = arch.attention
    h, g = att.heads, att.kv_heads
    if square_values:
        heads, kv = (1, 1) if g == h else (2, 1)
    elif g == h:
        heads = kv = min(h, 2)
    elif g == 1:
        heads, kv = 2, 1
    else:
        heads, kv = 4, 2
    k = 2
    positions = arch.positions
    if isinstance(positions, RotaryPositions) and positions.rotated_fraction < 1:
        k = 3  # 2 rotated dims, 1 passing through
        positions = positions.model_copy(update={"rotated_fraction": 2 / 3})
    width = 3 if arch.norm.type == "layernorm" else 2
    if square_values:  # one head as wide as the stream: W_O^-1 of a 3 x 3 matrix, not 8 x 8
        rotary = isinstance(positions, RotaryPositions)
        k = width + width % 2 if rotary and arch.positions.rotated_fraction == 1 else width
        if rotary and arch.positions.rotated_fraction < 1:  # 2 rotated dims, the rest passing
            positions = positions.model_copy(update={"rotated_fraction": 2 / k})
        width = kv * k
    layers = 1
    if group is not None and group.layers is not None and group.layers and 0 not in group.layers:
        layers = min(min(group.layers) + 1, arch.layers)
    embeddings = arch.embeddings.model_copy(
        update={"token_types": min(arch.embeddings.token_types, 2)}
    )
    return arch.model_copy(
        update={
            "width": width,
            "vocab_size": 3,
            "max_positions": 2,
            "layers": layers,
            "attention": att.model_copy(update={"heads": heads, "kv_heads": kv, "head_width": k}),
            "positions": positions,
            "mlp": arch.mlp.model_copy(update={"hidden": 2}),
            "embeddings": embeddings,
        }
    )


# --- exact constants ----------------------------------------------------------------------------


def _exact_size_expr(text: str, arch: Architecture) -> sympy.Expr:
    sizes = {n: sympy.Integer(v) for n, v in sizes_of(arch).as_dict().items()}
    return sympy.sympify(to_sympy(parse_expr(text), sizes))


# --- 3. symbolic group elements --------------------------------------------------------------


def _group_size(group: CustomGroup, arch: Architecture) -> int:
    if isinstance(group.size, int):
        return group.size
    return evaluate_size_int(parse_expr(group.size), sizes_of(arch).as_dict())


def _generic_rope(n: int, arch: Architecture, tag: str) -> sympy.Matrix:
    """A generic position rotation on n = m * k features (x -> x R), with symbols c_i, s_i per
    rotated pair of the graph's layout and the identity on the other dims."""
    pos = arch.positions
    if not isinstance(pos, RotaryPositions):
        raise SymbolicError("commutes_with: rope on a model without rotary positions")
    s = sizes_of(arch)
    k, r = s.head_width, s.rotary_width
    if n % k:
        raise SymbolicError(f"commutes_with: rope needs a size that is a multiple of {k}")
    R = sympy.eye(k)
    for i, (a, b) in enumerate(_rope_pairs(pos.pair_layout, r)):
        c, sn = sympy.symbols(f"c{i}_{tag} s{i}_{tag}", nonzero=True)
        R[a, a], R[b, b], R[a, b], R[b, a] = c, c, sn, -sn
    return sympy.diag(*([R] * (n // k)))


def _solve(template: sympy.Matrix, unknowns: Sequence[sympy.Symbol], eqs: list[Any]):
    eqs = [e for e in (sympy.expand(e) for e in eqs) if e != 0]
    if not eqs:
        return template
    sol = list(sympy.linsolve(eqs, list(unknowns)))
    if not sol:
        raise SymbolicError("the group's restrictions leave no element")
    subs = {u: sympy.cancel(v) for u, v in zip(unknowns, sol[0], strict=True)}
    return template.xreplace(subs)


def _elements(group: CustomGroup, arch: Architecture, tag: str) -> list[sympy.Matrix]:
    """Generic elements of one unit's copy of the group, one per proof (O: both components)."""
    n = _group_size(group, arch)
    e = group.element or DEFAULT_ELEMENT[group.group]
    R = _generic_rope(n, arch, tag) if "rope" in group.commutes_with else None
    ones = sympy.ones(1, n)
    kind = group.group

    def commutes(X: sympy.Matrix) -> bool:
        ok = R is None or (R * X - X * R).expand() == sympy.zeros(n, n)
        return ok and ("ones" not in group.fixes or (ones * X - ones).expand().is_zero_matrix)

    if kind in ("scaling", "translation"):
        syms = sympy.symbols(f"{e}{tag}_0:{n}", positive=True) if group.positive else None
        if syms is None:
            syms = sympy.symbols(f"{e}{tag}_0:{n}", real=True, nonzero=kind == "scaling")
        row = sympy.Matrix([list(syms)])
        if R is None:
            return [row]
        if kind == "translation":  # t R = t
            return [_solve(row, syms, list(row * R - row))]
        D = sympy.diag(*syms)
        return [_solve(row, syms, list(R * D - D * R))]
    if kind == "permutation":
        swaps = []
        for i in range(n - 1):
            P = sympy.eye(n)
            P.row_swap(i, i + 1)
            if commutes(P):
                swaps.append(P)
        return swaps or [sympy.eye(n)]
    if kind == "GL":
        syms = sympy.symbols(f"{e}{tag}_0:{n * n}", real=True)
        A = sympy.Matrix(n, n, list(syms))
        eqs = [] if R is None else list(R * A - A * R)
        if "ones" in group.fixes:
            eqs += list(ones * A - ones)
        return [_solve(A, syms, eqs)]
    # O, SO: the Cayley transform of a skew matrix with the same restrictions
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    syms = sympy.symbols(f"{e}{tag}_0:{max(len(pairs), 1)}", real=True)
    S = sympy.zeros(n, n)
    for x, (i, j) in zip(syms, pairs, strict=False):
        S[i, j], S[j, i] = x, -x
    eqs = [] if R is None else list(R * S - S * R)
    if "ones" in group.fixes:
        eqs += list(ones * S)
    S = _solve(S, syms[: len(pairs)], eqs)
    eye = sympy.eye(n)
    Q = ((eye - S) * (eye + S).inv()).applyfunc(sympy.cancel)
    out = [Q]
    if kind == "O":
        candidates = []
        if n >= 2:
            P = sympy.eye(n)
            P.row_swap(0, 1)
            candidates.append(P)
        candidates.append(sympy.diag(-1, *([1] * (n - 1))))
        reflection = next((P for P in candidates if commutes(P)), None)
        if reflection is not None:
            out.append((reflection * Q).applyfunc(sympy.cancel))
    return out


# --- 4. the action ---------------------------------------------------------------------------


def _units(group: CustomGroup, arch: Architecture) -> list[tuple[int | None, int | None]]:
    """The group's units, as the engine lists them."""
    return actions.units(bind(group, arch, sympy_evaluate), sizes_of(arch).as_dict())


def apply_symbolic(
    group: CustomGroup,
    arch: Architecture,
    params: Mapping[str, sympy.Matrix],
    elements: Sequence[sympy.Matrix],
) -> dict[str, sympy.Matrix]:
    """The parameters moved by one element per unit (in the order of the units): the runtime's
    engine on SymPy matrices, the same units, cuts and layer references as every other use."""
    bound = bind(group, arch, sympy_evaluate)
    S = sizes_of(arch).as_dict()
    state = dict(params)
    try:
        for unit, element in zip(actions.units(bound, S), elements, strict=True):
            state = actions.apply(bound, state, unit, element, S, SYMPY)
    except (RuntimeActionError, ActionError, KeyError) as exc:
        raise SymbolicError(f"{group.name}: {exc}") from None
    return state


# --- 5. the proof --------------------------------------------------------------------------------


def _inverted_params(group: CustomGroup, graph: Graph) -> set[str]:
    """The parameters whose inverse the group's actions take (``(layers.*.attn.W_O)^-1``)."""
    patterns = {
        name
        for text in group.acts.values()
        for node in walk(parse_expr(text))
        if isinstance(node, Inverse)
        for name in free_names(node.operand)
    }
    return {p.name for p in graph.params if any(fnmatch(p.name, pat) for pat in patterns)}


def _lu_symbols(name: str, n: int) -> sympy.Matrix:
    """A generic n x n matrix as L U (L unit lower, U upper triangular): every matrix whose
    leading minors are nonzero, a dense set, so an identity shown for it holds for all. Its
    inverse U^-1 L^-1 has the diagonal of U alone in its denominators, where the inverse of n^2
    free symbols has the n!-term determinant (the proof that inverts a parameter stays small)."""

    def sym(kind: str, i: int, j: int) -> sympy.Symbol:
        return sympy.Symbol(f"{name}.{kind}[{i},{j}]", real=True)

    L = sympy.Matrix(n, n, lambda i, j: sym("L", i, j) if i > j else int(i == j))
    U = sympy.Matrix(n, n, lambda i, j: sym("U", i, j) if i <= j else 0)
    return L * U


def _symbolic_params(graph: Graph, factored: set[str] = frozenset()) -> dict[str, sympy.Matrix]:
    """A fresh symbol per parameter entry; the square parameters in ``factored`` as L U."""
    out = {}
    for p in graph.params:
        if p.name in factored and len(p.shape) == 2 and p.shape[0] == p.shape[1]:
            out[p.name] = _lu_symbols(p.name, p.shape[0])
        elif len(p.shape) == 1:
            out[p.name] = sympy.Matrix(
                1, p.shape[0], lambda _, j, n=p.name: sympy.Symbol(f"{n}[{j}]", real=True)
            )
        else:
            out[p.name] = sympy.Matrix(
                *p.shape, lambda i, j, n=p.name: sympy.Symbol(f"{n}[{i},{j}]", real=True)
            )
    return out


def _random_point(symbols: set[sympy.Symbol], rng: random.Random) -> dict[sympy.Symbol, Any]:
    point = {}
    for s in sorted(symbols, key=str):
        x = rng.uniform(0.5, 1.5)
        if not s.is_positive and rng.random() < 0.5:
            x = -x
        point[s] = sympy.Rational(round(x * 10**6), 10**6)
    return point


class _ZeroTest:
    """Decides whether an expression is identically zero: a numerical point first (which proves
    a nonzero), then its numerator in sparse polynomial arithmetic (exact, and fast where a
    group element's inverse multiplies through), then SymPy's simplifications, ``simplify``
    last."""

    def __init__(self, rng: random.Random, deadline: float, max_ops: int):
        self.rng = rng
        self.deadline = deadline
        self.max_ops = max_ops
        self.unproven: list[str] = []

    def numeric_zero(self, e: Any) -> bool:
        free = e.free_symbols
        point = _random_point(free, self.rng)
        try:
            v = sympy.N(e.xreplace(point), _PREC)
        except (TypeError, ValueError, ZeroDivisionError):  # pragma: no cover - defensive
            return True
        if v.has(sympy.nan, sympy.zoo, sympy.oo):
            return True
        return bool(abs(v) < _TOL)

    def __call__(self, e: Any) -> bool | None:
        if e == 0:
            return True
        if not self.numeric_zero(e):
            return False
        if rational_zero(e):
            return True
        if sympy.count_ops(e) > self.max_ops:
            raise _Budget(f"an expression of more than {self.max_ops} operations")
        steps: list[Callable[[Any], Any]] = [
            lambda x: sympy.expand(sympy.numer(sympy.together(x))),
            lambda x: sympy.cancel(sympy.together(sympy.expand(x))),
            lambda x: sympy.cancel(sympy.radsimp(x)),
            lambda x: sympy.cancel(sympy.powsimp(sympy.expand(x, power_exp=True), force=True)),
            lambda x: sympy.trigsimp(sympy.cancel(x)),
            sympy.simplify,
        ]
        for step in steps:
            if time.monotonic() > self.deadline:
                raise _Budget("out of time")
            e = step(e)
            if e == 0:
                return True
        return None  # numerically zero, not shown exactly


def _compare(before: Value, after: Value, zero: _ZeroTest, numeric: bool) -> bool | None:
    """True: equal; False: different; None: numerically equal but not proven."""
    result: bool | None = True
    for a, b in zip(_entries(before), _entries(after), strict=True):
        if a is _NEG_INF or b is _NEG_INF:
            if a is not b:
                return False
            continue
        if numeric:
            if abs(sympy.N(b - a, _PREC)) > _TOL * (1 + abs(sympy.N(a, _PREC))):
                return False
            continue
        verdict = zero(b - a)
        if verdict is False:
            return False
        if verdict is None:
            result = None
    return result


def _centered_alike(
    op: OpNode,
    before: Mapping[str, Value],
    after: Mapping[str, Value],
    changed: set[str],
    zero: _ZeroTest,
    ctx: _Ctx,
) -> bool:
    """Whether ``op`` is a LayerNorm of a whole-width stream whose input alone moved, and
    moved along 1 only: its centered rows, before and after, are shown equal exactly."""
    if op.kind != "norm" or op.attr("type") != "layernorm" or ctx.numeric is not None:
        return False
    if any(i.node in changed for i in op.inputs if i.slot != "x"):
        return False
    xb, xa = before["x"], after["x"]
    if isinstance(xb, list) or isinstance(xa, list):  # a norm per head
        return False
    for t in range(xb.rows):
        moved = list(xa.row(t) - xb.row(t))  # centered rows equal: the move is its own mean
        mean = sum(moved) / len(moved)
        if any(zero(d - mean) is not True for d in moved):
            return False
    return True


@dataclass
class _Run:
    holds: bool
    settled: list[str]
    failed_at: str | None
    note: str = ""


def _propagate(
    graph: Graph,
    before: Mapping[str, sympy.Matrix],
    after: Mapping[str, sympy.Matrix],
    changed_params: set[str],
    ctx: _Ctx,
    zero: _ZeroTest,
    max_ops: int,
) -> _Run:
    T = len(TOKENS)
    arch = graph.arch
    env_b: dict[str, Value] = dict(before)
    env_a: dict[str, Value] = dict(after)
    env_b[graph.input] = env_a[graph.input] = TOKENS
    changed = set(changed_params)
    settled: list[str] = []
    failed_at: str | None = None
    unproven: list[str] = []
    for op in graph.ops:
        if op.kind == "scale":
            expr = op.attr("expr")
            factor = _exact_size_expr(expr, arch)
            ctx.scale_factor = lambda _op, f=factor: f  # type: ignore[attr-defined]
        ins_b = {i.slot: env_b[i.node] for i in op.inputs}
        moved = [i.node for i in op.inputs if i.node in changed]
        if not moved:
            env_b[op.output] = env_a[op.output] = _abstract(op, ctx, graph, ins_b, T)
            continue
        if time.monotonic() > zero.deadline:
            raise _Budget(f"out of time at {op.output}")
        ins_a = {i.slot: env_a[i.node] for i in op.inputs}
        kernel = SYMBOLIC_KERNELS[op.kind]
        if _centered_alike(op, ins_b, ins_a, changed, zero, ctx):
            # a LayerNorm whose input moved along 1 alone: it removes the mean, so its output
            # did not move (shown on the centered rows, without the variance's large cancel)
            settled.append(op.output)
            env_b[op.output] = env_a[op.output] = _abstract(op, ctx, graph, ins_b, T)
            continue
        if op.kind == "norm" and op.input("x").node not in changed:
            z = _fresh_z(op, ctx, op.output, T, ins_b["x"].cols)  # the input did not move
            out_b = _norm_out(op, z, ins_b["gain"], ins_b.get("bias"))
            out_a = _norm_out(op, z, ins_a["gain"], ins_a.get("bias"))
        else:
            out_b, out_a = kernel(op, ctx, **ins_b), kernel(op, ctx, **ins_a)
        if ctx.numeric is None:
            size = sum(sympy.count_ops(e) for e in _entries(out_a))
            if size > max_ops * len(_entries(out_a)):
                raise _Budget(f"the expressions of {op.output} grew too big ({size} operations)")
        verdict = _compare(out_b, out_a, zero, ctx.numeric is not None)
        if verdict:
            settled.append(op.output)
            params_moved = any(i.node in changed_params for i in op.inputs)
            if op.kind == "norm" and params_moved:  # the structure no longer has one gain
                fresh = _fresh_matrix(ctx, op.output, T, ins_b["x"].cols)
            else:
                fresh = _abstract(op, ctx, graph, ins_b, T)
            env_b[op.output] = env_a[op.output] = fresh
            continue
        if verdict is None:
            unproven.append(op.output)
        env_b[op.output], env_a[op.output] = out_b, out_a
        changed.add(op.output)
        meets = len(moved) >= 2 and any(m not in changed_params for m in moved)
        if failed_at is None and meets:  # a change from upstream met one that should absorb it
            failed_at = op.output
    holds = graph.output not in changed
    if not holds and failed_at is None:
        failed_at = graph.output
    note = ""
    if unproven:
        note = "numerically unchanged but not shown exactly: " + ", ".join(unproven)
    return _Run(holds, settled, None if holds else failed_at, note)


def _concrete_check(
    graph: Graph,
    before: Mapping[str, sympy.Matrix],
    after: Mapping[str, sympy.Matrix],
    point: Mapping[sympy.Symbol, Any],
) -> bool:
    """Whether the float64 reference interpreter gives the same log-probs before and after, on
    every sequence of length 1 and 2 of the instance's vocabulary."""

    def tensors(params: Mapping[str, sympy.Matrix]) -> dict[str, torch.Tensor]:
        out = {}
        for p in graph.params:
            m = params[p.name].xreplace(point)
            rows = [[float(e) for e in m.row(i)] for i in range(m.rows)]
            # float64 from the start: through float32, the moved parameters would be rounded
            # apart from the others by 1e-7, enough to refute a true invariance (it did)
            out[p.name] = torch.tensor(rows, dtype=torch.float64).reshape(p.shape)
        return out

    tb, ta = tensors(before), tensors(after)
    V = graph.sizes.vocab
    for T in (1, 2):
        ids = torch.cartesian_prod(*[torch.arange(V)] * T).reshape(-1, T)
        lb, la = interpret(graph, tb, ids), interpret(graph, ta, ids)
        if not torch.allclose(lb, la, atol=1e-6, rtol=1e-6):
            return False
    return True


def _differs(a: sympy.Matrix, b: sympy.Matrix) -> bool:
    return any(sympy.cancel(x - y) != 0 for x, y in zip(a, b, strict=True))


def prove_invariance(
    spec: Spec | Architecture,
    group: CustomGroup,
    *,
    seed: int = 0,
    max_seconds: float = 60.0,
    max_ops: int = 4000,
    shrink: bool = True,
) -> SymbolicProof:
    """Prove (or refute) that ``group`` leaves the log-probabilities of ``spec`` unchanged, on
    the minimal instance of the architecture (``shrink=False``: on the architecture as given)."""
    arch = spec.architecture if isinstance(spec, Spec) else spec
    if not shrink:
        return _prove_on(arch, group, seed, max_seconds, max_ops)
    try:
        return _prove_on(minimal_instance(arch, group), group, seed, max_seconds, max_ops)
    except sympy.matrices.exceptions.NonSquareMatrixError:
        att = arch.attention
        if att.kv_heads * att.head_width != arch.width:
            raise
        # the action inverts a map that is square at the spec's sizes: keep it square
        square = minimal_instance(arch, group, square_values=True)
        return _prove_on(square, group, seed, max_seconds, max_ops)


def _prove_on(
    arch: Architecture, group: CustomGroup, seed: int, max_seconds: float, max_ops: int
) -> SymbolicProof:
    start = time.monotonic()
    graph = build_graph(arch)
    rng = random.Random(seed)
    params = _symbolic_params(graph, _inverted_params(group, graph))
    units = _units(group, arch)
    per_unit = [_elements(group, arch, f"{i}") for i in range(len(units))]
    variants = max(len(e) for e in per_unit) if per_unit else 1
    settled: list[str] = []
    notes: list[str] = []
    for v in range(variants):
        elements = [e[min(v, len(e) - 1)] for e in per_unit]
        moved = apply_symbolic(group, arch, params, elements)
        for name in moved:
            if name not in params:
                raise SymbolicError(f"{group.name}: unknown parameter {name}")
        changed = {n for n in params if _differs(params[n], moved[n])}
        symbols = {s for m in moved.values() for s in m.free_symbols}
        point = _random_point(symbols | {s for m in params.values() for s in m.free_symbols}, rng)
        deadline = start + max_seconds
        zero = _ZeroTest(rng, deadline, max_ops)
        if not _concrete_check(graph, params, moved, point):
            # refuted: name the failing value with a numerical run of the propagation
            num = {n: m.xreplace(point).evalf(_PREC) for n, m in params.items()}
            num_a = {n: m.xreplace(point).evalf(_PREC) for n, m in moved.items()}
            ctx = _Ctx(point, rng)
            run = _propagate(graph, num, num_a, changed, ctx, zero, max_ops)
            failed = run.failed_at or graph.output
            return SymbolicProof(
                group.name, False, tuple(run.settled), failed, time.monotonic() - start
            )
        try:
            run = _propagate(graph, params, moved, changed, _Ctx(None, rng), zero, max_ops)
        except _Budget as exc:
            return SymbolicProof(
                group.name, False, tuple(settled), None, time.monotonic() - start, str(exc)
            )
        if not run.holds:
            note = run.note or "the change reaches the output though the numbers agree"
            return SymbolicProof(
                group.name, False, tuple(run.settled), run.failed_at, time.monotonic() - start, note
            )
        settled += [s for s in run.settled if s not in settled]
        if run.note:
            notes.append(run.note)
    return SymbolicProof(
        group.name, True, tuple(settled), None, time.monotonic() - start, "; ".join(notes)
    )
