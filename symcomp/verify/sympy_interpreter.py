"""The SymPy interpreter of the graph IR: each op's kernel on exact matrices (T x F values, or a
list of per-head T x k matrices), with fresh symbols standing for what later ops may treat
abstractly. :mod:`symcomp.verify.symbolic` runs it before and after a group's action."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

import sympy

from symcomp.errors import VerificationError
from symcomp.ir.graph import Graph, OpNode
from symcomp.symmetry.rational import rational_canon

_NEG_INF = sympy.S.NegativeInfinity
_PREC = 40  # digits of the numerical checks


class SymbolicError(VerificationError):
    """A group or model this verifier cannot handle (an unknown name, a bad shape, ...)."""


def _exact(x: float) -> sympy.Expr:
    """A float attribute as an exact number (0.1 -> 1/10)."""
    if float(x).is_integer():
        return sympy.Integer(int(x))
    return sympy.Rational(repr(float(x)))


# --- values: T x F matrices, or a list of per-head T x k matrices --------------------------------

Value = Any  # sympy.Matrix | list[sympy.Matrix] | tuple[int, ...] (token ids)


def _entries(v: Value) -> list[Any]:
    if isinstance(v, list):
        return [e for m in v for e in m]
    if isinstance(v, sympy.MatrixBase):
        return list(v)
    return []


def _map(v: Value, fn: Callable[[Any], Any]) -> Value:
    if isinstance(v, list):
        return [m.applyfunc(fn) for m in v]
    return v.applyfunc(fn)


class _Ctx:
    """The symbol factory and canonical forms of one run: symbolic, or numerical (every fresh
    symbol drawn as a random number, every canonical form the identity)."""

    def __init__(self, numeric: Mapping[sympy.Symbol, Any] | None, rng: random.Random):
        self.numeric = numeric
        self.rng = rng
        self.atoms: dict[tuple[str, Any], sympy.Symbol] = {}

    def fn(self, name: str, arg: Any) -> Any:
        """``name(arg)``; symbolically an atom: one fresh symbol per canonical argument, so that
        equal arguments give the same symbol and every expression stays rational in its atoms
        (sound: an identity in independent atoms holds for their actual values)."""
        f = _FUNCTIONS[name]
        if self.numeric is not None:
            return f(sympy.N(arg, _PREC))
        arg = self.canon(arg)
        value = f(arg)
        if value.is_number:
            return value
        key = (name, arg)
        if key not in self.atoms:
            positive = name in ("sqrt", "exp", "Abs")
            self.atoms[key] = self.fresh(f"{name}#{len(self.atoms)}", positive=positive)
        return self.atoms[key]

    def fresh(self, name: str, positive: bool = False) -> Any:
        if self.numeric is not None:
            return sympy.Float(
                self.rng.uniform(0.3, 1.7) * (1 if positive else self._sign()), _PREC
            )
        return sympy.Symbol(name, positive=True) if positive else sympy.Symbol(name, real=True)

    def _sign(self) -> int:
        return 1 if self.rng.random() < 0.5 else -1

    def canon(self, e: Any) -> Any:
        """The canonical form of a function's argument (so that equal arguments are identical)."""
        if self.numeric is not None:
            return sympy.N(e, _PREC)
        return rational_canon(e)


_FUNCTIONS: dict[str, Callable[[Any], Any]] = {
    "sqrt": sympy.sqrt,
    "exp": sympy.exp,
    "log": sympy.log,
    "erf": sympy.erf,
    "tanh": sympy.tanh,
    "Abs": sympy.Abs,
}


# --- 2. the SymPy interpreter ------------------------------------------------------------------

Kernel = Callable[..., Value]
SYMBOLIC_KERNELS: dict[str, Kernel] = {}


def register(kind: str) -> Callable[[Kernel], Kernel]:
    def deco(fn: Kernel) -> Kernel:
        SYMBOLIC_KERNELS[kind] = fn
        return fn

    return deco


@register("embed")
def _embed(op: OpNode, ctx: _Ctx, x: tuple[int, ...], W: sympy.Matrix) -> sympy.Matrix:
    index = op.attr("index")
    if index == "token":
        rows = list(x)
    elif index == "position" and op.attr("padding") is not None:
        real = [int(i != op.attr("padding")) for i in x]
        rows = [op.attr("offset") - 1 + sum(real[: t + 1]) * real[t] for t in range(len(x))]
    elif index == "position":
        rows = [op.attr("offset") + t for t in range(len(x))]
    else:
        rows = [0] * len(x)
    return sympy.Matrix.vstack(*[W.row(r) for r in rows])


@register("sinusoid")
def _sinusoid(op: OpNode, ctx: _Ctx, x: tuple[int, ...]) -> sympy.Matrix:
    from symcomp.ir.interpreter import sinusoid_table

    table = sinusoid_table(len(x), op.attr("width"), op.attr("base"), op.attr("offset"))
    return sympy.Matrix([[sympy.Float(float(v), 30) for v in row] for row in table.tolist()])


@register("scale")
def _scale(op: OpNode, ctx: _Ctx, x: sympy.Matrix) -> sympy.Matrix:
    return x * ctx.scale_factor(op)  # type: ignore[attr-defined]


@register("add")
def _add(op: OpNode, ctx: _Ctx, x: sympy.Matrix, y: sympy.Matrix) -> sympy.Matrix:
    return x + y


def _normalized(op: OpNode, ctx: _Ctx, x: sympy.Matrix) -> sympy.Matrix:
    """(x - mean) / sqrt(var + eps) (layernorm) or x / sqrt(mean(x^2) + eps), row by row."""
    eps = _exact(op.attr("eps"))
    rows = []
    for t in range(x.rows):
        r = x.row(t)
        if op.attr("type") == "layernorm":
            mean = sum(r) / r.cols
            r = r.applyfunc(lambda e, m=mean: e - m)
        ms = sum(e**2 for e in r) / r.cols + eps
        rows.append(r / ctx.fn("sqrt", ms))
    return sympy.Matrix.vstack(*rows)


def _norm_out(op: OpNode, z: sympy.Matrix, gain: sympy.Matrix, bias: sympy.Matrix | None):
    if op.attr("gain_form") == "one_plus_w":
        gain = gain.applyfunc(lambda e: 1 + e)
    out = sympy.Matrix(z.rows, z.cols, lambda t, i: z[t, i] * gain[0, i])
    if bias is not None:
        out = out + sympy.Matrix.vstack(*[bias] * z.rows)
    return out


@register("norm")
def _norm(op: OpNode, ctx: _Ctx, x: Value, gain: sympy.Matrix, bias: sympy.Matrix | None = None):
    if isinstance(x, list):  # a query or key norm per head
        return [_norm_out(op, _normalized(op, ctx, m), gain, bias) for m in x]
    return _norm_out(op, _normalized(op, ctx, x), gain, bias)


def _capped(ctx: _Ctx, e: Any, cap: float) -> Any:
    if e is _NEG_INF:
        return e
    c = _exact(cap)
    return c * ctx.fn("tanh", e / c)


@register("softcap")
def _softcap(op: OpNode, ctx: _Ctx, x: sympy.Matrix) -> sympy.Matrix:
    return x.applyfunc(lambda e: _capped(ctx, e, op.attr("cap")))


def _rows(b: sympy.Matrix, T: int) -> sympy.Matrix:
    return sympy.Matrix.vstack(*[b] * T)


@register("linear")
def _linear(
    op: OpNode, ctx: _Ctx, x: sympy.Matrix, W: sympy.Matrix, b: sympy.Matrix | None = None
) -> sympy.Matrix:
    y = x * (W.T if op.attr("transpose") else W)
    return y if b is None else y + _rows(b, x.rows)


@register("split_heads")
def _split_heads(op: OpNode, ctx: _Ctx, x: sympy.Matrix) -> list[sympy.Matrix]:
    k = op.attr("head_width")
    return [x[:, j * k : (j + 1) * k] for j in range(op.attr("heads"))]


@register("merge_heads")
def _merge_heads(op: OpNode, ctx: _Ctx, x: list[sympy.Matrix]) -> sympy.Matrix:
    return sympy.Matrix.hstack(*x)


def _rope_pairs(layout: str, r: int) -> list[tuple[int, int]]:
    if layout == "split_half":
        return [(i, i + r // 2) for i in range(r // 2)]
    return [(2 * i, 2 * i + 1) for i in range(r // 2)]


@register("rope")
def _rope(op: OpNode, ctx: _Ctx, x: list[sympy.Matrix]) -> list[sympy.Matrix]:
    r = op.attr("rotary_width")
    base, div = _exact(op.attr("base")), _exact(op.attr("position_divisor"))
    out = []
    for m in x:
        m = sympy.Matrix(m)
        for t in range(m.rows):
            for i, (a, b) in enumerate(_rope_pairs(op.attr("pair_layout"), r)):
                angle = sympy.Integer(t) / div * base ** sympy.Rational(-2 * i, r)
                c, s = sympy.cos(angle), sympy.sin(angle)
                if ctx.numeric is not None:
                    c, s = sympy.N(c, _PREC), sympy.N(s, _PREC)
                xa, xb = m[t, a], m[t, b]
                m[t, a], m[t, b] = xa * c - xb * s, xb * c + xa * s
        out.append(m)
    return out


def _allowed(op: OpNode, i: int, j: int) -> bool:
    window = op.attr("window")
    if op.attr("causal") and j > i:
        return False
    return not (window is not None and j <= i - window)


@register("scores")
def _scores(op: OpNode, ctx: _Ctx, q: list[sympy.Matrix], k: list[sympy.Matrix]):
    group, slopes = op.attr("group"), op.attr("alibi_slopes")
    scale = 1 / sympy.sqrt(q[0].cols)
    if abs(float(scale) - op.attr("scale")) > 1e-12:
        scale = _exact(op.attr("scale"))
    out = []
    for h, qh in enumerate(q):
        s = sympy.Matrix(qh * k[h // group].T * scale)
        if op.attr("softcap") is not None:
            s = s.applyfunc(lambda e: _capped(ctx, e, op.attr("softcap")))
        T = s.rows
        for i in range(T):
            for j in range(T):
                if slopes is not None:
                    s[i, j] += _exact(slopes[h]) * (j - i)
                if not _allowed(op, i, j):
                    s[i, j] = _NEG_INF
        out.append(s)
    return out


def _softmax_row(ctx: _Ctx, row: list[Any], log: bool) -> list[Any]:
    """Softmax (or log-softmax) of one row relative to its first finite entry: a constant
    shift of the row leaves every exponent unchanged."""
    ref = next(e for e in row if e is not _NEG_INF)
    shifted = [None if e is _NEG_INF else ctx.canon(e - ref) for e in row]
    exps = [None if d is None else ctx.fn("exp", d) for d in shifted]
    total = sum(e for e in exps if e is not None)
    if log:
        return [d - ctx.fn("log", total) for d in shifted]  # no -inf in logits
    return [sympy.Integer(0) if e is None else e / total for e in exps]


@register("softmax")
def _softmax(op: OpNode, ctx: _Ctx, x: list[sympy.Matrix]) -> list[sympy.Matrix]:
    out = []
    for m in x:
        rows = [_softmax_row(ctx, list(m.row(i)), log=False) for i in range(m.rows)]
        out.append(sympy.Matrix(rows))
    return out


@register("weighted_sum")
def _weighted_sum(op: OpNode, ctx: _Ctx, p: list[sympy.Matrix], v: list[sympy.Matrix]):
    group = op.attr("group")
    return [ph * v[h // group] for h, ph in enumerate(p)]


def _act(fn: str, ctx: _Ctx, x: Any) -> Any:
    if fn == "relu":  # (x + |x|) / 2; a positive factor comes out of |.| once factored
        if ctx.numeric is not None:
            return (x + abs(x)) / 2
        a = sympy.Abs(sympy.factor_terms(sympy.expand(x)))  # positive factors come out
        a = a.replace(lambda e: isinstance(e, sympy.Abs), lambda e: ctx.fn("Abs", e.args[0]))
        return (x + a) / 2
    if fn == "relu2":
        return _act("relu", ctx, x) ** 2
    if fn == "gelu":
        return x * (1 + ctx.fn("erf", x / sympy.sqrt(2))) / 2
    if fn in ("gelu_tanh", "gelu_tanh_bloom"):
        c = sympy.sqrt(2 / sympy.pi) if fn == "gelu_tanh" else sympy.Rational(79788456, 10**8)
        return x * (1 + ctx.fn("tanh", c * (x + sympy.Rational(44715, 1000000) * x**3))) / 2
    if fn == "silu":
        return x / (1 + ctx.fn("exp", -x))
    raise SymbolicError(f"no symbolic activation {fn!r}")


@register("activation")
def _activation(op: OpNode, ctx: _Ctx, x: sympy.Matrix) -> sympy.Matrix:
    return x.applyfunc(lambda e: _act(op.attr("fn"), ctx, e))


@register("gate")
def _gate(op: OpNode, ctx: _Ctx, a: sympy.Matrix, b: sympy.Matrix) -> sympy.Matrix:
    return sympy.Matrix(a.rows, a.cols, lambda t, i: _act(op.attr("fn"), ctx, a[t, i]) * b[t, i])


@register("route")
def _route(op: OpNode, ctx: _Ctx, x: sympy.Matrix, W: sympy.Matrix) -> sympy.Matrix:
    """The routing weights. Numerically: softmax, top k (renormalized), the rest 0. Symbolically
    each token's weights are atoms of the differences of its logits (what softmax and top-k
    read), so that equal differences give equal weights."""
    logits = x * W
    rows = []
    for t in range(logits.rows):
        row = list(logits.row(t))
        diffs = tuple(ctx.canon(v - row[0]) for v in row)
        if ctx.numeric is not None:
            rows.append(_route_numeric(op, [sympy.N(d, _PREC) for d in diffs]))
            continue
        out = []
        for e in range(len(row)):
            key = (f"route{e}", diffs)
            if key not in ctx.atoms:
                ctx.atoms[key] = ctx.fresh(f"route{e}#{len(ctx.atoms)}")
            out.append(ctx.atoms[key])
        rows.append(out)
    return sympy.Matrix(rows)


def _route_numeric(op: OpNode, logits: list[Any]) -> list[Any]:
    top = max(logits)
    probs = [sympy.exp(v - top) for v in logits]
    total = sum(probs)
    probs = [p / total for p in probs]
    chosen = sorted(range(len(probs)), key=lambda e: -probs[e])[: op.attr("top_k")]
    norm = sum(probs[e] for e in chosen) if op.attr("normalize") else 1
    return [probs[e] / norm if e in chosen else sympy.Integer(0) for e in range(len(probs))]


@register("expert_weight")
def _expert_weight(op: OpNode, ctx: _Ctx, x: sympy.Matrix, w: sympy.Matrix) -> sympy.Matrix:
    e = op.attr("expert")
    return sympy.Matrix(x.rows, x.cols, lambda t, i: x[t, i] * w[t, e])


@register("unembed")
def _unembed(op, ctx, x, W, b=None):  # type: ignore[no-untyped-def]
    return _linear(op, ctx, x, W, b)


@register("log_softmax")
def _log_softmax(op: OpNode, ctx: _Ctx, x: sympy.Matrix) -> sympy.Matrix:
    return sympy.Matrix([_softmax_row(ctx, list(x.row(t)), log=True) for t in range(x.rows)])


# --- abstract values: fresh symbols with the structure later ops rely on ------------------------


def _fresh_matrix(ctx: _Ctx, name: str, rows: int, cols: int) -> sympy.Matrix:
    return sympy.Matrix(rows, cols, lambda t, i: ctx.fresh(f"{name}[{t},{i}]"))


def _fresh_z(op: OpNode, ctx: _Ctx, name: str, T: int, d: int) -> sympy.Matrix:
    """A fresh normalized value: of mean zero per row under LayerNorm."""
    z = _fresh_matrix(ctx, f"{name}.z", T, d)
    if op.attr("type") == "layernorm":
        for t in range(T):
            z[t, d - 1] = -sum(z[t, i] for i in range(d - 1))
    return z


def _abstract(op: OpNode, ctx: _Ctx, graph: Graph, ins: Mapping[str, Value], T: int) -> Value:
    """Fresh symbols standing for the (unchanged) output of ``op``."""
    name, axes = op.output, graph.value[op.output].axes
    if op.kind == "norm" and len(axes) == 4:  # a query or key norm per head
        zs = [_fresh_z(op, ctx, f"{name}[{h}]", T, axes[-1].size) for h in range(axes[1].size)]
        return [_norm_out(op, z, ins["gain"], ins.get("bias")) for z in zs]
    if op.kind == "norm":
        z = _fresh_z(op, ctx, name, T, axes[-1].size)
        return _norm_out(op, z, ins["gain"], ins.get("bias"))
    if len(axes) == 3:
        return _fresh_matrix(ctx, name, T, axes[-1].size)
    n, cols = axes[1].size, axes[-1].size or T
    out = [_fresh_matrix(ctx, f"{name}[{h}]", T, cols) for h in range(n)]
    if op.kind in ("scores", "softmax"):
        for m in out:
            for i in range(T):
                allowed = [j for j in range(T) if _allowed(_scores_op(graph, op), i, j)]
                for j in range(T):
                    if j not in allowed:
                        m[i, j] = _NEG_INF if op.kind == "scores" else sympy.Integer(0)
                if op.kind == "softmax":  # a row of probabilities sums to one
                    last = allowed[-1]
                    m[i, last] = 1 - sum(m[i, j] for j in allowed[:-1])
    return out


def _scores_op(graph: Graph, op: OpNode) -> OpNode:
    if op.kind == "scores":
        return op
    producer = {o.output: o for o in graph.ops}
    return producer[op.inputs[0].node]
