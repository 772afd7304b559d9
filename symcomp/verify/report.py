"""``verify_graph(spec, graph, syms, derived) -> VerifyReport``: the three checks of
``symcomp verify``, on the graph of a tiny instance of the spec (:func:`symcomp.pipeline.verify`
builds it, derives its groups and counts them).

1. Symbolic: SymPy proves, on a minimal instance, that each group leaves the log-probabilities
   unchanged, and names the values where its change vanishes (:mod:`.symbolic`).
2. Numeric: in float64, random group elements at a generic point change no log-probability by
   more than 1e-10 (:mod:`.invariance`).
3. Jacobian: on a tiny instance of the same structure, the nullity of the Jacobian of the
   log-probabilities equals the derived count; the directions the named groups leave
   unexplained are reported by the parameters they touch.

A group that does not hold is rejected with its measured error, never dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from symcomp.ir.graph import Graph
from symcomp.ir.interpreter import interpret
from symcomp.spec.model import CustomGroup, Spec
from symcomp.spec.params import parameter_shapes
from symcomp.symmetry.action import vertical_vectors
from symcomp.symmetry.catalogue import GroupInfo, Symmetries
from symcomp.verify.generic import generic_point
from symcomp.verify.invariance import TOLERANCE, measure_invariance
from symcomp.verify.nullity import measure_nullity, null_space
from symcomp.verify.symbolic import prove_invariance


@dataclass(frozen=True)
class GroupCheck:
    name: str
    symbolic: str
    """'proven', 'refuted', or 'not proven: <why>'"""
    settled: tuple[str, ...]
    numeric_error: float

    @property
    def holds(self) -> bool:
        return self.numeric_error <= TOLERANCE and self.symbolic != "refuted"


@dataclass(frozen=True)
class VerifyReport:
    name: str
    checks: tuple[GroupCheck, ...]
    nullity: int
    derived: int
    gap: float
    trustworthy: bool
    unexplained: tuple[tuple[str, int], ...]
    """(parameter, number of unexplained null directions touching it)"""
    auto: bool

    @property
    def ok(self) -> bool:
        counts_agree = self.nullity == self.derived if self.auto else self.derived <= self.nullity
        return all(c.holds for c in self.checks) and counts_agree and self.trustworthy


def _check(spec: Spec, graph: Graph, group: CustomGroup, symbolic: bool) -> GroupCheck:
    numeric = measure_invariance(graph, group)
    if not symbolic:
        return GroupCheck(group.name, "skipped", (), numeric.max_error)
    proof = prove_invariance(spec.architecture, group, max_seconds=30.0)
    if proof.holds:
        status = "proven"
    elif proof.failed_at is not None:
        status = "refuted"
    else:
        status = f"not proven: {proof.note}"
    return GroupCheck(group.name, status, proof.settled, numeric.max_error)


def _unexplained(
    graph: Graph,
    groups: Sequence[GroupInfo],
    params: Mapping[str, torch.Tensor],
    R: torch.Tensor,
    nullity: int,
) -> tuple[tuple[str, int], ...]:
    """The Jacobian's null directions outside the named groups' span, by parameter touched."""
    N = null_space(R, nullity)
    columns = [
        vertical_vectors(g, graph.arch, graph, params) for gi in groups for g in gi.all_groups
    ]
    if columns:
        V = torch.cat(columns, dim=1)
        U, s, _ = torch.linalg.svd(V, full_matrices=False)
        U = U[:, : int((s > s[0] * 1e-9).sum())]
        N = N - U @ (U.T @ N)
    U, s, _ = torch.linalg.svd(N, full_matrices=False)
    left = U[:, : int((s > 1e-6).sum())]
    out, start = [], 0
    for name, shape in parameter_shapes(graph.arch).items():
        size = int(torch.tensor(shape).prod())
        block = left[start : start + size]
        rank = int((torch.linalg.svdvals(block) > 1e-6).sum()) if block.numel() else 0
        if rank:
            out.append((name, rank))
        start += size
    return tuple(out)


def verify_graph(
    spec: Spec,
    graph: Graph,
    syms: Symmetries,
    derived: int,
    *,
    symbolic: bool = True,
    seed: int = 0,
) -> VerifyReport:
    """Check the groups ``syms`` of ``graph``, a tiny instance of ``spec``, and their count
    ``derived`` there against the Jacobian nullity."""
    tiny = graph.arch
    checks = tuple(_check(spec, graph, gi.group, symbolic) for gi in syms.groups)
    if spec.symmetries != "auto":  # a catalogue name the graph does not admit is a false claim
        found = {gi.name for gi in syms.groups} | {"unread_parameters"}
        checks += tuple(
            GroupCheck(name, "not admitted by this graph", (), float("inf"))
            for name in spec.symmetries
            if isinstance(name, str) and name not in found
        )
    params = generic_point(graph, seed)
    threads = torch.get_num_threads()
    try:
        measured, R = measure_nullity(
            lambda p, x: interpret(graph, p, x),
            params,
            vocab=tiny.vocab_size,
            seq_len=tiny.max_positions,
            generator=torch.Generator().manual_seed(seed + 1),
        )
    finally:
        torch.set_num_threads(threads)
    unexplained = ()
    if measured.nullity != derived:
        unexplained = _unexplained(graph, syms.groups, params, R, measured.nullity)
    return VerifyReport(
        spec.name,
        checks,
        measured.nullity,
        derived,
        measured.report.gap,
        measured.trustworthy,
        unexplained,
        spec.symmetries == "auto",
    )
