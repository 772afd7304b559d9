"""The worked counts each catalogue module declares (``WORKED``) against what ``analyze`` derives
for the example spec each names: a declaration that disagrees with the rules fails."""

from __future__ import annotations

from functools import cache

import pytest
import sympy

from symcomp.ir.graph import Graph, build_graph
from symcomp.pipeline import analyze
from symcomp.spec import load_spec
from symcomp.symmetry.analysis import Analysis
from symcomp.symmetry.catalogue import (
    MODULES,
    RULES,
    SIZE_SYMBOLS,
    Facts,
    Symmetries,
    Worked,
    derive_groups,
    unread_rows,
)
from tests.conftest import SPECS

WORKED = [(module.__name__, worked) for module in MODULES for worked in module.WORKED]
NAMES = {str(sym): sym for sym in SIZE_SYMBOLS.values()}


def _id(case: tuple[str, Worked]) -> str:
    return f"{case[1].rule.__name__}-{case[1].spec}"


@cache
def _analysed(spec_name: str) -> tuple[Graph, Symmetries, Analysis]:
    spec = load_spec(SPECS / f"{spec_name}.yaml")
    assert spec.symmetries == "auto", "a worked count is what the rules derive on their own"
    graph = build_graph(spec.architecture)
    return graph, derive_groups(graph), analyze(spec, measured=False)


@pytest.mark.parametrize("case", WORKED, ids=_id)
def test_worked_count_is_what_analyze_derives(case):
    module, worked = case
    assert worked.rule.__module__ == module, "a module declares the counts of its own rules"
    graph, syms, analysis = _analysed(worked.spec)
    found = list(worked.rule(Facts(graph)))
    # analyze has one line per derived group, then one per unread table, in that order
    derived = [*syms.groups, *syms.unread]
    paired = list(zip(derived, analysis.groups, strict=False))
    for item, line in paired:
        expected = item.group.name if hasattr(item, "group") else item.parameter
        assert expected in (line.name, line.acts_on)
    lines = [line for item, line in paired if item in found]
    assert len(lines) == len(found), "every group the rule finds is a line of analyze"
    derived_count = sum((sympy.sympify(line.formula, NAMES) for line in lines), sympy.Integer(0))
    declared = sympy.sympify(worked.count, NAMES)
    assert sympy.expand(derived_count - declared) == 0, f"analyze derives {derived_count}"
    assert sum(line.dimension for line in lines) == worked.value


def test_every_rule_has_a_worked_count():
    covered = {worked.rule for _, worked in WORKED}
    missing = [fn.__name__ for fn in [*RULES, unread_rows] if fn not in covered]
    assert not missing, f"rules without a worked count: {missing}"
