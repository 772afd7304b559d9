"""Symmetry derivation: the linear system of ``docs/derivation.md``."""

from symcomp.symmetry.linear_system import (
    RULES,
    DerivationResult,
    derivation_inputs,
    derive_count,
)

__all__ = ["RULES", "DerivationResult", "derivation_inputs", "derive_count"]
