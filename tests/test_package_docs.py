"""The example in each generated package's docstring runs as written (it once built a model at
sizes the structure does not allow, and failed with DegenerateError)."""

from __future__ import annotations

import importlib
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = sorted(p.name for p in (ROOT / "generated").iterdir() if (p / "__init__.py").is_file())


@pytest.mark.parametrize("name", PACKAGES)
def test_the_docstring_example_runs(name):
    package = importlib.import_module(f"generated.{name}")
    doc = package.__doc__
    start = doc.index("    from <this package>")
    example = textwrap.dedent(doc[start:]).replace("<this package>", f"generated.{name}")
    namespace: dict = {"torch": torch}
    exec(compile(example, f"{name}/__init__.py docstring", "exec"), namespace)
    model = namespace["model"]
    assert isinstance(model, package.Model)
    if "reduced" in namespace:  # the reduced model reproduces the standard one
        ids = torch.randint(0, model.sizes.vocab, (1, model.sizes.positions))
        torch.testing.assert_close(namespace["reduced"].log_probs(ids), model.log_probs(ids))


@pytest.mark.parametrize("name", PACKAGES)
def test_tiny_instances_need_no_sizes(name):
    """``Model.tiny()`` and ``ReducedModel.tiny()``: the same structure at small sizes, at the
    same generic point, with the same log-probs from fewer parameters."""
    package = importlib.import_module(f"generated.{name}")
    model = package.Model.tiny()
    assert model.sizes.width == package.model.TINY["width"]
    if not hasattr(package, "ReducedModel"):
        return
    reduced = package.ReducedModel.tiny()
    ids = torch.randint(0, model.sizes.vocab, (2, model.sizes.positions))
    torch.testing.assert_close(reduced.log_probs(ids), model.log_probs(ids))
    assert sum(p.numel() for p in reduced.parameters()) < sum(p.numel() for p in model.parameters())
