"""The runtime stands alone: it imports without symcomp, its modules import only torch, the
standard library and each other (relatively, so that ``--vendor-runtime`` can copy it into a
package), and :func:`symcomp_runtime.require` accepts exactly its own major.minor series."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import symcomp_runtime
from symcomp_runtime import RuntimeVersionError, require

RUNTIME = Path(__file__).resolve().parent.parent / "runtime"
MODULES = sorted((RUNTIME / "symcomp_runtime").glob("*.py"))
ALLOWED = {"torch"} | set(sys.stdlib_module_names)


def test_the_runtime_has_its_modules():
    assert {p.stem for p in MODULES} >= {"__init__", "actions", "errors", "gauge", "metric"}


def test_every_runtime_module_imports_without_symcomp():
    # -I: no PYTHONPATH, no user site, no current directory; sys.path is this runtime folder
    # first, then the standard library and site-packages (where symcomp may well be installed:
    # what is checked is that nothing imports it)
    names = [f"symcomp_runtime.{p.stem}" for p in MODULES if p.stem != "__init__"]
    code = (
        "import importlib, json, sys\n"
        f"sys.path.insert(0, {str(RUNTIME)!r})\n"
        "import symcomp_runtime\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps({'file': symcomp_runtime.__file__, 'modules': sorted(sys.modules)}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True
    )
    report = json.loads(done.stdout)
    assert Path(report["file"]).resolve() == RUNTIME / "symcomp_runtime" / "__init__.py"
    modules = report["modules"]
    assert set(names) <= set(modules)
    assert [m for m in modules if m == "symcomp" or m.startswith("symcomp.")] == []


OPTIONAL = {"ImportError", "ModuleNotFoundError"}


def _imports(path: Path) -> list[tuple[int, str, int]]:
    """(line, top-level module, relative level) of every import in ``path`` that must succeed,
    nested ones too; an optional one (in a ``try`` that handles its failing) is left out."""
    out: list[tuple[int, str, int]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name.split(".")[0], 0) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            out.append((node.lineno, (node.module or "").split(".")[0], node.level))
        elif isinstance(node, ast.Try) and any(
            isinstance(h.type, ast.Name) and h.type.id in OPTIONAL for h in node.handlers
        ):
            for child in [*node.handlers, *node.orelse, *node.finalbody]:
                visit(child)
            return
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), filename=str(path)))
    return out


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_runtime_module_imports_only_torch_stdlib_and_siblings(path):
    absolute = [(line, name) for line, name, level in _imports(path) if level == 0]
    # symcomp_runtime itself is not in ALLOWED: a sibling is imported relatively (``from .``),
    # so that a vendored copy (``<package>.symcomp_runtime``) imports its own siblings
    assert [(line, name) for line, name in absolute if name not in ALLOWED] == []
    relative = [name for _, name, level in _imports(path) if level > 0]
    siblings = {p.stem for p in MODULES}
    assert [name for name in relative if name and name not in siblings] == []


def test_the_import_check_sees_nested_imports_and_skips_optional_ones(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        "def f():\n"
        "    import numpy\n"
        "    try:\n"
        "        import rich\n"
        "    except ModuleNotFoundError:\n"
        "        from symcomp import cli\n"
        "    from .gauge import Chart\n"
    )
    assert _imports(source) == [(2, "numpy", 0), (6, "symcomp", 0), (7, "gauge", 1)]


def test_sharpness_shows_progress_without_rich():
    # rich is symcomp's dependency, not the runtime's: blocked here, the bar is a line on stderr
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(RUNTIME)!r})\n"
        "sys.modules['rich'] = None\n"
        "import torch\n"
        "from symcomp_runtime.sharpness import sharpness\n"
        "theta = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)\n"
        "s = sharpness(lambda v: (v**2).sum(), theta, measure='plain', steps=3, progress=True)\n"
        "print(s.value > 0, s.base_loss)\n"
    )
    # bytes: text mode would turn the bar's carriage returns into newlines
    done = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, check=True)
    assert done.stdout.split() == [b"True", b"5.25"]
    assert done.stderr.startswith(b"\rplain sharpness: 1/3, best ")
    assert b"\rplain sharpness: 3/3, best " in done.stderr and done.stderr.endswith(b"\n")
    assert b"\n" not in done.stderr[:-1]


def _series(version: str, minor_step: int = 0, major_step: int = 0) -> str:
    major, minor, *_ = (int(part) for part in version.split("."))
    return f"{major + major_step}.{minor + minor_step}.0"


def test_require_accepts_the_same_major_minor():
    major, minor, patch = (int(part) for part in symcomp_runtime.__version__.split("."))
    for version in (
        symcomp_runtime.__version__,
        f"{major}.{minor}.{patch + 7}",
        f"{major}.{minor}",
    ):
        require(version, "pkg")


@pytest.mark.parametrize("steps", [(1, 0), (0, 1)], ids=["next_minor", "next_major"])
def test_require_refuses_another_series(steps):
    version = symcomp_runtime.__version__
    other = _series(version, *steps)
    with pytest.raises(RuntimeVersionError) as info:
        require(other, "some_package")
    message = str(info.value)
    assert "some_package" in message and other in message and version in message


def test_require_refuses_an_older_minor():
    major, minor, _ = (int(part) for part in symcomp_runtime.__version__.split("."))
    older = f"{major + 1}.0.0" if minor == 0 else f"{major}.{minor - 1}.3"
    with pytest.raises(RuntimeVersionError):
        require(older, "pkg")
