"""The stages of symcomp in order, each product built once and handed on.

    load (Spec) -> build (Graph) -> derive (Symmetries) -> count (Count)
        -> tabulate (Analysis)            symcomp analyze
        -> emit: chart + files (Package)  symcomp compile, symcomp reduce
    -> measure: the formula against the Jacobian nullity of tiny instances (Witness)
    measurement instance -> build -> derive -> check_groups, + measure at two instances
        (VerifyReport)                    symcomp verify

A stage is a plain function from the products before it to its own, a frozen dataclass. The
commands below (``analyze``, ``verify``, ``compile_package``, ``analyze_and_compile``) spell out
the order; the CLI, :mod:`symcomp.hf.reduce` and the Python API call them. The count's overlap
term is measured on tiny instances of the same structure, which it builds itself
(:func:`symcomp.symmetry.analysis.overlap_formula`): those are other graphs, not the spec's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from symcomp.errors import CountNotConfirmedError
from symcomp.ir.graph import Graph, build_graph
from symcomp.spec import load_spec
from symcomp.spec.model import Architecture, Spec
from symcomp.symmetry.analysis import (
    Analysis,
    Count,
    count_redundancy,
    fewer_experts,
    groups_of,
    layer_pattern,
    measurement_instance,
    measurement_layers,
    tabulate,
)
from symcomp.symmetry.catalogue import Symmetries
from symcomp.verify.forked import forked
from symcomp.verify.report import VerifyReport, check_groups
from symcomp.verify.witness import Witness, instance_sizes, second_instance, witness

Progress = Callable[[str], None]
"""Told, in words, of each step before it runs (the CLI shows it)."""

if TYPE_CHECKING:  # code generation is imported by the commands that emit a package only
    from symcomp.codegen.compile import Package

# --- the stages -------------------------------------------------------------------------------


def load(path: str | Path) -> Spec:
    """A YAML spec, validated (errors carry file:line and the key path)."""
    return load_spec(path)


def build(spec: Spec) -> Graph:
    """The graph IR of the spec's architecture."""
    return build_graph(spec)


def derive(graph: Graph, spec: Spec) -> Symmetries:
    """The groups the graph admits (``symmetries: auto``), or those the spec lists."""
    return groups_of(graph, spec.symmetries)


def count(spec: Spec, symmetries: Symmetries) -> Count:
    """The closed-form redundancy of the derived groups."""
    return count_redundancy(spec.architecture, symmetries, spec.symmetries)


def emit(
    spec: Spec,
    source_text: str,
    graph: Graph,
    symmetries: Symmetries,
    n: Count,
    *,
    vendor_runtime: bool = False,
) -> Package:
    """The generated package: model, groups, chart (reduced model), invariants and tests."""
    from symcomp.codegen.compile import emit_package

    return emit_package(spec, source_text, graph, symmetries, n, vendor_runtime=vendor_runtime)


# --- the commands -----------------------------------------------------------------------------


def measure(
    spec: Spec,
    n: Count,
    *,
    second: bool = False,
    seed: int = 0,
    discover: bool = False,
    progress: Progress | None = None,
) -> tuple[Witness, ...]:
    """The closed form ``n`` against the Jacobian nullity of the spec's tiny measurement
    instance, and with ``second`` of another that differs in every free size
    (:mod:`symcomp.verify.witness`); ``discover`` always lists the null directions outside the
    named groups. Where the layers differ (NoPE or sliding layers among others), an instance
    holds one layer of each kind (twice over for the second), and the formula checked there is
    the derivation's own at that depth. With ``symmetries: auto``, a mixture of experts is
    measured with as few experts as leave the router a choice (:func:`fewer_experts`; one more
    on the second instance), against the derivation's formula at that expert count. Cached by
    the spec's structure and the formula. ``progress(what)`` is told of each instance before it
    is measured."""
    arch, pattern = spec.architecture, layer_pattern(spec.architecture)
    if pattern is None:
        instances = [measurement_instance(arch, measurement_layers(spec))]
        if second:
            instances.append(second_instance(arch))
    else:
        instances = [measurement_instance(pattern, pattern.layers)]
        if second:
            twice = layer_pattern(arch, repeat=2) or pattern
            instances.append(second_instance(twice, layers=twice.layers))
    if spec.symmetries == "auto":  # a listed group may name any expert
        instances = [fewer_experts(tiny, spare) for spare, tiny in enumerate(instances, 1)]
    out = []
    for instance in instances:
        if progress is not None:
            sizes = ", ".join(f"{k}={v}" for k, v in instance_sizes(instance))
            progress(f"Jacobian nullity at {sizes}")
        same = pattern is None and instance.mlp.experts == arch.mlp.experts
        out.append(_witness(spec, instance, n if same else None, seed, discover))
    return tuple(out)


_witnesses: dict[tuple[str, str, str, int, bool], Witness] = {}


def _witness(
    spec: Spec, instance: Architecture, n: Count | None, seed: int, discover: bool
) -> Witness:
    tiny = spec.model_copy(update={"architecture": instance})
    key = (instance.model_dump_json(), repr(spec.symmetries), str(n and n.formula), seed, discover)
    if key not in _witnesses:
        graph = build(tiny)
        syms, auto = derive(graph, tiny), spec.symmetries == "auto"
        formula = (n or count(tiny, syms)).formula
        _witnesses[key] = witness(
            formula, instance, syms, auto=auto, seed=seed, discover=discover, pattern=n is None
        )
    return _witnesses[key]


def analyze(spec: Spec, *, measured: bool = True, discover: bool = False) -> Analysis:
    """``symcomp analyze``: the redundant parameters, group by group, and (unless
    ``measured=False``) the formula checked against the Jacobian nullity of a tiny instance;
    ``discover`` lists the null directions the named groups leave out."""
    graph = build(spec)
    symmetries = derive(graph, spec)
    n = count(spec, symmetries)
    analysis = tabulate(spec.name, spec.architecture, symmetries, n)
    if not measured:
        return analysis
    return replace(analysis, measured=measure(spec, n, discover=discover))


def compile_package(spec: Spec, source_text: str, *, vendor_runtime: bool = False) -> Package:
    """``symcomp compile``: the package of ``spec`` (``source_text``: its YAML, for the hash);
    ``vendor_runtime`` copies the runtime into it."""
    graph = build(spec)
    symmetries = derive(graph, spec)
    n = count(spec, symmetries)
    return emit(spec, source_text, graph, symmetries, n, vendor_runtime=vendor_runtime)


def analyze_and_compile(spec: Spec, source_text: str) -> tuple[Analysis, Package]:
    """``symcomp reduce``: the measured analysis and the package, from one graph and one
    derivation. A count its measurement does not confirm raises
    :class:`~symcomp.errors.CountNotConfirmedError` before anything is emitted."""
    graph = build(spec)
    symmetries = derive(graph, spec)
    n = count(spec, symmetries)
    analysis = tabulate(spec.name, spec.architecture, symmetries, n)
    analysis = replace(analysis, measured=measure(spec, n))
    if not analysis.confirmed:
        lines = [line for w in analysis.measured for line in w.lines()]
        raise CountNotConfirmedError(f"{spec.name}: " + "\n".join(lines))
    return analysis, emit(spec, source_text, graph, symmetries, n)


def verify(
    spec: Spec, *, symbolic: bool = True, seed: int = 0, progress: Progress | None = None
) -> VerifyReport:
    """``symcomp verify``: SymPy proofs and float64 invariance of each group on a tiny instance
    of the same structure (:func:`symcomp.symmetry.analysis.measurement_instance`), and the
    printed formula against the Jacobian nullity there and at a second instance that differs in
    every free size. ``progress(what)`` is told of each step before it runs (a group on the tiny
    instance, then each measurement)."""
    tell = progress or (lambda what: None)
    tell("deriving the groups and their count")
    n = count(spec, derive(build(spec), spec))
    instance = measurement_instance(spec.architecture)
    tiny = spec.model_copy(update={"architecture": instance})
    graph = build(tiny)
    sizes = instance_sizes(instance)
    at = ", ".join(f"{k}={v}" for k, v in sizes)
    syms = derive(graph, tiny)
    # the group checks (SymPy, pure Python) in a second process, the Jacobians (torch) here
    with forked(
        check_groups,
        spec,
        graph,
        syms,
        symbolic=symbolic,
        progress=lambda name: tell(f"group {name} at {at}"),
    ) as checks:
        witnesses = measure(spec, n, second=True, seed=seed, discover=True, progress=tell)
    return VerifyReport(spec.name, checks(), witnesses, instance=sizes)
