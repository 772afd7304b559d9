"""Stage 2: the graph IR. ``build_graph(spec) -> Graph``; ``interpret`` runs it in float64.

Building and inspecting a graph needs no torch; ``interpret`` imports it on first use, so that
``check`` and ``analyze`` stay fast.
"""

from typing import Any

from symcomp.ir.graph import Axis, Graph, Input, OpNode, ParamNode, ValueNode, build_graph
from symcomp.ir.ops import OP_KINDS

__all__ = [
    "OP_KINDS",
    "Axis",
    "Graph",
    "Input",
    "OpNode",
    "ParamNode",
    "ValueNode",
    "build_graph",
    "interpret",
]


def __getattr__(name: str) -> Any:
    if name == "interpret":
        from symcomp.ir.interpreter import interpret

        return interpret
    raise AttributeError(f"module 'symcomp.ir' has no attribute {name!r}")
