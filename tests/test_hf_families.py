"""Every family of :mod:`hf_families` imports, reduces and counts exactly against transformers."""

from __future__ import annotations

import pytest

try:
    import hf_families
except ImportError:  # tests/ became a package
    from tests import hf_families

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _case(name: str):
    gap = hf_families.KNOWN_GAPS.get(name)
    return pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=gap)) if gap else name


@pytest.mark.parametrize("name", [_case(n) for n in sorted(hf_families.CONFIGS)])
def test_family_reduces_and_counts_exactly(name, run_cli, tmp_path):
    hf_families.check_family(name, run_cli, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", [_case(n) for n in sorted(hf_families.CONFIGS)])
def test_family_wider(name, run_cli, tmp_path):
    """The slow matrix: a second generic config of every family (twice the width and heads),
    which the closed form and the reduced model must also get exactly right."""
    hf_families.check_family(name, run_cli, tmp_path, hf_families.wider)
