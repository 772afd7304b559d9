"""The shape of the code base (issue 23): small modules, and generated packages that hold only
what is specific to their model, the runtime holding the rest once."""

from __future__ import annotations

import collections
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULE_LINES = 700
GENERATED_LINES = 12_250  # 12,000 until each model took a padding mask and a cache (0.4.0)


def test_no_module_is_longer_than_700_lines():
    modules = [*ROOT.joinpath("symcomp").rglob("*.py"), *ROOT.joinpath("runtime").rglob("*.py")]
    long = {
        str(p.relative_to(ROOT)): n
        for p in modules
        if (n := len(p.read_text().splitlines())) > MODULE_LINES
    }
    assert not long, f"modules over {MODULE_LINES} lines: {long}"


def test_generated_packages_hold_only_what_is_theirs():
    files = sorted(ROOT.joinpath("generated").glob("*/*.py"))
    assert len({f.parent for f in files}) == len(list(ROOT.joinpath("specs").glob("*.yaml")))
    total = sum(len(f.read_text().splitlines()) for f in files)
    assert total <= GENERATED_LINES, f"generated/ holds {total} lines of Python"
    bodies = collections.defaultdict(list)  # a file's text below its two header lines
    for f in files:
        bodies[f.name, "\n".join(f.read_text().splitlines()[2:])].append(f.parent.name)
    copies = {name: packages for (name, _), packages in bodies.items() if len(packages) > 1}
    assert not copies, f"files repeated across packages with only their header changed: {copies}"
