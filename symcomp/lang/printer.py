"""The printer base class: one ``_print_<NodeClass>`` method per node class, as in SymPy.

A target (spec text, SymPy, torch source, torch tensors, shapes, ...) is a :class:`Printer`
subclass. :meth:`Printer.doprint` dispatches on the node's class name, walking the class's MRO,
so a subclass overrides only the constructs it prints differently. Options live in one dict,
``settings``, checked against the class's ``_default_settings``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from symcomp.lang.nodes import Expr


class Printer:
    """Walks an expression tree, calling ``_print_<NodeClass>(node)`` for each node it prints."""

    _default_settings: ClassVar[dict[str, Any]] = {}

    def __init__(self, settings: Mapping[str, Any] | None = None):
        settings = dict(settings or {})
        unknown = sorted(set(settings) - set(self._default_settings))
        if unknown:
            raise TypeError(f"{type(self).__name__}: unknown settings {', '.join(unknown)}")
        self._settings = {**self._default_settings, **settings}

    def doprint(self, node: Expr) -> Any:
        """``node`` printed for this target."""
        return self._print(node)

    def _print(self, node: Expr) -> Any:
        for cls in type(node).__mro__:
            method = getattr(self, f"_print_{cls.__name__}", None)
            if method is not None:
                return method(node)
        name = type(node).__name__
        raise NotImplementedError(
            f"{type(self).__name__} cannot print a {name} node: it defines no _print_{name}"
        )
