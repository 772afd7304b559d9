"""Tried as a new user would: a generated package installs with pip into a fresh virtual
environment (no system site packages) and its own tests pass there, with torch and the runtime
only (symcomp is not importable there), or with torch alone when compiled ``--vendor-runtime``.
And a package compiled for another runtime series refuses to import.

The environment is made once per module: torch and pytest (torch's CPU wheel from the package
index pip is configured with: 20 s on 2 idle cores, 50 s on busy ones; the whole module takes 1
to 2.5 min). The vendored package is tried first, while the runtime is not installed; then the
runtime and the committed ``generated/gpt2_small``. Both are copied out first: pip builds a
source folder in place (``build/``, ``*.egg-info``), and the repository's folders must stay as
they are.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import symcomp_runtime
import torch
from symcomp_runtime import RuntimeVersionError

from symcomp.codegen.load import loaded_package

ROOT = Path(__file__).resolve().parent.parent
# the torch this checkout is tested with (``2.13.0+cpu`` -> ``torch==2.13.0``)
TORCH = torch.__version__.split("+")[0]
LITTER = shutil.ignore_patterns("__pycache__", ".pytest_cache", "build", "*.egg-info")


def _copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, ignore=LITTER)
    return target


class Venv:
    """A virtual environment whose python runs in a folder outside the repository, with no
    PYTHONPATH: what it imports is what was installed into it. pip reads the same configuration
    as ours (its config files and the PIP_* variables, which are kept)."""

    def __init__(self, folder: Path, cwd: Path):
        subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
        assert "include-system-site-packages = false" in (folder / "pyvenv.cfg").read_text()
        self.python = folder / "bin" / "python"
        self.cwd = cwd
        drop = {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PYTHONSAFEPATH"}
        self.env = {k: v for k, v in os.environ.items() if k not in drop}

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [str(self.python), *args],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if check and done.returncode != 0:
            pytest.fail(f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done

    def pip(self, *args: str) -> None:
        self.run("-m", "pip", *args)

    def cannot_import(self, module: str) -> bool:
        done = self.run("-c", f"import {module}", check=False)
        return done.returncode != 0 and f"No module named '{module}'" in done.stderr

    def run_tests(self, package: str) -> int:
        """Run the installed package's own tests; how many passed."""
        done = self.run("-m", "pytest", "-q", "-p", "no:cacheprovider", "--pyargs", package)
        passed = re.search(r"(\d+) passed", done.stdout)
        assert passed, done.stdout
        assert not re.search(r"\d+ (failed|error)", done.stdout), done.stdout
        return int(passed.group(1))


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Venv:
    env = Venv(tmp_path_factory.mktemp("venv") / "venv", tmp_path_factory.mktemp("cwd"))
    env.pip("install", "-q", f"torch=={TORCH}", "pytest")
    assert env.cannot_import("symcomp") and env.cannot_import("symcomp_runtime")
    return env


@pytest.mark.slow
def test_vendored_package_needs_only_torch(venv, run_cli, tmp_path):
    venv.pip("uninstall", "-q", "-y", "symcomp-runtime")  # if the other test ran first
    out = tmp_path / "pkg"
    code, _, err = run_cli(
        "compile", str(ROOT / "specs/tiny/gpt2.yaml"), "-o", str(out), "--vendor-runtime"
    )
    assert code == 0, err
    assert (out / "symcomp_runtime" / "__init__.py").is_file()
    venv.pip("install", "-q", str(out))
    assert venv.cannot_import("symcomp_runtime") and venv.cannot_import("symcomp")
    where = venv.run("-c", "import tiny_gpt2.symcomp_runtime as r; print(r.__file__)").stdout
    assert Path(where.strip()).parts[-3:] == ("tiny_gpt2", "symcomp_runtime", "__init__.py")
    assert venv.run_tests("tiny_gpt2") > 0


@pytest.mark.slow
def test_package_needs_only_torch_and_the_runtime(venv, tmp_path):
    runtime = _copy(ROOT / "runtime", tmp_path / "runtime")
    package = _copy(ROOT / "generated" / "gpt2_small", tmp_path / "gpt2_small")
    venv.pip("install", "-q", str(runtime), str(package))
    assert venv.cannot_import("symcomp")
    code = "import gpt2_small, symcomp_runtime as r; print(r.__version__, gpt2_small.__file__)"
    version, where = venv.run("-c", code).stdout.split()
    assert version == symcomp_runtime.__version__
    assert Path(where).parts[-3:] == ("site-packages", "gpt2_small", "__init__.py")
    assert venv.run_tests("gpt2_small") > 0


def _other_series(version: str) -> str:
    major, minor, *_ = version.split(".")
    return f"{major}.{int(minor) + 1}.0"


@pytest.mark.parametrize("compiled_for", ["other_series", "same_series"])
def test_package_for_another_runtime_series_refuses_to_import(compiled_for, tmp_path):
    installed = symcomp_runtime.__version__
    major, minor, patch = installed.split(".")
    version = {
        "other_series": _other_series(installed),
        "same_series": f"{major}.{minor}.{int(patch) + 1}",  # a patch release only fixes bugs
    }[compiled_for]
    package = _copy(ROOT / "generated" / "gpt2_small", tmp_path / "gpt2_small")
    pinned = package / "__init__.py"
    text = pinned.read_text()
    assert text.count(f'require("{installed}", __name__)') == 1
    pinned.write_text(text.replace(f'require("{installed}"', f'require("{version}"'))
    loader = loaded_package(package)
    try:
        if compiled_for == "same_series":
            assert loader.__enter__().Model is not None
            return
        with pytest.raises(RuntimeVersionError) as info:
            loader.__enter__()
        assert version in str(info.value) and installed in str(info.value)
        assert loader.name in str(info.value)  # the package that refused
    finally:
        loader.__exit__(None, None, None)
