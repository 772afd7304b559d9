"""The pipeline builds each stage's product once: one graph and one derivation of the spec's
architecture per command (the count's tiny measurement instances are other graphs)."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest

from symcomp import pipeline
from symcomp.hf.config_import import import_hf_config
from symcomp.hf.reduce import reduce_checkpoint
from symcomp.ir import graph as ir_graph
from symcomp.spec.model import Architecture, Spec
from symcomp.symmetry import analysis
from symcomp.symmetry.analysis import measurement_instance
from tests.conftest import ROOT

try:
    import hf_tiny
except ImportError:  # tests/ became a package
    from tests import hf_tiny

TINY = ROOT / "specs" / "tiny" / "gpt2.yaml"


def _arch(spec_or_arch: Spec | Architecture) -> Architecture:
    return spec_or_arch.architecture if isinstance(spec_or_arch, Spec) else spec_or_arch


@pytest.fixture
def built(monkeypatch) -> Counter:
    """Counts graph builds and group derivations, by architecture (JSON of the architecture),
    wherever symcomp calls them from."""
    calls: Counter = Counter()
    build, derive = ir_graph.build_graph, analysis.derive_groups

    def counting_build(spec):
        calls["build", _arch(spec).model_dump_json()] += 1
        return build(spec)

    def counting_derive(graph):
        calls["derive", graph.arch.model_dump_json()] += 1
        return derive(graph)

    for name, module in list(sys.modules.items()):
        if name.startswith("symcomp") and getattr(module, "build_graph", None) is build:
            monkeypatch.setattr(module, "build_graph", counting_build)
    monkeypatch.setattr(analysis, "derive_groups", counting_derive)
    return calls


def _once(calls: Counter, arch: Architecture) -> None:
    # the measurement instances must differ from the spec, or their builds would count here
    assert all(measurement_instance(arch, n) != arch for n in (1, 2, 3))
    key = arch.model_dump_json()
    assert calls["build", key] == 1
    assert calls["derive", key] == 1


def test_compile_builds_the_graph_once(built):
    spec = pipeline.load(TINY)
    package = pipeline.compile_package(spec, TINY.read_text())
    assert package.chart_problem is None
    _once(built, spec.architecture)


def test_analyze_builds_the_graph_once(built):
    spec = pipeline.load(TINY)
    pipeline.analyze(spec)
    _once(built, spec.architecture)


@pytest.mark.usefixtures("one_torch_thread")
def test_reduce_builds_the_graph_once(built, tmp_path: Path):
    folder = tmp_path / "checkpoint"
    hf_tiny.build("gpt2", float64_norms=False).save_pretrained(folder)
    spec = import_hf_config(folder)
    built.clear()
    reduce_checkpoint(folder, tmp_path / "reduced")
    _once(built, spec.architecture)
