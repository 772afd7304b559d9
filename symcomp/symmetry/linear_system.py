"""Derive the redundant-parameter count of a graph from one linear system (``docs/derivation.md``).

Unknowns: for every activation value ``v`` an affine move ``x -> x + eps (x xi_v + tau_v)`` (per
head for head-split values), for every parameter its move ``dtheta``, and for every writer of a
value with a tolerated subspace ``T(v)`` (B4/B7) free coefficients along ``T(v)``.

Each op contributes one rule, looked up by kind in :data:`RULES`. The default rule is the
linearized equivariance of the op's interpreter kernel, imposed on the values the model produces
at a generic point (so each equation holds on the values' affine hulls, not on all of R^n):
``J_op (dx(x), dtheta) = dy(y)`` for every recorded sample. Ops whose outputs are only partly
observed override it (scores: per-query constants are ignored by the softmax; log-softmax: the
output is the model's output and must not move). The null space of the stacked system, mapped to
the ``dtheta`` coordinates, is the symmetry algebra the rules see: ``redundant = rank D``.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from symcomp.ir.graph import Graph, OpNode
from symcomp.ir.interpreter import KERNELS, evaluate
from symcomp.verify.nullity import report_from_singular_values, sample_inputs


@dataclass(frozen=True)
class DerivationResult:
    """What the linear system says about one graph at one generic point."""

    redundant: int
    """rank D: the dimension of the parameter moves the symmetry algebra produces."""
    unknowns: int
    null_dim: int
    """dimension of the null space of the stacked system (kernel of D included)."""
    system_gap: float
    """ratio of singular values around the cut of the stacked system."""
    d_gap: float
    """ratio of singular values around the cut of D."""
    per_param: dict[str, int] = field(default_factory=dict)
    """rank of D restricted to each parameter's coordinates (not additive)."""
    per_op_kind: dict[str, int] = field(default_factory=dict)
    """number of equations (after compression) each op kind contributed."""
    seconds: float = 0.0


# --- unknown layout -----------------------------------------------------------------------------


class Layout:
    """Named blocks of one flat unknown vector."""

    def __init__(self) -> None:
        self.blocks: dict[str, tuple[int, tuple[int, ...]]] = {}
        self.size = 0

    def add(self, name: str, shape: tuple[int, ...]) -> None:
        n = 1
        for s in shape:
            n *= s
        self.blocks[name] = (self.size, shape)
        self.size += n

    def numel(self, name: str) -> int:
        n = 1
        for s in self.blocks[name][1]:
            n *= s
        return n

    def slice(self, name: str) -> slice:
        start = self.blocks[name][0]
        return slice(start, start + self.numel(name))


# --- evaluation at the generic point ------------------------------------------------------------


# --- tolerated subspaces (B4/B7) ----------------------------------------------------------------


def _orth(U: Tensor, tol: float = 1e-9) -> Tensor:
    """Orthonormal rows spanning the rows of U."""
    if U.shape[0] == 0:
        return U
    _, s, vh = torch.linalg.svd(U, full_matrices=False)
    r = int((s > tol * max(1.0, float(s[0]) if s.numel() else 1.0)).sum())
    return vh[:r]


def _intersect(A: Tensor, B: Tensor) -> Tensor:
    """Orthonormal basis (rows) of row(A) ∩ row(B)."""
    if A.shape[0] == 0 or B.shape[0] == 0:
        return A[:0]
    # u = a A = b B  <=>  [a, -b] in left null space of [A; B]
    M = torch.cat([A, B])  # (ra + rb, n)
    _, s, vh = torch.linalg.svd(M.T, full_matrices=True)
    r = int((s > 1e-9 * float(s[0])).sum())
    null = vh[r:]  # (k, ra + rb)
    return _orth(null[:, : A.shape[0]] @ A)


def _preimage(W: Tensor, U: Tensor) -> Tensor:
    """Orthonormal basis of {u : u W in row(U)} (W: (in, out))."""
    n_in = W.shape[0]
    M = torch.cat([W, U]) if U.shape[0] else W
    _, s, vh = torch.linalg.svd(M.T, full_matrices=True)
    r = int((s > 1e-9 * float(s[0])).sum())
    null = vh[r:]
    return _orth(null[:, :n_in])


def tolerances(graph: Graph, env: dict[str, Tensor]) -> dict[str, Tensor]:
    """T(v) for every feature value: a basis (rows) of input-dependent changes readers ignore."""
    readers: dict[str, list[tuple[OpNode, str]]] = {}
    for op in graph.ops:
        for i in op.inputs:
            readers.setdefault(i.node, []).append((op, i.slot))
    T: dict[str, Tensor] = {}
    for v in reversed([op.output for op in graph.ops]):
        width = env[v].shape[-1]
        full = torch.eye(width, dtype=torch.float64)
        basis = full
        uses = readers.get(v, [])
        if not uses or env[v].ndim != 3:
            T[v] = full[:0]
            continue
        for op, slot in uses:
            centring = op.kind == "norm" and op.attr("type") == "layernorm" and slot == "x"
            if op.kind == "log_softmax" or centring:
                passed = torch.ones(1, width, dtype=torch.float64) / width**0.5
            elif op.kind in ("add", "scale") or (op.kind == "expert_weight" and slot == "x"):
                passed = T.get(op.output, full[:0])
            elif op.kind in ("linear", "unembed") and slot == "x":
                W = env[op.input("W").node]
                W = W.T if op.attr("transpose") else W
                passed = _preimage(W, T.get(op.output, full[:0]))
            else:
                passed = full[:0]
            basis = _intersect(basis, passed)
        T[v] = basis
    return T


# --- the system ---------------------------------------------------------------------------------


Rule = Callable[["System", OpNode], None]
RULES: dict[str, Rule] = {}


def rule(*kinds: str) -> Callable[[Rule], Rule]:
    def deco(fn: Rule) -> Rule:
        for k in kinds:
            RULES[k] = fn
        return fn

    return deco


class System:
    """Collects the (compressed) equations of every op over one unknown layout."""

    def __init__(self, graph: Graph, env: dict[str, Tensor], T: dict[str, Tensor]):
        self.graph, self.env, self.T = graph, env, T
        self.layout = Layout()
        self.moving: set[str] = set()
        for p in graph.params:
            self.layout.add(f"p:{p.name}", tuple(env[p.name].shape))
        frozen = {graph.input, graph.output}
        for op in graph.ops:
            if op.kind in ("scores", "softmax", "route", "sinusoid"):  # a fixed table never moves
                frozen.add(op.output)
        for op in graph.ops:
            v = op.output
            if v in frozen:
                continue
            self.moving.add(v)
            x = env[v]
            if x.ndim == 4:  # (B, heads, T, k): one xi per head
                n, k = x.shape[1], x.shape[3]
                self.layout.add(f"xi:{v}", (n, k, k))
                self.layout.add(f"tau:{v}", (n, k))
            else:
                w = x.shape[-1]
                self.layout.add(f"xi:{v}", (w, w))
                self.layout.add(f"tau:{v}", (w,))
        # tolerance coefficients for writers of values with T(v) != 0
        self.tol_ops: dict[str, Tensor] = {}
        for op in graph.ops:
            U = T.get(op.output)
            if U is None or U.shape[0] == 0 or op.kind not in ("embed", "linear", "unembed"):
                continue
            self.tol_ops[op.name] = U
            W = env[op.input("W").node]
            if op.kind == "embed":
                n_rows = W.shape[0]
            else:
                n_rows = W.shape[1] if op.attr("transpose") else W.shape[0]
            self.layout.add(f"tol:{op.name}:W", (n_rows, U.shape[0]))
            if op.input("b") is not None:
                self.layout.add(f"tol:{op.name}:b", (U.shape[0],))
        self.blocks: list[tuple[list[str], Tensor]] = []
        self.per_kind: Counter[str] = Counter()

    # moves ----------------------------------------------------------------------------------

    def delta_value(self, v: str, z: dict[str, Tensor]) -> Tensor:
        """x xi_v + tau_v at every recorded sample of v (zero for frozen values)."""
        x = self.env[v]
        if v not in self.moving:
            return torch.zeros_like(x) if x.is_floating_point() else None
        xi, tau = z[f"xi:{v}"], z[f"tau:{v}"]
        if x.ndim == 4:
            return torch.einsum("bhtk,hkl->bhtl", x, xi) + tau[None, :, None, :]
        return x @ xi + tau

    def delta_param(self, op: OpNode, slot: str, z: dict[str, Tensor]) -> Tensor:
        name = op.input(slot).node
        d = z[f"p:{name}"]
        if op.name in self.tol_ops and slot in ("W", "b"):
            U = self.tol_ops[op.name]
            if slot == "W":
                excused = z[f"tol:{op.name}:W"] @ U  # (rows, width)
                if op.kind != "embed" and op.attr("transpose"):
                    excused = excused.T
                d = d - excused
            elif f"tol:{op.name}:b" in z:
                d = d - z[f"tol:{op.name}:b"] @ U
        return d

    def names_of(self, op: OpNode) -> list[str]:
        names = []
        for i in op.inputs:
            if i.node in self.graph.param:
                names.append(f"p:{i.node}")
            elif i.node in self.moving:
                names += [f"xi:{i.node}", f"tau:{i.node}"]
        if op.output in self.moving:
            names += [f"xi:{op.output}", f"tau:{op.output}"]
        if op.name in self.tol_ops:
            names += [n for n in self.layout.blocks if n.startswith(f"tol:{op.name}:")]
        return names

    def add_equations(self, op: OpNode, residual: Callable[[dict[str, Tensor]], Tensor]) -> None:
        names = self.names_of(op)
        shapes = [self.layout.blocks[n][1] for n in names]
        sizes = [self.layout.numel(n) for n in names]

        def f(flat: Tensor) -> Tensor:
            parts = torch.split(flat, sizes)
            z = {n: p.reshape(s) for n, p, s in zip(names, parts, shapes, strict=True)}
            return residual(z).reshape(-1)

        zero = torch.zeros(sum(sizes), dtype=torch.float64)
        A = torch.func.jacfwd(f)(zero)  # (rows, local unknowns): the residual is linear
        if A.shape[0] > A.shape[1]:
            A = torch.linalg.qr(A, mode="r")[1]
        A = A[A.abs().amax(dim=1) > 0] if A.numel() else A
        self.blocks.append((names, A))
        self.per_kind[op.kind] += A.shape[0]

    def matrix(self) -> Tensor:
        rows = sum(A.shape[0] for _, A in self.blocks)
        M = torch.zeros(rows, self.layout.size, dtype=torch.float64)
        r = 0
        for names, A in self.blocks:
            c = 0
            for n in names:
                k = self.layout.numel(n)
                M[r : r + A.shape[0], self.layout.slice(n)] = A[:, c : c + k]
                c += k
            r += A.shape[0]
        return M


def _jvp_rule(sys: System, op: OpNode) -> Tensor | None:
    """The default: linearized equivariance of the kernel, as a residual function."""
    kernel = KERNELS[op.kind]
    env = sys.env
    slots = [i.slot for i in op.inputs]
    primals = tuple(env[i.node] for i in op.inputs)
    float_mask = [p.is_floating_point() for p in primals]

    def residual(z: dict[str, Tensor]) -> Tensor:
        tangents = []
        for i, p in zip(op.inputs, primals, strict=True):
            if not p.is_floating_point():
                continue
            if i.node in sys.graph.param:
                tangents.append(sys.delta_param(op, i.slot, z))
            else:
                tangents.append(sys.delta_value(i.node, z))

        def g(*floats: Tensor) -> Tensor:
            it = iter(floats)
            args = {
                s: (next(it) if m else p)
                for s, m, p in zip(slots, float_mask, primals, strict=True)
            }
            return kernel(op, **args)

        floats = tuple(p for p, m in zip(primals, float_mask, strict=True) if m)
        _, out = torch.func.jvp(g, floats, tuple(tangents))
        return out, sys.delta_value(op.output, z)

    return residual


@rule(
    "embed",
    "scale",
    "softcap",
    "add",
    "norm",
    "linear",
    "split_heads",
    "merge_heads",
    "rope",
    "weighted_sum",
    "activation",
    "gate",
    "expert_weight",
    "unembed",
)
def _equivariance(sys: System, op: OpNode) -> None:
    res = _jvp_rule(sys, op)

    def residual(z: dict[str, Tensor]) -> Tensor:
        out, want = res(z)
        return out - want

    sys.add_equations(op, residual)


@rule("log_softmax", "route")
def _log_softmax(sys: System, op: OpNode) -> None:
    """The model's output, and a router's weights (which select the experts), must not move."""
    res = _jvp_rule(sys, op)
    sys.add_equations(op, lambda z: res(z)[0])  # the model's output must not move


@rule("softmax")
def _softmax(sys: System, op: OpNode) -> None:
    pass  # its input does not move (the scores rule makes sure), so neither does its output


@rule("sinusoid")
def _constant(sys: System, op: OpNode) -> None:
    pass  # a fixed table: no parameters, no moving input, its output frozen


@rule("scores")
def _scores(sys: System, op: OpNode) -> None:
    """The change of the scores must be a per-query constant over the allowed keys."""
    res = _jvp_rule(sys, op)
    s = sys.env[op.output]
    allowed = torch.isfinite(s).to(torch.float64)  # (B, h, T, T)
    count = allowed.sum(-1, keepdim=True)

    def residual(z: dict[str, Tensor]) -> Tensor:
        out, _ = res(z)
        out = torch.where(allowed > 0, out, torch.zeros_like(out))
        mean = out.sum(-1, keepdim=True) / count
        return (out - mean) * allowed

    sys.add_equations(op, residual)


# --- the count ----------------------------------------------------------------------------------


def _null_space(M: Tensor) -> tuple[Tensor, float]:
    """Null space basis (columns) of M, cut at the largest gap, and that gap."""
    n = M.shape[1]
    if M.shape[0] > n:
        M = torch.linalg.qr(M, mode="r")[1]
    _, s, vh = torch.linalg.svd(M, full_matrices=True)
    if s.numel() < n:
        s = torch.cat([s, s.new_zeros(n - s.numel())])
    rep = report_from_singular_values(s, M.shape[0])
    return vh[rep.rank :].T, rep.gap


def _rank(D: Tensor) -> tuple[int, float]:
    if D.numel() == 0:
        return 0, float("inf")
    s = torch.linalg.svdvals(D)
    rep = report_from_singular_values(s, max(D.shape))
    if float(s[0]) < 1e-10:
        return 0, float("inf")
    return rep.rank, rep.gap


def derivation_inputs(graph: Graph, generator: torch.Generator) -> Tensor:
    """Enough random sequences for the values' hulls: every token seen about ten times, so that
    no embedding row looks unread (an unread row is a free direction of the sample only)."""
    vocab, seq_len = graph.arch.vocab_size, graph.arch.max_positions
    n_seq = max(32, math.ceil(10 * vocab / seq_len))
    return sample_inputs(vocab, seq_len, n_seq, generator)


def derive_count(graph: Graph, params: Mapping[str, Tensor], input_ids: Tensor) -> DerivationResult:
    """rank D of the linear system of ``docs/derivation.md`` at the point ``params``, with the
    values' hulls measured on ``input_ids`` (B, T)."""
    t0 = time.perf_counter()
    env = evaluate(graph, params, input_ids)
    T = tolerances(graph, env)
    sys = System(graph, env, T)
    for op in graph.ops:
        RULES[op.kind](sys, op)
    M = sys.matrix()
    S, gap = _null_space(M)
    theta = torch.cat(
        [torch.arange(sys.layout.size)[sys.layout.slice(f"p:{p.name}")] for p in graph.params]
    )
    D = S[theta]
    redundant, d_gap = _rank(D)
    per_param = {}
    for p in graph.params:
        per_param[p.name] = _rank(S[sys.layout.slice(f"p:{p.name}")])[0]
    return DerivationResult(
        redundant=redundant,
        unknowns=sys.layout.size,
        null_dim=S.shape[1],
        system_gap=gap,
        d_gap=d_gap,
        per_param=per_param,
        per_op_kind=dict(sys.per_kind),
        seconds=time.perf_counter() - t0,
    )
