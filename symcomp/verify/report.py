"""The three checks of ``symcomp verify``: :func:`check_groups` on the graph of a tiny instance
of the spec, and the witnesses of :mod:`.witness` (:func:`symcomp.pipeline.verify` runs both).

1. Symbolic: SymPy proves, on a minimal instance, that each group leaves the log-probabilities
   unchanged, and names the values where its change vanishes (:mod:`.symbolic`).
2. Numeric: in float64, random group elements at a generic point change no log-probability by
   more than 1e-10 (:mod:`.invariance`).
3. Jacobian: on two tiny instances of the same structure that differ in every free size, the
   printed formula equals the nullity of the Jacobian of the log-probabilities (a listed subset
   of the groups may name fewer); the directions the named groups leave unexplained are
   reported by the parameters they move (:mod:`.witness`).

A group that does not hold is rejected with its measured error, never dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from symcomp.ir.graph import Graph
from symcomp.spec.model import CustomGroup, Spec
from symcomp.symmetry.catalogue import Symmetries
from symcomp.verify.invariance import TOLERANCE, measure_invariance
from symcomp.verify.symbolic import prove_invariance
from symcomp.verify.witness import Witness


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
    witnesses: tuple[Witness, ...]
    """The printed formula against the Jacobian nullity of two tiny instances that differ in
    every free size (:mod:`.witness`)."""
    instance: tuple[tuple[str, int], ...] = ()
    """The sizes of the tiny instance whose groups were checked, by size symbol."""

    @property
    def nullity(self) -> int:
        return self.witnesses[0].measured

    @property
    def derived(self) -> int:
        return self.witnesses[0].derived

    @property
    def ok(self) -> bool:
        return all(c.holds for c in self.checks) and all(w.ok for w in self.witnesses)


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


def check_groups(
    spec: Spec,
    graph: Graph,
    syms: Symmetries,
    *,
    symbolic: bool = True,
    progress: Callable[[str], None] | None = None,
) -> tuple[GroupCheck, ...]:
    """Check the groups ``syms`` of ``graph``, a tiny instance of ``spec``, symbolically and
    numerically; a catalogue name the spec lists but the graph does not admit is a false claim.
    ``progress(name)`` is told of each group before its check."""
    done = []
    for gi in syms.groups:
        if progress is not None:
            progress(gi.group.name)
        done.append(_check(spec, graph, gi.group, symbolic))
    checks = tuple(done)
    if spec.symmetries != "auto":
        found = {gi.name for gi in syms.groups} | {"unread_parameters"}
        checks += tuple(
            GroupCheck(name, "not admitted by this graph", (), float("inf"))
            for name in spec.symmetries
            if isinstance(name, str) and name not in found
        )
    return checks
