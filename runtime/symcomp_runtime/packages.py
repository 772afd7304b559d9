"""Find the generated package a model comes from (the optimizer and sharpness take a model)."""

from __future__ import annotations

import importlib
import sys
from types import ModuleType


def package_module(model: object, submodule: str) -> ModuleType:
    """The module ``submodule`` of the generated package whose ``Model`` ``model`` is; a
    TypeError for a model symcomp did not generate, or a package without that module."""
    module = type(model).__module__
    package = module.rsplit(".", 1)[0]
    generated = module.endswith(".model") and hasattr(sys.modules.get(package), "GROUPS")
    if not generated:
        raise TypeError(
            f"{type(model).__name__} does not come from a package symcomp compiled "
            "(expected <package>.model.Model)"
        )
    try:
        return importlib.import_module(f"{package}.{submodule}")
    except ModuleNotFoundError:
        raise TypeError(
            f"the package {package} has no {submodule}.py"
            + (": symcomp derived no chart for its groups" if submodule == "quotient" else "")
        ) from None
