"""The stages of symcomp in order, each product built once and handed on.

    load (Spec) -> build (Graph) -> derive (Symmetries) -> count (Count)
        -> tabulate (Analysis)            symcomp analyze
        -> emit: chart + files (Package)  symcomp compile, symcomp reduce
    measurement instance -> build -> derive -> count -> verify_graph (VerifyReport)
                                                      symcomp verify

A stage is a plain function from the products before it to its own, a frozen dataclass. The
commands below (``analyze``, ``verify``, ``compile_package``, ``analyze_and_compile``) spell out
the order; the CLI, :mod:`symcomp.hf.reduce` and the Python API call them. The count's overlap
term is measured on tiny instances of the same structure, which it builds itself
(:func:`symcomp.symmetry.analysis.overlap_formula`): those are other graphs, not the spec's.
"""

from __future__ import annotations

from pathlib import Path

from symcomp.codegen.compile import Package, emit_package
from symcomp.ir.graph import Graph, build_graph
from symcomp.spec import load_spec
from symcomp.spec.model import Spec
from symcomp.symmetry.analysis import (
    Analysis,
    Count,
    count_redundancy,
    groups_of,
    measurement_instance,
    tabulate,
)
from symcomp.symmetry.catalogue import Symmetries
from symcomp.verify.report import VerifyReport, verify_graph

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
    return emit_package(spec, source_text, graph, symmetries, n, vendor_runtime=vendor_runtime)


# --- the commands -----------------------------------------------------------------------------


def analyze(spec: Spec) -> Analysis:
    """``symcomp analyze``: the redundant parameters, group by group."""
    graph = build(spec)
    symmetries = derive(graph, spec)
    return tabulate(spec.name, spec.architecture, symmetries, count(spec, symmetries))


def compile_package(spec: Spec, source_text: str, *, vendor_runtime: bool = False) -> Package:
    """``symcomp compile``: the package of ``spec`` (``source_text``: its YAML, for the hash);
    ``vendor_runtime`` copies the runtime into it."""
    graph = build(spec)
    symmetries = derive(graph, spec)
    n = count(spec, symmetries)
    return emit(spec, source_text, graph, symmetries, n, vendor_runtime=vendor_runtime)


def analyze_and_compile(spec: Spec, source_text: str) -> tuple[Analysis, Package]:
    """``symcomp reduce``: the analysis and the package, from one graph and one derivation."""
    graph = build(spec)
    symmetries = derive(graph, spec)
    n = count(spec, symmetries)
    analysis = tabulate(spec.name, spec.architecture, symmetries, n)
    return analysis, emit(spec, source_text, graph, symmetries, n)


def verify(spec: Spec, *, symbolic: bool = True, seed: int = 0) -> VerifyReport:
    """``symcomp verify``: SymPy proofs, float64 invariance and the Jacobian nullity, on a tiny
    instance of the same structure (:func:`symcomp.symmetry.analysis.measurement_instance`)."""
    tiny = spec.model_copy(update={"architecture": measurement_instance(spec.architecture)})
    graph = build(tiny)
    symmetries = derive(graph, tiny)
    derived = count(tiny, symmetries).at(tiny.architecture)
    return verify_graph(spec, graph, symmetries, derived, symbolic=symbolic, seed=seed)
