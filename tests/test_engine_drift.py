"""One meaning of a group action: every group of every example spec, applied by the runtime's
engine on both backends (torch tensors, SymPy matrices) and through the generated package's
printed actions, moves the parameters to the same values.

The three used to be three implementations (the numeric actions, the SymPy proofs, the generated
code) that drifted apart; now the units, cuts and layer references are the engine's, and only
the evaluation of one expression differs by backend. Elements are arbitrary (a generic matrix or
row, not necessarily in the group): the check is that the three compute one function.
"""

from __future__ import annotations

import importlib
import random
from pathlib import Path

import pytest
import sympy
import torch
from symcomp_runtime import actions

from symcomp import pipeline
from symcomp.codegen.compile import package_groups
from symcomp.symmetry.engine import SYMPY, bind, sympy_evaluate, torch_evaluate

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
PRECISION = 30  # digits of the SymPy side
TOL = 1e-9


def _package(spec_path: Path):
    name = spec_path.stem.replace("-", "_")
    return importlib.import_module(f"generated.{name}"), importlib.import_module(
        f"generated.{name}.test_invariance"
    )


def _element(group: actions.Group, S: dict[str, int], rng: random.Random) -> list[list[float]]:
    n = group.size(S)
    if group.is_matrix:  # generic: well away from singular
        return [
            [(1.5 if i == j else 0.0) + rng.uniform(-0.4, 0.4) for j in range(n)] for i in range(n)
        ]
    return [[rng.choice((-1, 1)) * rng.uniform(0.5, 2.0) for _ in range(n)]]


@pytest.mark.parametrize("spec_path", SPECS, ids=lambda p: p.stem)
def test_every_group_moves_the_parameters_alike_on_every_backend(spec_path):
    spec = pipeline.load(spec_path)
    graph = pipeline.build(spec)
    groups = package_groups(pipeline.derive(graph, spec), spec.architecture.layers)
    package, tests = _package(spec_path)
    S = dict(tests.TINY)
    model = package.Model(dtype=torch.float64, **S)
    rng = random.Random(0)
    params = {
        name: torch.tensor([rng.uniform(-1, 1) for _ in range(p.numel())], dtype=torch.float64)
        .reshape(p.shape)
        .add(2.0 if name.endswith("gain") else 0.0)
        for name, p in model.named_parameters()
    }
    exact = {
        name: sympy.Matrix(v.reshape(1, -1) if v.ndim == 1 else v).evalf(PRECISION)
        for name, v in params.items()
    }
    assert groups, "no groups derived"
    checked = 0
    for group, _ in groups:
        printed = package.GROUPS[group.name]  # the generated code's own actions
        numeric = bind(group, spec.architecture, torch_evaluate)
        symbolic = bind(group, spec.architecture, sympy_evaluate)
        units = actions.units(printed, S)
        assert units == actions.units(numeric, S) == actions.units(symbolic, S), group.name
        for unit in units[:3]:  # the first units: each layer reference and cut is exercised
            element = _element(printed, S, rng)
            E = torch.tensor(element, dtype=torch.float64)
            a = actions.apply(printed, params, unit, E, S)
            b = actions.apply(numeric, params, unit, E, S)
            c = actions.apply(
                symbolic, exact, unit, sympy.Matrix(element).evalf(PRECISION), S, SYMPY
            )
            for name in params:
                ref = a[name].reshape(-1)
                scale = 1.0 + float(ref.abs().max())
                assert float((b[name].reshape(-1) - ref).abs().max()) <= TOL * scale, (
                    f"{group.name} {unit} {name}: torch backend"
                )
                got = torch.tensor([float(x) for x in c[name]], dtype=torch.float64)
                assert float((got - ref).abs().max()) <= TOL * scale, (
                    f"{group.name} {unit} {name}: SymPy backend"
                )
            moved = [n for n in params if not torch.equal(a[n], params[n])]
            assert moved or not printed.acts, f"{group.name} {unit}: the element moved nothing"
            checked += 1
    assert checked >= len(groups) // 2


def test_empty_layers_is_rejected_with_its_meaning():
    """``layers: []`` would mean "no units" to one reader and "all layers" to another; the spec
    language refuses it and says what to write instead."""
    from symcomp.errors import SpecError
    from symcomp.spec import parse_spec

    text = (ROOT / "specs" / "tiny" / "gpt2.yaml").read_text()
    text = text.split("symmetries:")[0] + (
        "symmetries:\n  - name: g\n    group: scaling\n    per: neuron\n    size: 1\n"
        "    layers: []\n    acts:\n      layers.*.mlp.W_up: W_up s\n"
        "      layers.*.mlp.W_down: s^-1 W_down\n"
    )
    with pytest.raises(SpecError, match="layers"):
        parse_spec(text, "drift.yaml")
