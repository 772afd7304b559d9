"""One error hierarchy.

- every exception class defined in symcomp and symcomp_runtime is a :class:`SymcompError`, in
  the branch of its stage, and none is also a ``ValueError`` or ``RuntimeError`` (so that catching
  a built-in never catches ours by accident);
- no module (nor template of generated code) catches ``Exception`` or everything, except the
  CLI's top level; ``except BaseException`` is allowed only to clean up and re-raise;
- the CLI turns a SymcompError into ``error: ...`` and its exit code, anything else into one
  line ``internal error: ...`` and exit code 3.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest
import symcomp_runtime

import symcomp
from symcomp.errors import (
    CheckpointError,
    CodegenError,
    DerivationError,
    ImportHFError,
    Location,
    Problem,
    SpecError,
    SymcompError,
    VerificationError,
)

ROOT = Path(__file__).resolve().parents[1]
SOURCES = (ROOT / "symcomp", ROOT / "runtime" / "symcomp_runtime")
TOP_LEVEL = ROOT / "symcomp" / "cli.py"  # the one place allowed to catch Exception
NOT_IMPORTED = {"symcomp.__main__"}  # importing it runs the CLI


def _module_names() -> list[str]:
    names = []
    for package in (symcomp, symcomp_runtime):
        names.append(package.__name__)
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if info.name not in NOT_IMPORTED:
                names.append(info.name)
    return names


def _exception_classes() -> dict[str, type[BaseException]]:
    """Every exception class defined in a module of symcomp or symcomp_runtime, by full name."""
    found: dict[str, type[BaseException]] = {}
    for name in _module_names():
        module = importlib.import_module(name)
        todo = [cls for _, cls in inspect.getmembers(module, inspect.isclass)]
        while todo:
            cls = todo.pop()
            if cls.__module__ != name:
                continue
            if issubclass(cls, BaseException) and not issubclass(cls, Warning):
                found[f"{name}.{cls.__qualname__}"] = cls
            todo.extend(v for v in vars(cls).values() if inspect.isclass(v))  # nested classes
    return found


ERRORS = _exception_classes()

# the branch each error class of a stage belongs to
BRANCHES = {
    "symcomp.lang.parser.ExprError": SymcompError,
    "symcomp.symmetry.engine.ActionError": DerivationError,
    "symcomp.verify.sympy_interpreter.SymbolicError": VerificationError,
    "symcomp.verify.generic.NotGenericError": VerificationError,
    "symcomp.codegen.actions.RenderError": CodegenError,
    "symcomp.codegen.chart.ChartError": CodegenError,
    "symcomp.codegen.emit.OverwriteError": CodegenError,
    "symcomp.hf.reduce.ReduceError": CheckpointError,
    "symcomp.errors.ImportHFError": SpecError,
}


def test_the_walk_finds_the_error_classes():
    assert set(BRANCHES) <= set(ERRORS)
    assert "symcomp_runtime.errors.DegenerateError" in ERRORS


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_every_error_class_is_a_symcomp_error(name):
    cls = ERRORS[name]
    assert issubclass(cls, SymcompError), f"{name} does not subclass SymcompError"
    if cls.__name__ != "RuntimeVersionError":  # also an ImportError, for the import machinery
        assert not issubclass(cls, (ValueError, RuntimeError)), f"{name} is also a built-in"


@pytest.mark.parametrize("name", sorted(BRANCHES))
def test_error_classes_sit_in_their_stage_branch(name):
    assert issubclass(ERRORS[name], BRANCHES[name])


def _broad(handler: ast.ExceptHandler) -> str | None:
    """``Exception``/``BaseException`` when the handler catches it (or everything), else None."""
    if handler.type is None:
        return "everything"
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    for node in types:
        name = node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", None)
        if name in ("Exception", "BaseException"):
            return name
    return None


def _reraises(handler: ast.ExceptHandler) -> bool:
    last = handler.body[-1]
    return isinstance(last, ast.Raise) and last.exc is None


def _broad_handlers(path: Path, root: Path = ROOT) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.ExceptHandler):
            continue
        caught = _broad(node)
        if caught == "BaseException" and _reraises(node):
            continue  # clean up, then let it go on
        if caught is not None:
            out.append(f"{path.relative_to(root)}:{node.lineno}: catches {caught}")
    return out


def test_the_walk_finds_broad_handlers(tmp_path):
    (tmp_path / "x.py").write_text(
        "try:\n    pass\nexcept (KeyError, Exception):\n    pass\n"
        "try:\n    pass\nexcept:\n    pass\n"
        "try:\n    pass\nexcept BaseException:\n    raise\n"
        "try:\n    pass\nexcept builtins.BaseException:\n    pass\n"
    )
    assert _broad_handlers(tmp_path / "x.py", tmp_path) == [
        "x.py:3: catches Exception",
        "x.py:7: catches everything",
        "x.py:15: catches BaseException",
    ]


def test_only_the_cli_top_level_catches_exception():
    files = sorted(p for source in SOURCES for p in source.rglob("*.py") if p != TOP_LEVEL)
    assert files
    broad = [line for path in files for line in _broad_handlers(path)]
    assert not broad, "catch the exceptions that can occur there:\n" + "\n".join(broad)


def test_the_templates_catch_no_exception_broadly():
    """Generated code is runtime code too; the templates are Jinja, so read them as text."""
    templates = sorted((ROOT / "symcomp" / "codegen" / "templates").glob("*.j2"))
    assert templates
    broad = re.compile(r"^\s*except\s*(\(?\s*Exception\b|:)", re.M)
    found = []
    for path in templates:
        text = path.read_text()
        found += [
            f"{path.name}:{text.count(chr(10), 0, m.start()) + 1}" for m in broad.finditer(text)
        ]
    assert not found, found


def test_where_and_hint_are_part_of_the_message():
    assert str(SymcompError("no chart")) == "no chart"
    error = CodegenError("no chart", where="specs/x.yaml", hint="add a group")
    assert str(error) == "specs/x.yaml: no chart; add a group"
    assert (error.where, error.hint) == ("specs/x.yaml", "add a group")


def test_a_spec_error_has_where_and_hint_of_its_first_problem():
    problem = Problem("bad", Location("a.yaml", 3, 5), ("architecture", "heads"), "x", "an int")
    error = SpecError([problem, Problem("worse")])
    assert error.where == "a.yaml:3:5: architecture.heads"
    assert error.hint == "accepted: an int"
    assert str(error).splitlines()[0] == problem.render()
    assert isinstance(ImportHFError(problem), SpecError)


def test_import_errors_are_import_hf_errors(tmp_path):
    from symcomp.hf.config_import import import_hf_config

    (tmp_path / "config.json").write_text('{"model_type": "gpt2",\n "n_layer": "two"}')
    with pytest.raises(ImportHFError) as info:
        import_hf_config(tmp_path)
    assert info.value.first.location.file == str(tmp_path / "config.json")


def test_cli_prints_symcomp_errors_with_their_exit_code(run_cli, monkeypatch):
    from symcomp import cli

    def refuse(args):
        raise CheckpointError("cannot reduce", where="ckpt/", hint="try another")

    monkeypatch.setattr(cli, "cmd_schema", refuse)
    code, _, err = run_cli("schema")
    assert code == 2
    assert err == "error: ckpt/: cannot reduce; try another\n"


def test_cli_reports_any_other_exception_as_an_internal_error(run_cli, monkeypatch):
    from symcomp import cli

    def crash(args):
        raise KeyError("a bug\nover two lines")

    monkeypatch.setattr(cli, "cmd_schema", crash)
    monkeypatch.delenv("SYMCOMP_DEBUG", raising=False)
    code, _, err = run_cli("schema")
    assert code == 3
    assert err.startswith("internal error: KeyError: ") and "report" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    monkeypatch.setenv("SYMCOMP_DEBUG", "1")
    with pytest.raises(KeyError):
        run_cli("schema")
