"""The printed count is a measurement: a closed form checked against the Jacobian nullity of the
model's own interpreter on a generic tiny instance of the same structure.

The closed form comes from the derived groups and their overlap. The groups are read off the
graph, and so is the graph's linear system, so neither can witness the other: only the model
itself can. :func:`witness` evaluates the printed formula at the sizes of a tiny instance,
measures the nullity of the Jacobian of the instance's log-probabilities at a generic point (the
sample grows until the nullity is stable and the spectral gap trustworthy), and compares:

* ``exact``: the named groups lie in the null space and their count is the nullity;
* ``partial``: a spec that lists its groups names some of the null directions (declared X of
  measured Y); that is fine;
* ``undercount``: ``symmetries: auto`` misses null directions;
* ``overcount``: the formula claims more directions than the model has;
* ``contradicted``: a named group moves the log-probabilities (its directions are not null);
* ``untrusted``: no sample gave a stable nullity with a trustworthy gap.

Only the first two are a count symcomp may print with exit 0. The null directions outside the
named groups' span are reported by the parameters they move (``analyze --discover`` lists them
even when the count is right: they are the symmetries nobody declared).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import pairwise

import sympy
import torch
from torch import Tensor

from symcomp.ir.graph import Graph, build_graph
from symcomp.ir.interpreter import interpret
from symcomp.spec.model import Architecture, RotaryPositions
from symcomp.spec.params import parameter_shapes, sizes_of
from symcomp.symmetry.analysis import (
    head_grouping,
    parallel_vocab,
    tiny_vocab,
    value_width_relation,
    vertical_columns,
)
from symcomp.symmetry.catalogue import SIZE_SYMBOLS, Symmetries
from symcomp.verify.generic import generic_point
from symcomp.verify.nullity import (
    NullityMeasurement,
    covering_inputs,
    measure_growing,
    null_space,
    one_thread,
    sequences_needed,
)

FACTORS = (3.0, 6.0)
"""Sample sizes tried in turn (rows per parameter, see :func:`.nullity.sequences_needed`)."""

CONTEXTS = 1.2
"""Positions per ``d`` parameters before the unembedding, at least, in the first sample."""

VERDICTS_OK = ("exact", "partial")

HIDDEN = 10
"""The MLP width of the second instance (the first's is 12)."""


@dataclass(frozen=True)
class Witness:
    """The closed form at one tiny instance against that instance's Jacobian nullity."""

    instance: tuple[tuple[str, int], ...]
    """The instance's sizes, by size symbol."""
    parameters: int
    derived: int
    """The printed formula at the instance's sizes."""
    measured: int
    """The Jacobian nullity there."""
    gap: float
    trustworthy: bool
    auto: bool
    outside: int
    """How many null directions lie outside the span of the named groups that hold (found only
    when the counts differ or ``discover`` asks; 0 otherwise)."""
    uncovered: tuple[tuple[str, int], ...]
    """Those directions by the parameters they move: (parameter, rank of the directions there)."""
    not_null: tuple[str, ...]
    """Named groups with directions that change the log-probabilities."""
    pattern: bool = False
    """The instance holds one layer of each kind, or fewer experts than the spec, and
    ``derived`` is the derivation's formula at that depth and expert count (a count of listed
    layers holds at the spec's depth only; the per-expert terms name the expert count)."""

    @property
    def verdict(self) -> str:
        if not self.trustworthy:
            return "untrusted"
        if self.not_null:
            return "contradicted"
        if self.derived > self.measured:
            return "overcount"
        if self.derived < self.measured:
            return "undercount" if self.auto else "partial"
        return "exact"

    @property
    def ok(self) -> bool:
        return self.verdict in VERDICTS_OK

    @property
    def sizes(self) -> str:
        return ", ".join(f"{name}={value}" for name, value in self.instance)

    def lines(self) -> list[str]:
        """What the CLI prints: the verdict, and on failure both numbers, the dimension left
        unexplained and the parameters its directions move."""
        where = f"at {self.sizes} ({self.parameters:,} parameters)"
        measured = f"Jacobian nullity {self.measured} (spectral gap {self.gap:.1e})"
        verdict = self.verdict
        if verdict == "exact":
            formula = (
                "the derivation's formula for this instance"
                if self.pattern
                else ("the formula there")
            )
            return [f"measured: {measured} {where} = {formula}: exact"]
        if verdict == "partial":
            return [
                f"measured: declared {self.derived} of measured {self.measured} {where}; "
                f"{self.measured - self.derived} null directions are not in the listed groups"
            ]
        out = [f"COUNT NOT CONFIRMED ({verdict}) {where}: formula {self.derived}, {measured}"]
        if verdict == "untrusted":
            out.append("  no sample gave a stable nullity with a trustworthy spectral gap")
        if verdict == "overcount":
            out.append(f"  the formula claims {self.derived - self.measured} directions too many")
        if verdict in ("undercount", "overcount") and not self.outside and not self.not_null:
            out.append(
                f"  the named groups span all {self.measured} null directions: the formula's "
                "terms or its overlap miscount them"
            )
        if verdict == "undercount":
            out.append(f"  unexplained: {self.measured - self.derived} null directions")
        if self.not_null:
            out.append(f"  groups that change the log-probabilities: {', '.join(self.not_null)}")
            out.append(f"  {self.outside} null directions lie outside the groups that hold")
        out += uncovered_lines(self.uncovered)
        return out


def uncovered_lines(uncovered: tuple[tuple[str, int], ...]) -> list[str]:
    return [f"  null directions outside the named groups move {n}: {k}" for n, k in uncovered]


# --- the instances ---------------------------------------------------------------------------


def instance_sizes(arch: Architecture) -> tuple[tuple[str, int], ...]:
    sizes = sizes_of(arch).as_dict()
    return tuple((str(SIZE_SYMBOLS[name]), int(sizes[name])) for name in SIZE_SYMBOLS)


def second_instance(arch: Architecture, layers: int = 2) -> Architecture:
    """A second tiny instance, differing from :func:`.analysis.measurement_instance` in every
    size the structure leaves free: V, T, d, L, f, the head width and the head counts (one
    key/value head stays one; ``g k`` keeps its relation to ``d``); ``layers`` deep (one more
    than the first instance's unless a layer pattern sets both).

    It is small, so that its Jacobian is quick to measure (the QR and SVDs grow as the cube of
    the parameter count: at d = 18 a tiny Llama's second instance took 4 minutes): three heads
    of width 2 (below the first's 4), an MLP 10 wide (the first's is 12), and a width of 7 where
    ``d`` is free. A partial rotation rotates 2 of 3 dims (the only even width below 3), the
    first instance's rotated width: a term in ``r`` alone is witnessed by the first instance
    only. Each of these sizes was checked to be generic on the example specs (their formulas
    hold exactly at it; GPT-2 small's instance has 812 parameters, where d = 9 with heads of 3
    gave 1,630 and took three times as long). Like the first, it has norm eps 0.1 and a RoPE
    base of 10: at BERT's eps of 1e-12 a LayerNorm is scale invariant to 1e-12, near-symmetries
    the measurement cannot tell from exact ones (5 spurious null directions at this instance)."""
    att = arch.attention
    heads, kv = head_grouping(arch, 3)
    positions = arch.positions
    head_width = 2
    if isinstance(positions, RotaryPositions):
        full = positions.rotated_fraction == 1.0
        if not full:  # 2 rotated dims and 1 passing through
            head_width = 3
        fraction = 1.0 if full else 2 / 3
        positions = positions.model_copy(update={"base": 10.0, "rotated_fraction": fraction})
    window = att.sliding_window and min(att.sliding_window, 4)
    width = value_width_relation(arch, kv * head_width, 7)
    return arch.model_copy(
        update={
            "vocab_size": parallel_vocab(arch, tiny_vocab(width) + 1, width=width, hidden=HIDDEN),
            "max_positions": 7,
            "width": width,
            "layers": layers,
            "norm": arch.norm.model_copy(update={"eps": 0.1}),
            "positions": positions,
            "attention": att.model_copy(
                update={
                    "heads": heads,
                    "kv_heads": kv,
                    "head_width": head_width,
                    "sliding_window": window,
                }
            ),
            "mlp": arch.mlp.model_copy(update={"hidden": HIDDEN}),
        }
    )


# --- the measurement -------------------------------------------------------------------------


def measure(
    graph: Graph, params: Mapping[str, Tensor], seed: int
) -> tuple[NullityMeasurement, Tensor]:
    """The Jacobian nullity of ``graph``'s interpreter at ``params``, the sample grown through
    :data:`FACTORS` until the nullity is stable and its gap trustworthy (each factor twice the
    one before: a round's first sample is the whole sample of the round before, reused). The
    first sample also holds at least :data:`CONTEXTS` positions per ``d`` parameters before
    the unembedding: with fewer, Pythia's instances had null directions of the sample's own
    (303 for 246 at the first, 449 for 395 at the second) and took a second round."""
    arch = graph.arch
    assert all(b == 2 * a for a, b in pairwise(FACTORS)), FACTORS
    # rows per sequence grow with V, the contexts do not: credit at most V = 40
    total = sum(p.numel() for p in params.values())
    n_seq = sequences_needed(total, arch.max_positions, min(arch.vocab_size, 40), FACTORS[0])
    # and every parameter before the unembedding reaches the log-probs through the final
    # stream, d numbers a position: its rows have rank d at most, whatever V
    before = total - arch.vocab_size * arch.width
    n_seq = max(n_seq, math.ceil(CONTEXTS * before / (arch.width * arch.max_positions)))
    with one_thread():
        return measure_growing(
            lambda p, x: interpret(graph, p, x),
            params,
            vocab=arch.vocab_size,
            seq_len=arch.max_positions,
            generator=torch.Generator().manual_seed(seed + 1),
            n_seq=n_seq,
            rounds=len(FACTORS),
            draw=covering_inputs,
        )


def _not_null(
    R: Tensor, measured: NullityMeasurement, V: Tensor, ranges: tuple[tuple[str, int, int], ...]
) -> tuple[str, ...]:
    """The groups with a direction v that the Jacobian does not annihilate: ``|J v| / |v|``
    (``= |R v| / |v|``) above the middle of the spectral gap."""
    cut = (measured.report.last_kept * max(measured.report.first_dropped, 1e-300)) ** 0.5
    norms = torch.linalg.vector_norm(R @ V, dim=0) / torch.linalg.vector_norm(V, dim=0).clamp_min(
        1e-300
    )
    bad = []
    for name, start, stop in ranges:
        if stop > start and float(norms[start:stop].max()) > cut and name not in bad:
            bad.append(name)
    return tuple(bad)


def _rank(A: Tensor, tol: float = 1e-6) -> int:
    return int((torch.linalg.svdvals(A) > tol).sum()) if A.numel() else 0


def _uncovered(
    arch: Architecture, R: Tensor, nullity: int, V: Tensor
) -> tuple[int, tuple[tuple[str, int], ...]]:
    """How many null directions lie outside the span of ``V`` (columns in the null space), and
    for each parameter how many of them cannot avoid moving it: the dimension lost, modulo
    ``V``, when the parameter is held fixed. (An orthogonal complement would smear them over
    every parameter they are mixed with.)"""
    if V.shape[1]:
        U, s, _ = torch.linalg.svd(V, full_matrices=False)
        U = U[:, : int((s > s[0] * 1e-9).sum())]
    else:
        U = V
    if U.shape[1] == nullity:  # null directions (the caller's V) spanning the whole null space
        return 0, ()
    N = null_space(R, nullity)

    def outside(directions: Tensor) -> int:
        return _rank(directions - U @ (U.T @ directions)) if directions.shape[1] else 0

    total = outside(N)
    if total == 0:
        return 0, ()
    needed, touched, start = [], [], 0
    complement = N - U @ (U.T @ N)
    for name, shape in parameter_shapes(arch).items():
        size = int(torch.tensor(shape).prod())
        block = N[start : start + size]
        _, s, Vh = torch.linalg.svd(block, full_matrices=True)
        kernel = Vh[int((s > 1e-6).sum()) :].T  # the null directions that leave it fixed
        if need := total - outside(N @ kernel):
            needed.append((name, need))
        if touch := _rank(complement[start : start + size]):
            touched.append((name, touch))
        start += size
    # directions spread so that no single parameter is indispensable: name what they touch
    return total, tuple(needed or touched)


@one_thread()
def witness(
    formula: sympy.Expr,
    instance: Architecture,
    syms: Symmetries,
    *,
    auto: bool,
    seed: int = 0,
    discover: bool = False,
    pattern: bool = False,
) -> Witness:
    """``formula`` (the printed closed form) against the Jacobian nullity of ``instance``,
    whose graph's groups ``syms`` are the same named groups at the instance's sizes. The null
    directions outside the groups are found (an SVD of the Jacobian's factor) when the counts
    differ, or when ``discover`` asks for them."""
    graph = build_graph(instance)
    sizes = instance_sizes(instance)
    values = sizes_of(instance).as_dict()
    derived = int(formula.subs({sym: values[name] for name, sym in SIZE_SYMBOLS.items()}))
    params = generic_point(graph, seed)
    measured, R = measure(graph, params, seed)
    V, ranges = vertical_columns(graph, syms, params)
    not_null = _not_null(R, measured, V, ranges) if V.shape[1] else ()
    find = discover or not_null or derived != measured.nullity
    if not_null:  # the groups that hold: a false one would "cover" directions it does not have
        keep = [i for name, a, b in ranges if name not in not_null for i in range(a, b)]
        V = V[:, keep]
    outside, uncovered = _uncovered(instance, R, measured.nullity, V) if find else (0, ())
    return Witness(
        instance=sizes,
        parameters=sum(p.numel() for p in params.values()),
        derived=derived,
        measured=measured.nullity,
        gap=measured.report.gap,
        trustworthy=measured.trustworthy,
        auto=auto,
        outside=outside,
        uncovered=uncovered,
        not_null=not_null,
        pattern=pattern,
    )
