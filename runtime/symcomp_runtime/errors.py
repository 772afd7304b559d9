"""The root of symcomp's error hierarchy.

The runtime needs only torch, so the base class lives here and ``symcomp.errors`` builds on it:
every error symcomp or a generated package raises on purpose is a :class:`SymcompError`.
"""

from __future__ import annotations


class SymcompError(Exception):
    """Base class of every error symcomp and its generated packages raise on purpose.

    ``where`` says where the problem is (a file location, a key path, a tensor's name) and
    ``hint`` what is accepted or what to do; both are optional and, when given, part of the
    message: ``f"{where}: {message}; {hint}"``. ``exit_code`` is the status the command line
    exits with when the error reaches it.
    """

    exit_code = 2

    def __init__(self, message: str = "", *, where: object = None, hint: str | None = None):
        self.where = where
        self.hint = hint
        text = message if where is None else f"{where}: {message}"
        super().__init__(text if hint is None else f"{text}; {hint}")


class RuntimeVersionError(SymcompError, ImportError):
    """A generated package met a runtime of another series than the one it was compiled for."""


class DegenerateError(SymcompError):
    """A point where a gauge cannot be fixed: the anchor a step normalizes is rank-deficient (a
    zero column, a zero rotated pair, a vector orthogonal to the rank-one direction), so the
    chart is not defined there. Generic points never are; random weights are generic."""


class ActionError(SymcompError):
    """A group action that cannot be applied: its value has another shape than the parameter
    block it replaces, or it names a parameter the model does not have."""
