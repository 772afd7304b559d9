"""The root of symcomp's error hierarchy.

The runtime needs only torch, so the base class lives here and ``symcomp.errors`` builds on it:
every error symcomp or a generated package raises on purpose is a :class:`SymcompError`.
"""

from __future__ import annotations


class SymcompError(Exception):
    """Base class of every error symcomp and its generated packages raise on purpose."""

    exit_code = 2


class RuntimeVersionError(SymcompError, ImportError):
    """A generated package met a runtime of another series than the one it was compiled for."""


class DegenerateError(SymcompError):
    """A parameter at which the gauge-fixing chart is not defined: a rank-deficient head block,
    a zero gain, a vector orthogonal to the direction a step divides by."""
