"""Import a generated package from a folder, under a private module name.

The package's folder need not be importable by its name (a temporary folder, a cache entry):
its modules live in ``sys.modules`` under the private name while it is loaded.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import sys
from pathlib import Path
from types import ModuleType

_counter = itertools.count()


class loaded_package:
    """Import the generated package in ``folder`` under a private module name (``name``, or a
    fresh one); its modules are forgotten on exit."""

    def __init__(self, folder: Path, name: str | None = None):
        self.folder = Path(folder)
        self.name = name or f"_symcomp_package_{next(_counter)}"

    def __enter__(self) -> ModuleType:
        init = self.folder / "__init__.py"
        spec = importlib.util.spec_from_file_location(
            self.name, init, submodule_search_locations=[str(self.folder)]
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[self.name] = module
        spec.loader.exec_module(module)
        return module

    def __exit__(self, *exc: object) -> None:
        for name in [m for m in sys.modules if m == self.name or m.startswith(self.name + ".")]:
            del sys.modules[name]
